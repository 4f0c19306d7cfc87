import shutil
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from lungseg.errors import ContourError, InputError
from lungseg.imaging.io import fill_polygons_even_odd, load_ct, load_label, load_rtstruct, match_roi

from dicom_factory import MR_STORAGE, SC_STORAGE, write_rtstruct, write_series


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------- real data


@pytest.mark.parametrize("case,n_slices,manufacturer", [("LUNG1-001", 134, "SIEMENS"), ("LUNG1-002", 111, "CMS"), ("LUNG1-003", 107, "CMS")])
def test_zip_picks_ct_and_its_rtstruct(load_case, case, n_slices, manufacturer):
    ct, rs_path = load_case(case)
    assert ct.volume.shape == (n_slices, 512, 512)
    assert ct.volume.spacing[2] == pytest.approx(3.0)
    assert ct.volume.spacing[0] == pytest.approx(0.977, abs=1e-3)
    assert ct.info["manufacturer"].upper().startswith(manufacturer)
    assert sorted(s.modality for s in ct.other_series) == ["RTDOSE", "RTPLAN", "RTSTRUCT"]
    assert [s.references_ct for s in ct.structure_sets] == [True]
    assert {"GTV-1", "Lung L", "Lung R"} <= set(ct.roi_names())
    # slices go inferior → superior, HU of air outside the body near -1000
    z = ct.volume.slice_z_mm()
    assert np.all(np.diff(z) > 0)
    assert np.median(ct.volume.array[:, 5:20, 5:20]) < -900
    # never a patient identifier in what the app shows
    shown = repr(ct.info) + repr(ct.warnings)  # the label is the file name the user chose
    first = ct.dicom.headers[0]
    for tag in ("PatientName", "PatientID", "PatientBirthDate"):
        value = str(first.get(tag, "")).strip()
        if len(value) > 3:
            assert value not in shown


def test_rtstruct_matches_reference_rasterisation(load_case, data_dir):
    ref_dir = data_dir / "reference"
    for ref in sorted(ref_dir.glob("LUNG1-*.nii.gz")):
        case, roi = ref.name[: len("LUNG1-001")], ref.name[len("LUNG1-001_") : -len(".nii.gz")]
        ct, rs = load_case(case)
        mask = load_rtstruct(rs, ct, roi.replace("_", " "))
        on_source = sitk.GetArrayFromImage(ct.mask_to_source(mask)) > 0
        reference_image = sitk.ReadImage(str(ref))
        reference = sitk.GetArrayFromImage(reference_image) > 0
        assert on_source.shape == reference.shape
        assert np.allclose(ct.source_grid.origin, reference_image.GetOrigin(), atol=1e-3)
        assert dice(on_source, reference) >= 0.98, ref.name


def test_rtstruct_volumes_match_published_figures(load_case):
    ct, rs = load_case("LUNG1-003")
    ml = ct.volume.voxel_volume_ml
    for roi, expected in (("GTV-1", 34.7), ("GTV-2", 38.6), ("GTV-3", 8.7), ("Lung L", 1731), ("Lung R", 2182)):
        assert load_rtstruct(rs, ct, roi).sum() * ml == pytest.approx(expected, rel=0.01)


def test_roi_name_not_found_lists_names(load_case):
    ct, rs = load_case("LUNG1-001")
    with pytest.raises(ContourError, match="not found.*GTV-1"):
        load_rtstruct(rs, ct, "Lung-Left")
    # tolerant matching of spelling variants, and a glob for several GTVs
    assert match_roi(["Lung L", "Lung R"], "lung_l") == ["Lung L"]
    assert match_roi(["GTV-1", "GTV-2", "PTV-1"], "GTV*") == ["GTV-1", "GTV-2"]


def test_unzipped_folder_equals_zip(load_case, data_dir, tmp_path):
    ct_zip, _ = load_case("LUNG1-003")
    with zipfile.ZipFile(data_dir / "LUNG1-003.zip") as zf:
        zf.extractall(tmp_path)
    ct_dir = load_ct(tmp_path / "LUNG1-003")
    assert np.array_equal(ct_dir.volume.array, ct_zip.volume.array)
    assert ct_dir.volume.origin == ct_zip.volume.origin


