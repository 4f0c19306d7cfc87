"""Every DICOM object lungseg writes passes dciodvfy (David Clunie's dicom3tools) without an error.

dciodvfy checks an object against the IOD of its SOP class (modules, types, conditions, VRs).
Warnings are allowed: those left come from attributes copied from the source CT (README, "DICOM
conformance").  ``make test`` installs dicom3tools; with CI=true a missing dciodvfy is an error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lungseg.cli import main
from lungseg.export import export_mask, export_masks, with_dicom_series
from lungseg.imaging.io import load_ct, load_rtstruct, load_seg
from lungseg.imaging.phantom import PhantomSpec, demo_case

DCIODVFY = shutil.which("dciodvfy")
SPEC = PhantomSpec(shape_zyx=(20, 96, 96), spacing_zyx=(5.0, 3.5, 3.5), noise_hu=5.0)


@pytest.fixture(scope="module", autouse=True)
def _dciodvfy_present():
    if DCIODVFY is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy not found (CI=true): install dicom3tools (make dicom3tools)")
        pytest.skip("dciodvfy not found: install dicom3tools (make dicom3tools)")


def dciodvfy_errors(path) -> list[str]:
    """The lines of dciodvfy's report that start with "Error", values of patient attributes hidden."""
    r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    assert any(ln.strip() for ln in lines), f"dciodvfy printed nothing for {path}"
    errors = [ln for ln in lines if ln.startswith("Error")]
    return [re.sub(r"<[^>]*>", "<...>", ln) if re.search(r"Patient|0x0010,|\(0010,", ln) else ln for ln in errors]


def assert_valid(*paths) -> None:
    report = {p.name: dciodvfy_errors(p) for p in paths}
    bad = {name: errs for name, errs in report.items() if errs}
    assert not bad, "dciodvfy errors:\n" + "\n".join(f"{name}: {e}" for name, errs in bad.items() for e in errs)


def test_dciodvfy_reports_errors(tmp_path):
    """The check itself can fail: an RTSTRUCT without its Frame of Reference module is reported."""
    ct, mask = demo_case(SPEC)
    ct = with_dicom_series(ct, tmp_path / "ct")
    path = export_mask(ct, mask, "rtstruct", tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    del ds.FrameOfReferenceUID
    ds.save_as(tmp_path / "broken.dcm")
    errors = dciodvfy_errors(tmp_path / "broken.dcm")
    assert any("FrameOfReferenceUID" in e for e in errors), errors


def test_lung1_001_seg_and_rtstruct(load_case, tmp_path):
    ct, rtstruct = load_case("LUNG1-001")
    gtv = load_rtstruct(rtstruct, ct, "GTV-1")
    seg = export_mask(ct, gtv, "seg", tmp_path / "gtv.seg.dcm", name="GTV-1")
    rs = export_mask(ct, gtv, "rtstruct", tmp_path / "gtv.rtstruct.dcm", name="GTV-1")
    assert_valid(seg, rs)
    ds = pydicom.dcmread(rs)
    header = pydicom.dcmread(ct.dicom.files[0], stop_before_pixels=True)
    assert ds.FrameOfReferenceUID == ct.dicom.frame_of_reference_uid
    assert ds.PositionReferenceIndicator == header.get("PositionReferenceIndicator", "")


def test_lung1_003_three_gtvs_in_one_seg_and_one_structure_set(load_case, tmp_path):
    ct, rtstruct = load_case("LUNG1-003")
    gtvs = {name: load_rtstruct(rtstruct, ct, name) for name in ("GTV-1", "GTV-2", "GTV-3")}
    seg = export_masks(ct, gtvs, "seg", tmp_path / "gtvs.seg.dcm")
    rs = export_masks(ct, gtvs, "rtstruct", tmp_path / "gtvs.rtstruct.dcm")
    assert_valid(seg, rs)
    assert [s.SegmentLabel for s in pydicom.dcmread(seg, stop_before_pixels=True).SegmentSequence] == list(gtvs)
    assert [r.ROIName for r in pydicom.dcmread(rs).StructureSetROISequence] == list(gtvs)


def test_demo_phantom_as_the_app_exports_it(tmp_path):
    """The app's demo case: CT series written from the volume, then SEG and RTSTRUCT onto it."""
    loaded, tumour = demo_case(SPEC)
    ct = with_dicom_series(loaded, tmp_path / "ct")
    seg = export_mask(ct, tumour, "seg", tmp_path / "seg.dcm", source="manual")
    rs = export_mask(ct, tumour, "rtstruct", tmp_path / "rs.dcm", source="manual")
    assert_valid(*ct.dicom.files, seg, rs)


def test_nifti_source_with_ct_out_from_the_cli(tmp_path):
    """A NIfTI CT: ``export --ct-out`` writes the CT series, and SEG and RTSTRUCT reference the same one."""
    loaded, tumour = demo_case(SPEC)
    src = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(loaded.volume.to_sitk(), "RAS"), str(src))
    nifti = load_ct(src)
    mask = tmp_path / "gtv.nii.gz"
    sitk.WriteImage(nifti.mask_to_source(tumour), str(mask))
    common = [str(src), "--mask", str(mask), "--name", "GTV-1", "--ct-out", str(tmp_path / "ct-dicom")]
    assert main(["export", *common, "--format", "seg", "--out", str(tmp_path / "gtv.seg.dcm")]) == 0
    assert main(["export", *common, "--format", "rtstruct", "--out", str(tmp_path / "gtv.rtstruct.dcm")]) == 0
    files = sorted((tmp_path / "ct-dicom").glob("*.dcm"))
    assert len(files) == SPEC.shape_zyx[0]
    assert_valid(*files, tmp_path / "gtv.seg.dcm", tmp_path / "gtv.rtstruct.dcm")
    ct = load_ct(tmp_path / "ct-dicom")
    assert np.array_equal(load_seg(tmp_path / "gtv.seg.dcm", ct, "GTV-1"), tumour)
    assert np.array_equal(load_rtstruct(tmp_path / "gtv.rtstruct.dcm", ct, "GTV-1"), tumour)
