"""Export round trips: every format re-imported with lungseg's own loaders gives the mask back."""

from __future__ import annotations

import gzip

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lungseg.cli import main
from lungseg.export import (FORMATS, RTSTRUCT_STORAGE, ExportError, export_mask, export_masks, mask_contours,
                            with_dicom_series, write_ct_series)
from lungseg.imaging.io import load_ct, load_label, load_rtstruct, load_seg
from lungseg.metrics import dice
from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct
from lungseg.imaging.volume import Volume

SPEC = PhantomSpec(shape_zyx=(20, 96, 96), spacing_zyx=(5.0, 3.5, 3.5), noise_hu=5.0)


def reimport(path, ct, fmt, name):
    if fmt in ("nifti", "nrrd"):
        return load_label(path, ct)
    if fmt == "seg":
        return load_seg(path, ct, name)
    return load_rtstruct(path, ct, name)


@pytest.fixture(scope="module")
def phantom():
    return synthetic_chest_ct(SPEC)


@pytest.fixture(scope="module")
def flipped_nifti(phantom, tmp_path_factory):
    """The phantom stored on a right-anterior-superior grid (x and y axes flipped against LPS)."""
    d = tmp_path_factory.mktemp("flipped")
    image = sitk.DICOMOrient(phantom.ct.to_sitk(), "RAS")
    assert not np.allclose(image.GetDirection(), np.eye(3).ravel())
    path = d / "phantom_ras.nii.gz"
    sitk.WriteImage(image, str(path), useCompression=True)
    ct = load_ct(path)
    assert np.array_equal(ct.volume.array, phantom.ct.array)  # same canonical volume
    return ct


@pytest.fixture(scope="module")
def phantom_dicom(flipped_nifti, tmp_path_factory):
    """The flipped NIfTI written as a new DICOM CT series and reloaded."""
    return with_dicom_series(flipped_nifti, tmp_path_factory.mktemp("phantom-dicom"))