def test_ras_nifti_is_reoriented_and_written_back(data_dir):
    path = data_dir / "totalsegmentator-example" / "example_ct.nii.gz"
    ct = load_ct(path)
    assert ct.volume.is_canonical
    original = sitk.ReadImage(str(path))
    assert ct.source_grid.direction == original.GetDirection()
    # lobes 10/11 are the left lung: +x in LPS, i.e. higher column index on the canonical grid
    seg_ct = load_ct(data_dir / "totalsegmentator-example" / "example_ct_sm.nii.gz")
    seg = data_dir / "totalsegmentator-example" / "example_seg.nii.gz"
    left = load_label(seg, seg_ct, 10) | load_label(seg, seg_ct, 11)
    right = load_label(seg, seg_ct, 13) | load_label(seg, seg_ct, 14)
    assert np.argwhere(left)[:, 2].mean() > np.argwhere(right)[:, 2].mean()
    # the same physical point reads the same HU before and after reorientation
    idx = (60, 40, 100)  # x, y, z in the stored file
    point = original.TransformIndexToPhysicalPoint(idx)
    zyx = np.rint(ct.volume.physical_to_index([point])[0]).astype(int)
    assert ct.volume.array[tuple(zyx)] == original[idx]
    # a canonical mask goes back onto the stored grid exactly
    back = ct.mask_to_source(ct.volume.array > 0)
    assert back.GetDirection() == original.GetDirection() and back.GetOrigin() == original.GetOrigin()
    assert np.array_equal(sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(original) > 0)


def test_dicom_partial_body_series_without_uids(data_dir):
    ct = load_ct(data_dir / "totalsegmentator-example" / "example_ct_dicom")
    assert ct.volume.shape[0] == 20


# ---------------------------------------------------------------- synthetic DICOM: good and bad input


def test_synthetic_series_geometry_and_left_right(tmp_path):
    info = write_series(tmp_path / "ct", [10, 12, 14, 16])
    ct = load_ct(tmp_path / "ct")
    assert ct.volume.shape == (4, 32, 32)
    assert ct.volume.spacing == (1.0, 1.0, 2.0)
    # the mark at columns 20–27 (+x, patient left) stays there; slice order follows z
    assert ct.volume.array[0, 5, 24] == 100 and ct.volume.array[3, 5, 24] == 103
    assert ct.volume.array[0, 5, 5] == -1000
    assert ct.dicom.series_uid == info["series_uid"]


def test_reversed_file_order_still_sorted(tmp_path):
    write_series(tmp_path / "ct", [16, 14, 12, 10])
    ct = load_ct(tmp_path / "ct")
    assert list(ct.volume.slice_z_mm()) == [10, 12, 14, 16]
    assert ct.volume.array[0, 5, 24] == 103  # the file written first now lies at the top


def test_feet_first_flipped_axes_are_canonicalised(tmp_path):
    # rows running right→left and columns posterior→anterior: the same anatomy, stored flipped
    write_series(tmp_path / "ct", [0, 2, 4], iop=(-1, 0, 0, 0, -1, 0))
    ct = load_ct(tmp_path / "ct")
    assert ct.volume.is_canonical
    # the mark was at stored columns 20–27, which now run toward patient right: low canonical x
    assert ct.volume.array[0, 32 - 6, 32 - 24] == 100


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(z_positions=[0]), "single slice"),
        (dict(z_positions=[0, 2, 4, 8, 10]), "missing slices.*gap of 4.00 mm"),
        (dict(z_positions=[0, 2, 2, 4]), "duplicate slice position"),
        (dict(z_positions=[0, 2, 5, 6.5, 10]), "non-uniform slice spacing"),
        (dict(z_positions=[0, 2, 4], tilt=15.0), "gantry tilt"),
        (dict(z_positions=[0, 2, 4], xy_shift=lambda i: (0.0, 0.5 * i)), "gantry tilt"),
        (dict(z_positions=[0, 2, 4], iops=[(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 1, 0), (0, 1, 0, 1, 0, 0)]), "mixed orientations"),
        (dict(z_positions=[0, 2, 4], modality="MR", sop_class=MR_STORAGE), "not a CT.*MR"),
        (dict(z_positions=[0, 2, 4], modality="OT", sop_class=SC_STORAGE), "not a CT.*secondary capture"),
        (dict(z_positions=[0, 2, 4], modality="DX"), "not a CT.*X-ray"),
    ],
)
def test_bad_series_refused_with_reason(tmp_path, kwargs, message):
    z = kwargs.pop("z_positions")
    write_series(tmp_path / "ct", z, **kwargs)
    with pytest.raises(InputError, match=message) as info:
        load_ct(tmp_path / "ct")
    assert "\n" not in str(info.value)


def test_truncated_slice_refused(tmp_path):
    info = write_series(tmp_path / "ct", [0, 2, 4, 6])
    f = info["files"][2]
    f.write_bytes(f.read_bytes()[:-900])
    with pytest.raises(InputError, match="truncated or unreadable"):
        load_ct(tmp_path / "ct")


