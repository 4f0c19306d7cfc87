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
    # the decision is on the structure GTV-2, by its name: opened with GTV-1 as the manual contour, the case
    # still exports GTV-2 (and not GTV-1, which nobody accepted)
    assert main(["export", str(ct), "--db", str(db), "--accepted", "--roi", "GTV-1", "--format", "nifti",
                 "--out", str(d / "x.nii.gz")]) == 0
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(d / "x.nii.gz"))) > 0, back)


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


def _edited_lesion_1(ct_path, segmented, out):
    """EDITED.nii.gz as another tool would write it: the automatic lesion 1 with a 10 mm blob added on three
    slices and its first slice erased, on the input's own grid."""
    from lungseg.imaging.io import load_ct

    loaded = load_ct(ct_path)
    labels, _ = ndi.label(segmented, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    lesion = labels == (np.argmax(sizes) + 1)  # on the input's grid, as segment wrote it
    edited = lesion.copy()
    zs = np.flatnonzero(lesion.any(axis=(1, 2)))
    edited[zs[0]] = False
    k = int(zs[len(zs) // 2])
    y, x = (int(round(v)) for v in np.argwhere(lesion[k]).mean(axis=0))
    yy, xx = np.ogrid[:lesion.shape[1], :lesion.shape[2]]
    sx, sy = loaded.volume.spacing[0], loaded.volume.spacing[1]
    for dz in (-1, 0, 1):
        edited[k + dz] |= ((yy - y) * sy) ** 2 + ((xx - x - 25) * sx) ** 2 <= 5.0 ** 2
    image = sitk.GetImageFromArray(edited.astype(np.uint8))
    image.CopyInformation(sitk.ReadImage(str(out.parent / "segment.nii.gz")))
    sitk.WriteImage(image, str(out))
    assert not np.array_equal(edited, lesion)
    return loaded, edited


@pytest.mark.parametrize("accept", ["automatic", "manual"])
def test_edited_contour_is_a_new_semiautomatic_version_exported_under_its_name(lung1_003, accept, capsys):
    """Issue 22 item 7: ``review --accept automatic|manual --lesions 1 --edited EDITED --name GTVp`` then
    ``export --accepted``: one ROI / one segment GTVp, SEMIAUTOMATIC, equal to EDITED voxel for voxel, and
    dciodvfy finds no error in any file written."""
    import pydicom

    from lungseg.imaging.io import load_rtstruct, load_seg
    from lungseg.study import StudyStore
    from tests.test_dciodvfy import DCIODVFY, assert_valid

    ct, d, segmented = lung1_003
    edited_path = d / f"EDITED-{accept}.nii.gz"
    loaded, edited_source_grid = _edited_lesion_1(ct, segmented, edited_path)
    db = d / f"edited-{accept}.db"
    argv = ["review", str(ct), "--db", str(db), "--accept", accept, "--edited", str(edited_path), "--name", "GTVp"]
    if accept == "automatic":
        argv[6:6] = ["--lesions", "1"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "accepted as GTVp version 2 (SEMIAUTOMATIC" in said
    from lungseg.case import open_case, source_for_input

    case = open_case(source_for_input(str(ct)))
    with StudyStore(db) as store:
        versions = store.structure_versions(case.key, "GTVp")
    assert [(v["version"], v["parent"], v["provenance"]) for v in versions] == \
        [(1, None, "AUTOMATIC" if accept == "automatic" else "MANUAL"), (2, 1, "SEMIAUTOMATIC")]
    assert versions[1]["origin"] == f"imported {edited_path.name}"

    files = {}
    for fmt in ("rtstruct", "seg", "nifti"):
        out = d / f"accepted-{accept}.{fmt}{'.nii.gz' if fmt == 'nifti' else '.dcm'}"
        assert main(["export", str(ct), "--db", str(db), "--accepted", "--format", fmt, "--out", str(out)]) == 0
        files[fmt] = out
    rs = pydicom.dcmread(files["rtstruct"])
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["GTVp"]
    assert rs.StructureSetROISequence[0].ROIGenerationAlgorithm == "SEMIAUTOMATIC"
    assert "lungseg" in rs.StructureSetROISequence[0].ROIGenerationDescription
    seg = pydicom.dcmread(files["seg"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["GTVp"]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg.SegmentSequence[0].SegmentAlgorithmName

    edited = sitk.GetArrayFromImage(sitk.ReadImage(str(edited_path))) > 0
    back_rs = sitk.GetArrayFromImage(loaded.mask_to_source(load_rtstruct(files["rtstruct"], loaded, "GTVp"))) > 0
    back_seg = sitk.GetArrayFromImage(loaded.mask_to_source(load_seg(files["seg"], loaded, "GTVp"))) > 0
    back_nii = sitk.GetArrayFromImage(sitk.ReadImage(str(files["nifti"]))) > 0
    assert np.array_equal(back_rs, edited) and np.array_equal(back_seg, edited) and np.array_equal(back_nii, edited)
    assert np.array_equal(edited, edited_source_grid)
    if DCIODVFY:
        assert_valid(files["rtstruct"], files["seg"])

    # the editing effort of that import: the change from version 1 (the lesion as it was) to version 2
    csv_out = d / f"effort-{accept}.csv"
    assert main(["effort", str(ct), "--db", str(db), "--csv", str(csv_out)]) == 0
    header, row = csv_out.read_text().splitlines()
    values = dict(zip(header.split(","), row.split(",")))
    assert (values["user"], values["name"], values["from_version"], values["to_version"]) == ("local user", "GTVp",
                                                                                             "1", "2")
    start = case.automatic.lesion_mask([1]) if accept == "automatic" else case.manual.mask
    end = load_seg(files["seg"], loaded, "GTVp")
    voxel_ml = loaded.volume.voxel_volume_ml
    assert float(values["added_ml"]) == pytest.approx((end & ~start).sum() * voxel_ml, abs=1e-3)
    assert float(values["removed_ml"]) == pytest.approx((start & ~end).sum() * voxel_ml, abs=1e-3)
    assert 0 < float(values["dice"]) < 1


def test_name_names_an_unedited_accepted_lesion(lung1_003, capsys):
    import pydicom

    ct, d, segmented = lung1_003
    db = d / "named.db"
    assert main(["review", str(ct), "--db", str(db), "--accept", "automatic", "--lesions", "1", "--name", "GTVp"]) == 0
    assert "accepted as GTVp version 1 (AUTOMATIC, automatic lesion 1)" in capsys.readouterr().out
    out = d / "named.dcm"
    assert main(["export", str(ct), "--db", str(db), "--accepted", "--format", "rtstruct", "--out", str(out)]) == 0
    (roi,) = pydicom.dcmread(out).StructureSetROISequence
    assert (roi.ROIName, roi.ROIGenerationAlgorithm) == ("GTVp", "AUTOMATIC")
    assert roi.ROIGenerationDescription.startswith("lungseg U-Net ")
    # a second review under the same name with another contour is refused in one line
    assert main(["review", str(ct), "--db", str(db), "--accept", "manual", "--name", "GTVp"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["review", str(ct), "--db", str(db), "--accept", "automatic", "--edited", str(out)]) == 2
    assert "--edited needs --name" in capsys.readouterr().err
