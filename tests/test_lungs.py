import numpy as np
import pytest
import SimpleITK as sitk

from lungseg.imaging.harmonise import MODEL_WINDOW, harmonise
from lungseg.imaging.io import load_ct, load_rtstruct
from lungseg.lungs import LungParams, isolate, mirror_about_axis
from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def annotated_slices(*masks):
    """Slices inside each ROI's z extent where its RTSTRUCT has a contour.

    LUNG1-002's "Lung L" has no contour on five slices in the middle of the lung (29, 30, 37, 43,
    44): those slices are unannotated, not lung-free, and are left out of the comparison.
    """
    keep = np.ones(masks[0].shape[0], bool)
    for m in masks:
        zs = np.nonzero(m.any(axis=(1, 2)))[0]
        for k in range(zs[0], zs[-1] + 1):
            if not m[k].any():
                keep[k] = False
    return keep


# GTV-1 inside the lung region measures 1.000 / 0.985 / 1.000: LUNG1-002's tumour replaces the
# collapsed lateral base of the right lung, which neither lung nor its mirror image covers.
GTV_INSIDE_FLOOR = {"LUNG1-001": 0.99, "LUNG1-002": 0.98, "LUNG1-003": 0.99}


@pytest.mark.parametrize("case", ["LUNG1-001", "LUNG1-002", "LUNG1-003"])
def test_lungs_match_manual_contours(load_case, isolated_case, case):
    ct, rs = load_case(case)
    result = isolated_case(case)
    left, right = load_rtstruct(rs, ct, "Lung L"), load_rtstruct(rs, ct, "Lung R")
    keep = annotated_slices(left, right)
    assert dice(result.lungs[keep], (left | right)[keep]) >= 0.95
    # left and right never swapped: each lung agrees with its own manual contour
    assert dice(result.left_lung, left) >= 0.9 and dice(result.right_lung, right) >= 0.9
    gtv = load_rtstruct(rs, ct, "GTV-1")
    assert (gtv & result.lung_region).sum() / gtv.sum() >= GTV_INSIDE_FLOOR[case]
    # the couch is found and no lung or region voxel lies in it
    assert result.couch.sum() > 0
    assert not (result.lungs & result.couch).any() and not (result.lung_region & result.couch).any()
    assert result.skipped == {}
    # outside the region the isolated image is air; inside it equals the harmonised CT
    iso = result.isolated.array
    assert np.all(iso[~result.lung_region] == MODEL_WINDOW.air_value)
    h = harmonise(ct.volume).volume.array
    assert np.array_equal(iso[result.lung_region], h[result.lung_region])


def test_spine_axis_lies_in_the_vertebra(load_case, isolated_case):
    ct, _ = load_case("LUNG1-001")
    r = isolated_case("LUNG1-001")
    zs = np.nonzero(~np.isnan(r.spine_x))[0]
    assert len(zs) > 50
    bone_cols = []
    for k in zs[::10]:
        # the vertebral body: bone in the posterior half within 30 mm of the axis
        c = int(round(r.spine_x[k]))
        strip = ct.volume.array[k, 250:420, c - 3 : c + 4]
        bone_cols.append((strip > 200).any())
    assert np.mean(bone_cols) >= 0.9


def test_phantom_lungs_and_sides():
    p = synthetic_chest_ct(PhantomSpec(shape_zyx=(48, 192, 192), spacing_zyx=(3.0, 1.8, 1.8), seed=3))
    r = isolate(p.ct)
    assert dice(r.lungs, p.lungs) >= 0.98
    assert dice(r.left_lung, p.left_lung) >= 0.97 and dice(r.right_lung, p.right_lung) >= 0.97
    assert p.left_lung.sum() < p.right_lung.sum()  # the phantom is asymmetric on purpose
    assert (p.tumour & r.lung_region).sum() / p.tumour.sum() >= 0.99
    assert not (r.lungs & p.couch).any()
    spine_col = (0.0 - p.ct.origin[0]) / p.ct.spacing[0]
    off_mm = np.abs(r.spine_x - spine_col) * p.ct.spacing[0]
    assert np.nanmedian(off_mm) < 2.0 and np.nanmax(off_mm) < 16.0


def test_phantom_left_right_survive_a_flipped_file(tmp_path):
    p = synthetic_chest_ct(PhantomSpec(shape_zyx=(40, 160, 160), spacing_zyx=(3.0, 2.0, 2.0), seed=5))
    image = p.ct.to_sitk()
    # store it RAS-style: x and y axes reversed, data reversed to keep the anatomy in place
    flipped = sitk.Flip(image, [True, True, False])
    assert flipped.GetDirection()[0] == -1
    sitk.WriteImage(flipped, str(tmp_path / "ras.nii.gz"))
    ct = load_ct(tmp_path / "ras.nii.gz")
    assert np.array_equal(ct.volume.array, p.ct.array)
    r = isolate(ct.volume)
    assert dice(r.left_lung, p.left_lung) >= 0.97


def test_mirror_uses_spine_axis():
    m = np.zeros((1, 5, 10), bool)
    m[0, 2, 1] = True
    out = mirror_about_axis(m, np.array([4.0]))
    assert out[0, 2, 1] and out[0, 2, 7] and out.sum() == 2


def test_margin_is_in_millimetres():
    coarse = synthetic_chest_ct(PhantomSpec(shape_zyx=(40, 128, 128), spacing_zyx=(3.0, 2.5, 2.5), seed=1))
    r5 = isolate(coarse.ct, LungParams(margin_mm=5.0))
    r10 = isolate(coarse.ct, LungParams(margin_mm=10.0))
    # 5 mm more margin around the lungs grows the region by roughly perimeter × 5 mm
    extra_ml = (r10.lung_region.sum() - r5.lung_region.sum()) * coarse.ct.voxel_volume_ml
    assert extra_ml > 0


def test_cropped_and_partial_scans_say_what_was_skipped(data_dir):
    ibsi = load_ct(data_dir / "ibsi-ct-phantom" / "nifti" / "image" / "phantom.nii.gz")
    r = isolate(ibsi.volume)
    assert "spine axis" in r.skipped and "mirroring" in r.skipped and "whole thorax" in r.skipped
    ts = load_ct(data_dir / "totalsegmentator-example" / "example_ct.nii.gz")
    r = isolate(ts.volume)
    # the lung bases are found; the bowel gas below them is not taken for lung
    zs = np.nonzero(r.lungs.any(axis=(1, 2)))[0]
    assert len(zs) and zs.min() >= ts.volume.shape[0] - 20
    no_lungs = load_ct(data_dir / "totalsegmentator-example" / "example_ct_dicom")
    r = isolate(no_lungs.volume)
    assert "lungs" in r.skipped and r.lung_region.sum() == 0