def test_non_dicom_files_skipped_and_folder_without_dicom_refused(tmp_path):
    write_series(tmp_path / "ct", [0, 2, 4])
    (tmp_path / "ct" / "notes.txt").write_text("not dicom")
    ct = load_ct(tmp_path / "ct")
    assert ct.volume.shape[0] == 3 and any("skipped" in w for w in ct.warnings)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"garbage" * 100)
    with pytest.raises(InputError, match="no DICOM files"):
        load_ct(tmp_path / "junk")


def test_several_series_pick_largest_and_by_uid(tmp_path):
    a = write_series(tmp_path / "mix" / "a", [0, 2, 4])
    b = write_series(tmp_path / "mix" / "b", [0, 2, 4, 6, 8])
    ct = load_ct(tmp_path / "mix")
    assert ct.dicom.series_uid == b["series_uid"]
    assert [s.series_uid for s in ct.other_series] == [a["series_uid"]]
    assert load_ct(tmp_path / "mix", series_uid=a["series_uid"]).volume.shape[0] == 3
    with pytest.raises(InputError, match="series 1.2.3 not found"):
        load_ct(tmp_path / "mix", series_uid="1.2.3")


def test_zip_safety(tmp_path):
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(InputError, match="empty"):
        load_ct(empty)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/owned.dcm", b"x")
    with pytest.raises(InputError, match="unsafe path"):
        load_ct(evil)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        load_ct(bad)


def test_zip_of_series_loads(tmp_path):
    write_series(tmp_path / "ct" / "deep" / "er", [0, 2, 4])
    shutil.make_archive(str(tmp_path / "case"), "zip", tmp_path / "ct")
    ct = load_ct(tmp_path / "case.zip")
    assert ct.volume.shape[0] == 3 and ct.label == "case"


def test_unknown_and_bad_image_files(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown format"):
        load_ct(tmp_path / "x.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(InputError, match="not a readable image"):
        load_ct(tmp_path / "broken.nii.gz")
    mr = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 800, (4, 16, 16)).astype(np.float32))
    sitk.WriteImage(mr, str(tmp_path / "mr.nii.gz"))
    with pytest.raises(InputError, match="Hounsfield"):
        load_ct(tmp_path / "mr.nii.gz")
    flat = sitk.GetImageFromArray(np.zeros((16, 16), np.int16))
    sitk.WriteImage(flat, str(tmp_path / "slice.nii.gz"))
    with pytest.raises(InputError, match="single slice"):
        load_ct(tmp_path / "slice.nii.gz")


def test_rtstruct_other_frame_of_reference_refused(tmp_path):
    info = write_series(tmp_path / "ct", [0, 2, 4])
    ct = load_ct(tmp_path / "ct")
    square = np.array([[-5, -5, 2], [5, -5, 2], [5, 5, 2], [-5, 5, 2]], float)
    rs = write_rtstruct(tmp_path / "rs.dcm", "1.2.3.4.5", {"GTV": [square]})
    with pytest.raises(ContourError, match="another frame of reference"):
        load_rtstruct(rs, ct, "GTV")
    rs = write_rtstruct(tmp_path / "rs2.dcm", info["for_uid"], {"GTV": [square + [0, 0, 100]]})
    with pytest.raises(ContourError, match="outside the CT"):
        load_rtstruct(rs, ct, "GTV")


def test_rtstruct_even_odd_hole_and_z_matching(tmp_path):
    info = write_series(tmp_path / "ct", [0, 2, 4])
    ct = load_ct(tmp_path / "ct")
    outer = np.array([[-10, -10, 2], [10, -10, 2], [10, 10, 2], [-10, 10, 2]], float)
    inner = np.array([[-4, -4, 2], [4, -4, 2], [4, 4, 2], [-4, 4, 2]], float)
    rs = write_rtstruct(tmp_path / "rs.dcm", info["for_uid"], {"Ring": [outer, inner]})
    mask = load_rtstruct(rs, ct, "Ring")
    assert mask[1].sum() == 20 * 20 - 8 * 8 and not mask[0].any() and not mask[2].any()
    assert not mask[1, 16, 16] and mask[1, 16, 16 - 8]


def test_even_odd_fill_by_hand():
    square = np.array([[1.0, 1.0], [1.0, 4.0], [4.0, 4.0], [4.0, 1.0]])  # (y, x)
    m = fill_polygons_even_odd([square], (6, 6))
    # pixel centres strictly right of the left edge and up to the right edge, rows 1..3
    assert m.sum() == 9 and m[1:4, 2:5].all()