def left_centroid_x_mm(image: sitk.Image) -> float:
    """Mean patient x (LPS: + is the patient's left) of the label voxels of an image on any grid."""
    arr = sitk.GetArrayFromImage(image)
    zyx = np.argwhere(arr > 0)
    pts = [image.TransformIndexToPhysicalPoint([int(v) for v in p[::-1]]) for p in zyx[:: max(1, len(zyx) // 500)]]
    return float(np.mean([p[0] for p in pts]))


# --------------------------------------------------------------------------------------------
# NIfTI / NRRD


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
def test_label_export_on_flipped_grid_keeps_left_and_right(phantom, flipped_nifti, tmp_path, fmt):
    path = export_mask(flipped_nifti, phantom.left_lung, fmt, tmp_path, name="Lung L")
    assert path.name == ("Lung_L.nii.gz" if fmt == "nifti" else "Lung_L.nrrd")
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkUInt8
    from lungseg.imaging.volume import Grid

    assert Grid.of(image).matches(flipped_nifti.source_grid)  # on the input's own (flipped) grid
    assert left_centroid_x_mm(image) > phantom.spine_x_mm + 20  # the left lung is on the patient's left
    back = load_label(path, flipped_nifti)
    assert np.array_equal(back, phantom.left_lung)
    raw = path.read_bytes()
    if fmt == "nifti":
        assert raw[:2] == b"\x1f\x8b"  # gzip
        assert gzip.decompress(raw)  # a complete stream
    else:
        assert b"encoding: gzip" in raw[:1000]


def test_empty_mask_is_a_valid_label_image(flipped_nifti, tmp_path):
    path = export_mask(flipped_nifti, np.zeros(flipped_nifti.volume.shape, bool), "nifti", tmp_path / "empty.nii.gz")
    assert not load_label(path, flipped_nifti).any()


# --------------------------------------------------------------------------------------------
# DICOM from a non-DICOM source


def test_dicom_series_written_from_the_phantom(phantom, flipped_nifti, phantom_dicom):
    assert phantom_dicom.dicom is not None and flipped_nifti.dicom is None
    assert np.array_equal(phantom_dicom.volume.array, phantom.ct.array)
    assert phantom_dicom.volume.grid.matches(phantom.ct.grid)
    assert with_dicom_series(phantom_dicom, "unused") is phantom_dicom


@pytest.mark.parametrize("fmt", ["seg", "rtstruct"])
def test_dicom_export_of_left_lung_from_demo(phantom, phantom_dicom, tmp_path, fmt):
    path = export_mask(phantom_dicom, phantom.left_lung, fmt, tmp_path / "left.dcm", name="Lung L", source="manual")
    back = reimport(path, phantom_dicom, fmt, "Lung L")
    if fmt == "seg":
        assert np.array_equal(back, phantom.left_lung)
    else:
        assert dice(back, phantom.left_lung) >= 0.99
    # left stays left: the reimported mask's centroid lies at positive patient x of the spine
    zyx = np.argwhere(back).mean(axis=0)
    assert phantom_dicom.volume.index_to_physical(zyx)[0, 0] > phantom.spine_x_mm + 20
    ds = pydicom.dcmread(path)
    if fmt == "seg":
        seg = ds.SegmentSequence[0]
        assert seg.SegmentAlgorithmType == "MANUAL" and "SegmentationAlgorithmIdentificationSequence" not in seg
        assert seg.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # lung
    else:
        assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "MANUAL"
        assert ds.RTROIObservationsSequence[0].RTROIInterpretedType == "ORGAN"


def test_dicom_export_of_demo_tumour_all_formats(phantom, phantom_dicom, tmp_path):
    for fmt in FORMATS:
        path = export_mask(phantom_dicom, phantom.tumour, fmt, tmp_path / fmt)
        back = reimport(path, phantom_dicom, fmt, "GTV-auto")
        assert np.array_equal(back, phantom.tumour), fmt  # exact, RTSTRUCT included


def test_several_masks_in_one_object_all_formats(phantom, phantom_dicom, tmp_path):
    """One SEG with a segment per mask, one structure set with an ROI per mask, one label image 1..n."""
    masks = {"Lung L": phantom.left_lung, "Lung R": phantom.right_lung, "GTV-1": phantom.tumour}
    for fmt in FORMATS:
        path = export_masks(phantom_dicom, masks, fmt, tmp_path / fmt)
        for value, (name, mask) in enumerate(masks.items(), start=1):
            if fmt in ("nifti", "nrrd"):
                back = load_label(path, phantom_dicom, value)
            else:
                back = reimport(path, phantom_dicom, fmt, name)
            assert np.array_equal(back, mask), (fmt, name)  # exact, each mask on its own
    seg = pydicom.dcmread(tmp_path / "seg" / "Lung_L_Lung_R_GTV-1.seg.dcm")
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "Lung L"), (2, "Lung R"), (3, "GTV-1")]
    assert np.array_equal(load_seg(seg, phantom_dicom), phantom.lungs | phantom.tumour)
    rs = pydicom.dcmread(tmp_path / "rtstruct" / "Lung_L_Lung_R_GTV-1.rtstruct.dcm")
    assert [r.ROIName for r in rs.StructureSetROISequence] == list(masks)
    assert [o.RTROIInterpretedType for o in rs.RTROIObservationsSequence] == ["ORGAN", "ORGAN", "GTV"]
    assert [c.ReferencedROINumber for c in rs.ROIContourSequence] == [1, 2, 3]


def test_several_masks_with_their_own_sources(phantom, phantom_dicom, tmp_path):
    """An accepted automatic contour and an accepted manual one in one object, each marked as what it is."""
    masks = {"GTV-auto": phantom.tumour, "GTV-1": phantom.tumour}
    sources = {"GTV-auto": "automatic", "GTV-1": "manual"}
    seg = pydicom.dcmread(export_masks(phantom_dicom, masks, "seg", tmp_path / "s.dcm", sources=sources),
                          stop_before_pixels=True)
    assert [s.SegmentAlgorithmType for s in seg.SegmentSequence] == ["AUTOMATIC", "MANUAL"]
    assert "SegmentationAlgorithmIdentificationSequence" not in seg.SegmentSequence[1]
    rs = pydicom.dcmread(export_masks(phantom_dicom, masks, "rtstruct", tmp_path / "r.dcm", sources=sources))
    assert [r.ROIGenerationAlgorithm for r in rs.StructureSetROISequence] == ["AUTOMATIC", "MANUAL"]
    with pytest.raises(ExportError, match="not exported: Lung L"):
        export_masks(phantom_dicom, masks, "seg", tmp_path, sources={"Lung L": "manual"})
    with pytest.raises(ExportError, match="automatic or manual"):
        export_masks(phantom_dicom, masks, "rtstruct", tmp_path, sources={"GTV-1": "robot"})


def test_several_masks_refusals(phantom, phantom_dicom, tmp_path):
    empty = np.zeros(phantom_dicom.volume.shape, bool)
    with pytest.raises(ExportError, match="overlaps"):
        export_masks(phantom_dicom, {"Lungs": phantom.lungs, "Lung L": phantom.left_lung}, "nifti", tmp_path)
    with pytest.raises(ExportError, match="'GTV-2' is empty"):
        export_masks(phantom_dicom, {"GTV-1": phantom.tumour, "GTV-2": empty}, "rtstruct", tmp_path)
    with pytest.raises(ExportError, match="at least one"):
        export_masks(phantom_dicom, {}, "seg", tmp_path)
    with pytest.raises(ExportError, match="given twice"):
        export_masks(phantom_dicom, {"GTV": phantom.tumour, " GTV ": phantom.tumour}, "seg", tmp_path)
    with pytest.raises(ExportError, match="1 to 64"):
        export_masks(phantom_dicom, {"x" * 65: phantom.tumour}, "rtstruct", tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written for a refused export


def test_ct_out_folder_reused_for_the_same_ct_and_refused_for_another(phantom, flipped_nifti, tmp_path):
    first = with_dicom_series(flipped_nifti, tmp_path / "ct")
    again = with_dicom_series(flipped_nifti, tmp_path / "ct")
    assert again.dicom.sop_instance_uids == first.dicom.sop_instance_uids  # not rewritten: earlier exports stay valid
    other = synthetic_chest_ct(PhantomSpec(shape_zyx=(20, 96, 96), spacing_zyx=(5.0, 3.5, 3.5), noise_hu=5.0, seed=9))
    sitk.WriteImage(other.ct.to_sitk(), str(tmp_path / "other.nii.gz"))
    with pytest.raises(ExportError, match="not empty"):
        with_dicom_series(load_ct(tmp_path / "other.nii.gz"), tmp_path / "ct")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        with_dicom_series(flipped_nifti, tmp_path / "notes")


def test_reversed_slice_order_series(phantom, tmp_path):
    """A series whose rows run anterior-ward and whose slice normal points to the feet."""
    flipped = sitk.DICOMOrient(phantom.ct.to_sitk(), "LAI")
    vol = Volume.from_sitk(flipped)
    files = write_ct_series(vol, tmp_path / "ct")
    ct = load_ct(tmp_path / "ct")
    assert np.array_equal(ct.volume.array, phantom.ct.array)
    mask = phantom.tumour | phantom.left_lung
    path = export_mask(ct, mask, "rtstruct", tmp_path / "rs.dcm", name="Mixed")
    assert np.array_equal(load_rtstruct(path, ct, "Mixed"), mask)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    z_of = {str(h.SOPInstanceUID): float(h.ImagePositionPatient[2]) for h in headers}
    rs = pydicom.dcmread(path)
    for c in rs.ROIContourSequence[0].ContourSequence:
        z = float(c.ContourData[2])
        assert abs(z_of[c.ContourImageSequence[0].ReferencedSOPInstanceUID] - z) < 1e-3  # cites the slice it lies on
    seg_path = export_mask(ct, mask, "seg", tmp_path / "seg.dcm", name="Mixed")
    assert np.array_equal(load_seg(seg_path, ct), mask)


def test_contours_keep_holes_and_touching_borders():
    m = np.zeros((12, 14), bool)
    m[0:8, 0:8] = True  # touches the top and left borders
    m[3:5, 3:5] = False  # a hole
    m[10, 12] = True  # a single pixel
    m[8, 8] = True  # touches the square's corner (7, 7) only diagonally: its own contour
    from lungseg.imaging.io import fill_polygons_even_odd

    polys = mask_contours(m)
    assert len(polys) == 4
    assert np.array_equal(fill_polygons_even_odd(polys, m.shape), m)


# --------------------------------------------------------------------------------------------
# a real case: LUNG1-001


def test_lung1_gtv_roundtrip_references_the_real_ct(load_case, tmp_path):
    ct, rtstruct = load_case("LUNG1-001")
    gtv = load_rtstruct(rtstruct, ct, "GTV-1")
    assert gtv.any()
    src = ct.dicom
    header = src.headers[0]
    ct_uids = set(src.sop_instance_uids)

    seg_path = export_mask(ct, gtv, "seg", tmp_path / "gtv.seg.dcm", name="GTV-1")
    assert np.array_equal(load_seg(seg_path, ct, "GTV-1"), gtv)
    seg = pydicom.dcmread(seg_path)
    assert seg.FrameOfReferenceUID == src.frame_of_reference_uid
    assert seg.StudyInstanceUID == src.study_uid and seg.SeriesInstanceUID != src.series_uid
    refs = seg.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == src.series_uid
    assert {r.ReferencedSOPInstanceUID for r in refs.ReferencedInstanceSequence} <= ct_uids
    s = seg.SegmentSequence[0]
    assert s.SegmentAlgorithmType == "AUTOMATIC"
    assert s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "lungseg U-Net"
    import highdicom as hd

    assert hd.seg.segread(seg_path).get_segment_numbers() == [1]  # a SEG highdicom itself accepts

    rs_path = export_mask(ct, gtv, "rtstruct", tmp_path / "gtv.rtstruct.dcm", name="GTV-1")
    back = load_rtstruct(rs_path, ct, "GTV-1")
    assert dice(back, gtv) >= 0.99
    rs = pydicom.dcmread(rs_path)
    assert rs.file_meta.MediaStorageSOPClassUID == RTSTRUCT_STORAGE == rs.SOPClassUID
    assert rs.SOPInstanceUID not in ct_uids and rs.SeriesInstanceUID != src.series_uid
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == src.frame_of_reference_uid
    assert rs.StructureSetROISequence[0].ReferencedFrameOfReferenceUID == src.frame_of_reference_uid
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == src.study_uid == rs.StudyInstanceUID
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == src.series_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == list(src.sop_instance_uids)
    z_of = {str(h.SOPInstanceUID): float(h.ImagePositionPatient[2]) for h in src.headers}
    contours = rs.ROIContourSequence[0].ContourSequence
    assert len(contours) > 0
    for c in contours:
        uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
        assert uid in ct_uids
        assert abs(z_of[uid] - float(c.ContourData[2])) < 1e-2
        assert c.ContourImageSequence[0].ReferencedSOPClassUID == src.sop_class_uid
    assert rs.RTROIObservationsSequence[0].RTROIInterpretedType == "GTV"
    assert rs.StructureSetLabel and rs.StructureSetDate and rs.StructureSetTime
    assert len(rs.ROIContourSequence[0].ROIDisplayColor) == 3
    # patient / study attributes copied from the CT (compared by name only: values are never shown)
    for obj in (rs, seg):
        differing = [kw for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                                   "StudyDate", "StudyID", "AccessionNumber")
                     if kw in header and str(obj.get(kw, "")) != str(header.get(kw, ""))]
        assert not differing, f"not copied: {differing}"


def test_lung1_003_three_gtvs_in_one_structure_set_and_one_seg(load_case, tmp_path):
    ct, rtstruct = load_case("LUNG1-003")
    gtvs = {name: load_rtstruct(rtstruct, ct, name) for name in ("GTV-1", "GTV-2", "GTV-3")}
    ml = {name: m.sum() * ct.volume.voxel_volume_ml for name, m in gtvs.items()}
    assert ml == pytest.approx({"GTV-1": 34.7, "GTV-2": 38.6, "GTV-3": 8.7}, abs=0.5)  # the archive's reference volumes
    seg_path = export_masks(ct, gtvs, "seg", tmp_path)
    rs_path = export_masks(ct, gtvs, "rtstruct", tmp_path)
    assert seg_path.name == "GTV-1_GTV-2_GTV-3.seg.dcm" and rs_path.name == "GTV-1_GTV-2_GTV-3.rtstruct.dcm"
    for number, (name, gtv) in enumerate(gtvs.items(), start=1):
        assert np.array_equal(load_seg(seg_path, ct, name), gtv), name
        assert np.array_equal(load_seg(seg_path, ct, number), gtv), number
        assert np.array_equal(load_rtstruct(rs_path, ct, name), gtv), name
    rs = pydicom.dcmread(rs_path)
    assert len(rs.StructureSetROISequence) == 3 and rs.FrameOfReferenceUID == ct.dicom.frame_of_reference_uid
    assert {r.ReferencedFrameOfReferenceUID for r in rs.StructureSetROISequence} == {ct.dicom.frame_of_reference_uid}


# --------------------------------------------------------------------------------------------
# refusals


def test_bad_inputs(phantom, flipped_nifti, phantom_dicom, tmp_path):
    shape = phantom_dicom.volume.shape
    for fmt in FORMATS:
        with pytest.raises(ExportError, match="mask shape"):
            export_mask(phantom_dicom, np.zeros((2, 3, 4), bool), fmt, tmp_path / fmt)
    with pytest.raises(ExportError, match="boolean"):
        export_mask(phantom_dicom, np.zeros(shape, np.float32), "nifti", tmp_path)
    for fmt in ("seg", "rtstruct"):
        with pytest.raises(ExportError, match="empty"):
            export_mask(phantom_dicom, np.zeros(shape, bool), fmt, tmp_path / fmt)
        with pytest.raises(ExportError, match="DICOM CT"):
            export_mask(flipped_nifti, phantom.tumour, fmt, tmp_path / fmt)
    with pytest.raises(ExportError, match="unknown export format"):
        export_mask(phantom_dicom, phantom.tumour, "stl", tmp_path)
    with pytest.raises(ExportError, match="ending in"):
        export_mask(phantom_dicom, phantom.tumour, "nrrd", tmp_path / "x.nii.gz")
    with pytest.raises(ExportError, match="automatic or manual"):
        export_mask(phantom_dicom, phantom.tumour, "rtstruct", tmp_path, source="robot")


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_export(phantom, flipped_nifti, tmp_path, capsys):
    src = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(phantom.ct.to_sitk(), "RAS"), str(src))
    mask = tmp_path / "mask.nii.gz"
    sitk.WriteImage(flipped_nifti.mask_to_source(phantom.tumour), str(mask))

    assert main(["export", str(src), "--mask", str(mask), "--format", "nrrd", "--out", str(tmp_path / "m.nrrd")]) == 0
    assert np.array_equal(load_label(tmp_path / "m.nrrd", flipped_nifti), phantom.tumour)

    assert main(["export", str(src), "--mask", str(mask), "--format", "rtstruct", "--out", str(tmp_path / "rs.dcm")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "DICOM" in err and "\n" not in err

    rc = main(["export", str(src), "--mask", str(mask), "--format", "rtstruct", "--out", str(tmp_path / "rs.dcm"),
               "--ct-out", str(tmp_path / "ct-dicom"), "--source", "manual"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Demo^Phantom" not in out
    ct = load_ct(tmp_path / "ct-dicom")
    assert np.array_equal(load_rtstruct(tmp_path / "rs.dcm", ct, "GTV-auto"), phantom.tumour)

    bad = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkUInt8), str(bad))
    assert main(["export", str(src), "--mask", str(bad), "--format", "nifti", "--out", str(tmp_path / "b.nii.gz")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_cli_export_several_masks_in_one_structure_set(phantom, flipped_nifti, tmp_path, capsys):
    src = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(phantom.ct.to_sitk(), "RAS"), str(src))
    files = {}
    for name, mask in (("GTV-1", phantom.tumour), ("Lung L", phantom.left_lung)):
        files[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(flipped_nifti.mask_to_source(mask), str(files[name]))
    args = ["export", str(src), "--mask", str(files["GTV-1"]), "--name", "GTV-1", "--mask", str(files["Lung L"]),
            "--name", "Lung L", "--format", "rtstruct", "--out", str(tmp_path / "rs.dcm"), "--ct-out", str(tmp_path / "ct")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "GTV-1" in out and "Lung L" in out
    ct = load_ct(tmp_path / "ct")
    assert np.array_equal(load_rtstruct(tmp_path / "rs.dcm", ct, "GTV-1"), phantom.tumour)
    assert np.array_equal(load_rtstruct(tmp_path / "rs.dcm", ct, "Lung L"), phantom.left_lung)

    two_masks_one_name = ["export", str(src), "--mask", str(files["GTV-1"]), "--mask", str(files["Lung L"]),
                          "--name", "GTV-1", "--format", "seg", "--out", str(tmp_path / "x.dcm")]
    assert main(two_masks_one_name) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "one --name per --mask" in err and "\n" not in err
