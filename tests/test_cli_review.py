"""The scriptable review: ``review`` then ``export --accepted``, on a real case with three GTVs."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from lungseg.cli import main


@pytest.fixture(scope="module")
def lung1_003(data_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("review-cli")
    seg_out = d / "segment.nii.gz"
    assert main(["segment", str(data_dir / "LUNG1-003.zip"), "--out", str(seg_out)]) == 0
    return data_dir / "LUNG1-003.zip", d, sitk.GetArrayFromImage(sitk.ReadImage(str(seg_out))) > 0


def test_accepted_lesion_1_exports_equal_to_segments_largest_lesion(lung1_003, capsys):
    ct, d, segmented = lung1_003
    db = d / "reviews.db"
    assert main(["review", str(ct), "--db", str(db), "--accept", "automatic", "--lesions", "1",
                 "--user", "dr test", "--comment", "primary"]) == 0
    said = capsys.readouterr().out
    assert "automatic lesion(s) 1 accepted" in said and "manual rejected" in said and "dr test" in said
    out = d / "accepted.nii.gz"
    assert main(["export", str(ct), "--db", str(db), "--accepted", "--format", "nifti", "--out", str(out)]) == 0
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    labels, n = ndi.label(segmented, structure=np.ones((3, 3, 3), bool))
    assert n >= 1
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (np.argmax(sizes) + 1)
    assert np.array_equal(exported, largest)  # voxel for voxel, on the input's grid


def test_review_of_manual_roi_and_rtstruct_export(lung1_003, data_dir):
    ct, d, _ = lung1_003
    db = d / "manual.db"
    assert main(["review", str(ct), "--db", str(db), "--accept", "manual", "--roi", "GTV-2"]) == 0
    out = d / "accepted-rt.dcm"
    assert main(["export", str(ct), "--db", str(db), "--accepted", "--roi", "GTV-2", "--format", "rtstruct",
                 "--out", str(out)]) == 0
    from lungseg.imaging.io import load_ct, load_rtstruct

    loaded = load_ct(ct)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-003_GTV-2.nii.gz"))) > 0
    mine = load_rtstruct(out, loaded, "GTV-2")
    back = sitk.GetArrayFromImage(loaded.mask_to_source(mine)) > 0
    dice = 2 * (back & ref).sum() / (back.sum() + ref.sum())
    assert dice > 0.98
    # a review of GTV-2 says nothing about GTV-1: exporting with GTV-1 finds no review
    assert main(["export", str(ct), "--db", str(db), "--accepted", "--roi", "GTV-1", "--format", "nifti",
                 "--out", str(d / "x.nii.gz")]) == 2


@pytest.mark.parametrize("argv, words", [
    (["--accept", "both"], "expected automatic, manual"),
    (["--accept", "manual", "--lesions", "1"], "accept automatic with them"),
    (["--accept", "automatic", "--lesions", "99"], "no lesion 99"),
    (["--accept", "automatic", "--lesions", "x"], "expected lesion numbers"),
])
def test_bad_review_is_a_one_line_error(lung1_003, capsys, argv, words):
    ct, d, _ = lung1_003
    assert main(["review", str(ct), "--db", str(d / "bad.db")] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err