def test_label_file_geometry_checks(tmp_path, data_dir):
    ct = load_ct(data_dir / "ibsi-ct-phantom" / "nifti" / "image" / "phantom.nii.gz")
    mask = load_label(data_dir / "ibsi-ct-phantom" / "nifti" / "mask" / "mask.nii.gz", ct)
    assert mask.sum() * ct.volume.voxel_volume_ml == pytest.approx(358.6, rel=0.01)
    far = sitk.Image(8, 8, 8, sitk.sitkUInt8)
    far.SetOrigin((5000.0, 5000.0, 5000.0))
    sitk.WriteImage(far, str(tmp_path / "far.nii.gz"))
    with pytest.raises(ContourError, match="does not overlap"):
        load_label(tmp_path / "far.nii.gz", ct)


# ---------------------------------------------------------------- DICOM SEG


@pytest.fixture(scope="module")
def small_dicom_ct(tmp_path_factory):
    """A small chest phantom written as a DICOM CT series, with its source files read back."""
    import pydicom

    from lungseg.export import write_ct_series
    from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct

    ph = synthetic_chest_ct(PhantomSpec(shape_zyx=(8, 48, 48), spacing_zyx=(5.0, 7.0, 7.0), noise_hu=5.0))
    files = write_ct_series(ph.ct, tmp_path_factory.mktemp("seg-ct"))
    return load_ct(files[0].parent), [pydicom.dcmread(f) for f in files]


def _seg(images, pixels, seg_type, labels=("GTV",)):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    segments = [hd.seg.SegmentDescription(i, name, codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                                          hd.seg.SegmentAlgorithmTypeValues.MANUAL) for i, name in enumerate(labels, 1)]
    return hd.seg.Segmentation(images, pixels, seg_type, segments, hd.UID(), 1, hd.UID(), 1, "test", "test", "1", "0")


def test_fractional_seg_below_the_threshold_is_outside(small_dicom_ct, tmp_path):
    import highdicom as hd
    import pydicom

    from lungseg.imaging.io import SEG_FRACTIONAL_THRESHOLD, load_seg

    ct, images = small_dicom_ct
    prob = np.zeros(ct.volume.shape, np.float32)  # the series is on the canonical grid: frame k is slice k
    prob[2:5, 10:20, 10:20] = 0.9
    prob[3, 12:16, 12:16] = 0.55  # just above the threshold: inside
    prob[2:6, 30:40, 25:35] = 0.3  # a low-probability halo elsewhere: outside
    prob[6, 30:34, 25:29] = 0.45  # just below: outside
    path = tmp_path / "fractional.seg.dcm"
    _seg(images, prob, hd.seg.SegmentationTypeValues.FRACTIONAL).save_as(path)
    assert SEG_FRACTIONAL_THRESHOLD == 0.5
    mask = load_seg(path, ct)
    assert np.array_equal(mask, prob >= 0.5)
    stored = pydicom.dcmread(path).pixel_array
    assert (stored > 0).sum() > mask.sum()  # the file does hold the sub-threshold voxels "> 0 is inside" would take


def test_binary_seg_segments_by_name_and_number_and_refusals(small_dicom_ct, tmp_path):
    import highdicom as hd
    import pydicom

    from lungseg.imaging.io import load_seg

    ct, images = small_dicom_ct
    a = np.zeros(ct.volume.shape + (2,), bool)
    a[1:3, 5:15, 5:15, 0] = True  # segment 1 on slices 1-2
    a[6, 20:30, 20:30, 1] = True  # segment 2 on one slice only (empty frames omitted)
    path = tmp_path / "binary.seg.dcm"
    _seg(images, a, hd.seg.SegmentationTypeValues.BINARY, ("GTV-1", "Lung L")).save_as(path)
    assert np.array_equal(load_seg(path, ct, "gtv 1"), a[..., 0])
    assert np.array_equal(load_seg(path, ct, 2), a[..., 1])
    assert np.array_equal(load_seg(path, ct), a.any(axis=-1))
    with pytest.raises(ContourError, match="not found; the SEG holds: GTV-1, Lung L"):
        load_seg(path, ct, "Heart")
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    with pytest.raises(ContourError, match="another frame of reference"):
        load_seg(ds, ct)
    ds = pydicom.dcmread(path)
    for fg in ds.PerFrameFunctionalGroupsSequence:  # the whole SEG moved 100 mm up: another scan
        pos = fg.PlanePositionSequence[0].ImagePositionPatient
        fg.PlanePositionSequence[0].ImagePositionPatient = [pos[0], pos[1], float(pos[2]) + 100]
    with pytest.raises(ContourError, match="outside the CT"):
        load_seg(ds, ct)
