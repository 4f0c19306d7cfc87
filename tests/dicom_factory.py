"""Small synthetic DICOM CT series for input-validation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def write_series(folder: Path, z_positions, *, modality="CT", sop_class=CT_STORAGE, iop=(1, 0, 0, 0, 1, 0),
                 iops=None, tilt=0.0, xy_shift=None, size=32, series_uid=None, for_uid=None, pixel=None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    study_uid = generate_uid()
    files = []
    for i, z in enumerate(z_positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"s{i:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName = "Secret^Patient"
        ds.PatientID = "ID-12345"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.InstanceNumber = i + 1
        shift = xy_shift(i) if xy_shift else (0.0, 0.0)
        ds.ImagePositionPatient = [-16.0 + shift[0], -16.0 + shift[1], float(z)]
        ds.ImageOrientationPatient = list(iops[i] if iops else iop)
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        if tilt:
            ds.GantryDetectorTilt = tilt
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        arr = pixel(i) if pixel else np.full((size, size), -1000, np.int16)
        arr = arr.astype(np.int16)
        arr[4:8, 20:28] = 100 + i  # an asymmetric mark: +x side, anterior
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"s{i:03d}.dcm", enforce_file_format=True)
        files.append(folder / f"s{i:03d}.dcm")
    return {"files": files, "series_uid": series_uid, "for_uid": for_uid}


def write_rtstruct(path: Path, for_uid: str, rois: dict[str, list[np.ndarray]]) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ref = pydicom.Dataset()
    ref.FrameOfReferenceUID = for_uid
    ds.ReferencedFrameOfReferenceSequence = [ref]
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    for n, (name, contours) in enumerate(rois.items(), start=1):
        r = pydicom.Dataset()
        r.ROINumber = n
        r.ROIName = name
        r.ReferencedFrameOfReferenceUID = for_uid
        ds.StructureSetROISequence.append(r)
        rc = pydicom.Dataset()
        rc.ReferencedROINumber = n
        rc.ContourSequence = []
        for pts in contours:
            c = pydicom.Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [float(v) for v in np.asarray(pts).ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path
