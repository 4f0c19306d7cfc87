"""Export of masks onto the source CT: NIfTI, NRRD, DICOM SEG and DICOM RTSTRUCT.

Every exporter takes the :class:`~lungseg.imaging.io.LoadedCT` the masks were made on and boolean
masks on its canonical grid (``loaded.volume``), and writes them *on the source's own grid*.
:func:`export_masks` writes several named masks as one object (``{"GTV-1": m1, "GTV-2": m2}``);
:func:`export_mask` is its one-mask form.

* ``nifti`` / ``nrrd``: a compressed uint8 label image (mask i has value i, 1 for a single mask)
  with the input's geometry (``loaded.mask_to_source``), so a viewer overlays it on the original
  file directly.
* ``seg``: a DICOM Segmentation (BINARY, one segment per mask) built with highdicom from the
  source CT slices; it references the CT's series, study and frame of reference.
* ``rtstruct``: one DICOM RT Structure Set with one ROI per mask: closed planar contours per axial
  slice (outer boundaries and holes as separate contours; readers fill them even-odd, as
  :func:`lungseg.imaging.io.load_rtstruct` does), each citing the CT slice it lies on, and the
  CT's Frame of Reference module.

Every DICOM object written here passes dciodvfy (dicom3tools) without errors
(``tests/test_dciodvfy.py``); the warnings left come from the source CT (see the README).

SEG and RTSTRUCT need a DICOM CT to reference.  For a NIfTI/NRRD input or the synthetic demo,
:func:`write_ct_series` writes the canonical volume as a new DICOM CT series and
:func:`with_dicom_series` returns a LoadedCT that references it, so the demo can be exported as a
complete DICOM set; otherwise the DICOM exporters refuse with :class:`ExportError`.

Decisions: an empty mask is written to NIfTI/NRRD (a valid "nothing found") but refused for SEG and
RTSTRUCT (a structure with no contour breaks planning systems and our own loaders).  Patient and
study attributes are copied from the CT into the DICOM objects (the planning system needs them);
nothing here prints or logs them.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from lungseg import __version__
from lungseg.errors import LungsegError
from lungseg.imaging.io import LoadedCT, load_ct
from lungseg.imaging.volume import Volume

FORMATS = ("nifti", "nrrd", "seg", "rtstruct")
SOURCES = ("automatic", "manual")
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ALGORITHM_NAME = "lungseg U-Net"
MANUFACTURER = "lungseg"
SUFFIXES = {"nifti": (".nii.gz", ".nii"), "nrrd": (".nrrd", ".nhdr"), "seg": (".dcm",), "rtstruct": (".dcm",)}

# Patient, General Study and Patient Study module attributes copied from the CT (never logged)
PATIENT_STUDY_TAGS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "OtherPatientIDsSequence", "EthnicGroup", "PatientComments", "PatientSize", "PatientWeight",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription", "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialTimePointID",
)
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")


class ExportError(LungsegError):
    """A mask cannot be exported as asked (one-line reason)."""


PROVENANCES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")


@dataclass(frozen=True)
class MaskInfo:
    """How an exported mask was made, as DICOM records it.

    ``provenance``: AUTOMATIC (an algorithm's output unedited), SEMIAUTOMATIC (an algorithm's output edited
    by a person, or made with a person's help such as a click) or MANUAL (drawn by a person): the RTSTRUCT
    ROI's ROIGenerationAlgorithm and the SEG segment's SegmentAlgorithmType.  ``algorithm`` / ``version``:
    the algorithm's name and version (RTSTRUCT ROIGenerationDescription; SEG Segment Algorithm
    Identification), required for AUTOMATIC and SEMIAUTOMATIC.  ``colour``: RGB display colour.
    """

    provenance: str = "AUTOMATIC"
    algorithm: str = ""
    version: str = ""
    colour: tuple[int, int, int] | None = None

    @classmethod
    def of_source(cls, source: str) -> "MaskInfo":
        """The info of a plain ``automatic`` (this lungseg's U-Net) or ``manual`` mask."""
        s = str(source).lower()
        if s == "automatic":
            return cls("AUTOMATIC", ALGORITHM_NAME, __version__)
        if s == "manual":
            return cls("MANUAL")
        raise ExportError(f"unknown mask source {source!r}; choose automatic or manual")

    def checked(self, name: str) -> "MaskInfo":
        if self.provenance not in PROVENANCES:
            raise ExportError(f"mask {name!r}: provenance {self.provenance!r}: choose one of {', '.join(PROVENANCES)}")
        if self.provenance != "MANUAL" and not self.algorithm:
            raise ExportError(f"mask {name!r}: an {self.provenance} mask needs the name of its algorithm")
        return self


# --------------------------------------------------------------------------------------------
# entry point


def export_masks(loaded: LoadedCT, masks: Mapping[str, np.ndarray], fmt: str, out: str | os.PathLike,
                 description: str | None = None, source: str = "automatic",
                 sources: Mapping[str, str] | None = None, info: Mapping[str, MaskInfo] | None = None) -> Path:
    """Write several named masks (boolean, on ``loaded.volume``'s grid) as ONE ``fmt`` object at ``out``.

    ``masks`` maps a name (segment label / ROI name, unique, at most 64 characters) to its mask;
    the order of the mapping is the segment / ROI / label-value order.  A SEG gets one segment per
    mask, an RTSTRUCT one ROI per mask (one structure set), and a NIfTI/NRRD label image the
    values 1..n (the masks must not overlap there, as a voxel holds one value).  ``out`` is a file
    path or a folder (the file is then named after the masks).  ``source`` (automatic or manual)
    applies to every mask, unless ``sources`` gives a mask's own (name → automatic or manual): it
    sets the SEG segment's algorithm type and the RTSTRUCT ROI's generation algorithm.  ``info`` (name →
    :class:`MaskInfo`) gives a mask's provenance, algorithm and colour in full and wins over ``sources``.
    Returns the path written.
    """
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    named = _check_names(masks)
    given = {str(k).strip(): v for k, v in (sources or {}).items()}
    full = {str(k).strip(): v for k, v in (info or {}).items()}
    unknown = sorted((set(given) | set(full)) - set(named))
    if unknown:
        raise ExportError(f"sources given for masks that are not exported: {', '.join(unknown)}")
    per_mask = {name: (full[name] if name in full else MaskInfo.of_source(given.get(name, source))).checked(name)
                for name in named}

    def path_of() -> Path:  # called by the writers once the inputs are checked: nothing is created before
        return _out_path(out, fmt, "_".join(named)[:80])

    if fmt in ("nifti", "nrrd"):
        if len(named) > 255:
            raise ExportError(f"{len(named)} masks: a uint8 label image holds at most 255")
        return _write_label(loaded, named, path_of)
    writer = _write_seg if fmt == "seg" else _write_rtstruct
    return writer(loaded, named, path_of, description, per_mask)


def export_mask(loaded: LoadedCT, mask: np.ndarray, fmt: str, out: str | os.PathLike, name: str = "GTV-auto",
                description: str | None = None, source: str = "automatic") -> Path:
    """Write ``mask`` (boolean, on ``loaded.volume``'s canonical grid) as ``fmt`` to ``out``.

    ``out`` is a file path or a folder (the file is then named after ``name``).  ``source`` says
    whether the mask is the automatic (U-Net) result or a manual contour; it sets the algorithm
    type of the SEG segment and the ROI generation algorithm of the RTSTRUCT.  Returns the path.
    One mask of :func:`export_masks`.
    """
    return export_masks(loaded, {name: mask}, fmt, out, description=description, source=source)


def _check_names(masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(masks, Mapping) or not masks:
        raise ExportError("give the masks to export as a mapping {name: mask} with at least one entry")
    named: dict[str, np.ndarray] = {}
    for name, mask in masks.items():
        name = str(name).strip()
        if not name or len(name) > 64 or "\\" in name or any(ord(ch) < 32 for ch in name):
            raise ExportError(f"mask name {name[:70]!r}: use 1 to 64 printable characters, no backslash")
        if name in named:
            raise ExportError(f"mask name {name!r} given twice; every segment / ROI needs its own name")
        named[name] = mask
    return named


def _check_mask(loaded: LoadedCT, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != loaded.volume.shape:
        raise ExportError(f"mask shape {mask.shape} differs from the CT's {loaded.volume.shape} (z, y, x); "
                          "the mask must be on the loaded CT's canonical grid")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer):
            raise ExportError(f"mask of type {mask.dtype}: pass a boolean mask (threshold probabilities first)")
        mask = mask > 0
    return mask


def _out_path(out: str | os.PathLike, fmt: str, name: str) -> Path:
    p = Path(out)
    suffixes = SUFFIXES[fmt]
    if p.is_dir() or (not p.suffix and not p.exists()):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "mask"
        p = p / f"{safe}{suffixes[0] if fmt not in ('seg', 'rtstruct') else f'.{fmt}.dcm'}"
    elif not p.name.lower().endswith(suffixes):
        raise ExportError(f"{p.name}: a {fmt} export needs a file name ending in {' or '.join(suffixes)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------------------------
# label images


def write_nifti(loaded: LoadedCT, mask: np.ndarray, out: str | os.PathLike, name: str = "GTV-auto") -> Path:
    """The mask as a compressed uint8 NIfTI on the input's own grid."""
    return export_masks(loaded, {name: mask}, "nifti", out)


def write_nrrd(loaded: LoadedCT, mask: np.ndarray, out: str | os.PathLike, name: str = "GTV-auto") -> Path:
    """The mask as a compressed uint8 NRRD on the input's own grid."""
    return export_masks(loaded, {name: mask}, "nrrd", out)


def _write_label(loaded: LoadedCT, named: dict[str, np.ndarray], path_of) -> Path:
    labels = np.zeros(loaded.volume.shape, np.uint8)
    for value, (name, mask) in enumerate(named.items(), start=1):
        mask = _check_mask(loaded, mask)
        if (labels[mask] > 0).any():
            raise ExportError(f"mask {name!r} overlaps an earlier one; a label image holds one value per voxel "
                              "(export overlapping masks as SEG or RTSTRUCT, or one file each)")
        labels[mask] = value
    path = path_of()
    image = sitk.Cast(loaded.mask_to_source(labels), sitk.sitkUInt8)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as exc:
        raise ExportError(f"{path.name}: cannot write ({str(exc).strip().splitlines()[-1][:160]})") from None
    return path


# --------------------------------------------------------------------------------------------
# DICOM helpers


def _require_dicom(loaded: LoadedCT, what: str):
    if loaded.dicom is None:
        raise ExportError(f"{loaded.label}: a {what} must reference a DICOM CT, and this CT came from "
                          f"{loaded.info.get('source', 'an image file')}; write it as a DICOM series first "
                          "(export.with_dicom_series / --ct-out DIR)")
    if not loaded.dicom.frame_of_reference_uid:
        raise ExportError(f"{loaded.label}: the CT series has no FrameOfReferenceUID; a {what} cannot reference it")
    return loaded.dicom


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _copy_patient_study(src: pydicom.Dataset, ds: pydicom.Dataset) -> None:
    for kw in PATIENT_STUDY_TAGS:
        if kw in src:
            ds[kw] = src[kw]  # the element as is (keeps VR and value)
    for kw in TYPE2_PATIENT_STUDY:
        if kw not in ds:
            setattr(ds, kw, "")


def _is_gtv(name: str) -> bool:
    return bool(re.match(r"^\s*(gtv|tumou?r|lesion|nodule)", name, re.I))


def _roi_type(name: str) -> str:
    m = re.match(r"^\s*(gtv|ctv|itv|ptv)", name, re.I)
    if m:
        return m.group(1).upper()
    return "GTV" if _is_gtv(name) else "ORGAN"


def _roi_colour(name: str, info: "MaskInfo | None" = None) -> list[int]:
    if info is not None and info.colour is not None:
        return [int(c) for c in info.colour]
    n = name.lower()
    if _is_gtv(name) or n.startswith(("ctv", "itv", "ptv")):
        return [255, 0, 0]
    if "lung" in n:
        return [0, 160, 255] if re.search(r"\b(l|left)\b|_l\b|\bl$", n) else [0, 220, 120]
    return [255, 200, 0]


def _ds_str(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


# --------------------------------------------------------------------------------------------
# DICOM SEG


def _dicom_inputs(loaded: LoadedCT, named: dict[str, np.ndarray], sources: dict[str, MaskInfo], kind: str, needs: str):
    """Checks shared by the DICOM writers: a DICOM source, fitting non-empty masks."""
    src = _require_dicom(loaded, kind)
    masks = {name: _check_mask(loaded, mask) for name, mask in named.items()}
    for name, mask in masks.items():
        if not mask.any():
            what = "the mask is empty" if len(masks) == 1 else f"mask {name!r} is empty"
            raise ExportError(f"{what}: {needs} (export NIfTI/NRRD for an empty result)")
    return src, masks, sources


def _model_name(sources: dict[str, MaskInfo]) -> str:
    kinds = {i.provenance for i in sources.values()}
    if kinds == {"AUTOMATIC"}:
        return ALGORITHM_NAME
    return "lungseg viewer" if kinds == {"MANUAL"} else f"{ALGORITHM_NAME} and viewer"


def _provenance_words(sources: dict[str, MaskInfo]) -> str:
    return " and ".join(sorted({i.provenance.lower() for i in sources.values()}))


def _ct_header(loaded: LoadedCT) -> pydicom.Dataset:
    """The first CT file's full header (patient, study, frame of reference attributes are copied from it)."""
    src = loaded.dicom
    try:
        return pydicom.dcmread(src.files[0], stop_before_pixels=True)
    except (OSError, ValueError, EOFError) as exc:
        raise ExportError(f"{loaded.label}: cannot re-read the CT files ({type(exc).__name__}); was the folder moved?") from None


def _series_text(names: list[str], description: str | None) -> str:
    return (description or f"lungseg {', '.join(names)}")[:64]


def write_seg(loaded: LoadedCT, mask: np.ndarray, out: str | os.PathLike, name: str = "GTV-auto",
              description: str | None = None, source: str = "automatic") -> Path:
    """The mask as a BINARY DICOM SEG (one segment) referencing the source CT slices."""
    return export_masks(loaded, {name: mask}, "seg", out, description=description, source=source)


def _segment_description(hd, codes, number: int, name: str, info: MaskInfo):
    if _is_gtv(name) or _roi_type(name) != "ORGAN":
        category, prop = codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    elif "lung" in name.lower():
        category, prop = codes.SCT.AnatomicalStructure, codes.SCT.Lung
    else:
        category, prop = codes.SCT.AnatomicalStructure, codes.SCT.AnatomicalStructure
    colour = hd.color.CIELabColor.from_rgb(*_roi_colour(name, info)) if hasattr(hd.color.CIELabColor, "from_rgb") \
        else None
    if info.provenance == "MANUAL":
        return hd.seg.SegmentDescription(number, name, category, prop, hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                                         display_color=colour)
    family = codes.cid7162.ArtificialIntelligence if info.provenance == "AUTOMATIC" or "U-Net" in info.algorithm \
        or "click" in info.algorithm else codes.cid7162.ManualProcessing
    algorithm = hd.AlgorithmIdentificationSequence(name=info.algorithm[:64], family=family,
                                                   version=(info.version or __version__)[:64])
    return hd.seg.SegmentDescription(number, name, category, prop, hd.seg.SegmentAlgorithmTypeValues[info.provenance],
                                     algorithm_identification=algorithm, display_color=colour)


def _write_seg(loaded: LoadedCT, named: dict[str, np.ndarray], path_of, description: str | None,
               sources: dict[str, str]) -> Path:
    """A BINARY DICOM SEG with one segment per mask (numbered 1..n in order) referencing the CT slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    src, masks, sources = _dicom_inputs(loaded, named, sources, "DICOM SEG", "a DICOM SEG needs at least one voxel")
    path = path_of()
    names = list(masks)

    # frames aligned with the sorted source files: the source grid's k-th slice is files[k]
    frames = np.stack([sitk.GetArrayFromImage(loaded.mask_to_source(m)).astype(bool) for m in masks.values()], axis=-1)
    if frames.shape[0] != len(src.files):
        raise ExportError(f"{loaded.label}: {frames.shape[0]} mask slices for {len(src.files)} CT files")
    try:
        images = [pydicom.dcmread(p) for p in src.files]
    except (OSError, ValueError, EOFError) as exc:
        raise ExportError(f"{loaded.label}: cannot re-read the CT slices ({type(exc).__name__}); was the folder moved?") from None
    if [str(ds.SOPInstanceUID) for ds in images] != list(src.sop_instance_uids):
        raise ExportError(f"{loaded.label}: the CT files changed since the CT was loaded; load it again")

    segments = [_segment_description(hd, codes, i, name, sources[name]) for i, name in enumerate(names, start=1)]
    label = names[0] if len(names) == 1 else "LUNGSEG"
    try:
        with warnings.catch_warnings():
            # highdicom warns about unusual person names quoting the name: never let it reach a log
            warnings.filterwarnings("ignore", message=r".*person name.*", category=UserWarning)
            seg = hd.seg.Segmentation(
                source_images=images,
                pixel_array=frames,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segments,
                series_instance_uid=generate_uid(),
                series_number=901,
                sop_instance_uid=generate_uid(),
                instance_number=1,
                manufacturer=MANUFACTURER,
                manufacturer_model_name=_model_name(sources),
                software_versions=__version__,
                device_serial_number="0",
                content_description=(description or f"lungseg {_provenance_words(sources)} "
                                                    f"{', '.join(names)}")[:64],
                content_label=re.sub(r"[^A-Z0-9_ ]", "_", label.upper())[:16] or "SEGMENTATION",
                series_description=_series_text(names, description),
            )
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{loaded.label}: cannot build the DICOM SEG ({' '.join(str(exc).split())[:200]})") from None
    seg.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------
# RTSTRUCT


def mask_contours(mask_slice: np.ndarray) -> list[np.ndarray]:
    """Closed boundaries of a 2D boolean mask as (y, x) pixel-coordinate polygons.

    Marching squares at level 0.5 on the zero-padded slice: every boundary, outer or hole, is one
    closed polygon passing halfway between inside and outside pixel centres, so the even-odd fill
    of the pixel centres gives the slice back exactly.  Collinear vertices are dropped.
    """
    from skimage import measure

    padded = np.pad(mask_slice.astype(np.uint8), 1)
    polys = []
    for c in measure.find_contours(padded, 0.5):
        c = c - 1.0
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) < 3:
            continue
        prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
        a, b = c - prev, nxt - c
        cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
        c = c[np.abs(cross) > 1e-9]
        if len(c) >= 3:
            polys.append(c)
    return polys


def _slice_references(loaded: LoadedCT) -> dict[int, tuple[str, str]]:
    """Canonical slice index → (SOP class, SOP instance UID) of the CT file lying on it."""
    src = loaded.dicom
    refs: dict[int, tuple[str, str]] = {}
    for ds in src.headers:
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        kz = float(loaded.volume.physical_to_index(ipp)[0, 0])
        k = int(round(kz))
        if abs(kz - k) < 0.1 and 0 <= k < loaded.volume.shape[0]:
            refs[k] = (str(ds.get("SOPClassUID", src.sop_class_uid)), str(ds.SOPInstanceUID))
    return refs


def rtstruct_contours(volume: Volume, mask: np.ndarray) -> dict[int, list[np.ndarray]]:
    """Per canonical slice ``k``: contours as N×3 LPS millimetre points (x, y, z)."""
    out: dict[int, list[np.ndarray]] = {}
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        pts = []
        for poly in mask_contours(mask[k]):
            zyx = np.column_stack([np.full(len(poly), float(k)), poly])
            pts.append(volume.index_to_physical(zyx))
        if pts:
            out[int(k)] = pts
    return out


def write_rtstruct(loaded: LoadedCT, mask: np.ndarray, out: str | os.PathLike, name: str = "GTV-auto",
                   description: str | None = None, source: str = "automatic") -> Path:
    """The mask as a DICOM RT Structure Set with one ROI referencing the source CT slices."""
    return export_masks(loaded, {name: mask}, "rtstruct", out, description=description, source=source)


def _write_rtstruct(loaded: LoadedCT, named: dict[str, np.ndarray], path_of, description: str | None,
                    sources: dict[str, str]) -> Path:
    """One RT Structure Set with one ROI per mask (numbered 1..n in order) referencing the CT slices."""
    src, masks, sources = _dicom_inputs(loaded, named, sources, "DICOM RTSTRUCT", "an RTSTRUCT needs at least one contour")
    path = path_of()
    names = list(masks)
    refs = _slice_references(loaded)
    if len(refs) != loaded.volume.shape[0]:
        raise ExportError(f"{loaded.label}: only {len(refs)} of {loaded.volume.shape[0]} CT slices could be matched to their files")
    first = _ct_header(loaded)
    date, time = _now()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 192")  # the copied names keep their encoding
    # SOP common
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # patient, general study (copied from the CT)
    _copy_patient_study(first, ds)
    # RT series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 902
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = _series_text(names, description)
    ds.OperatorsName = ""
    # frame of reference (part of the RT Structure Set IOD): the CT's own
    ds.FrameOfReferenceUID = src.frame_of_reference_uid
    if "PositionReferenceIndicator" in first:
        ds["PositionReferenceIndicator"] = first["PositionReferenceIndicator"]
    else:
        ds.PositionReferenceIndicator = ""
    # general equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = _model_name(sources)
    ds.SoftwareVersions = __version__
    # structure set
    ds.InstanceNumber = 1
    label = names[0] if len(names) == 1 else "lungseg"
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = (label if len(names) == 1 else ", ".join(names))[:64]
    ds.StructureSetDescription = (description or f"lungseg {_provenance_words(sources)} "
                                                  f"contour{'s' if len(names) > 1 else ''} {', '.join(names)}")
    ds.StructureSetDate, ds.StructureSetTime = date, time

    contour_images = Sequence()
    for sop_class, uid in (refs[k] for k in sorted(refs)):
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        contour_images.append(item)
    series = pydicom.Dataset()
    series.SeriesInstanceUID = src.series_uid
    series.ContourImageSequence = contour_images
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary here)
    study.ReferencedSOPInstanceUID = src.study_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = src.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    rois, roi_contours, observations = Sequence(), Sequence(), Sequence()
    for number, (name, mask) in enumerate(masks.items(), start=1):
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = src.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIDescription = description or ""
        info = sources[name]
        roi.ROIGenerationAlgorithm = info.provenance
        if info.algorithm:
            roi.ROIGenerationDescription = f"{info.algorithm} {info.version}".strip()[:64]
        rois.append(roi)

        roi_contour = pydicom.Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = _roi_colour(name, info)
        roi_contour.ContourSequence = _contour_sequence(rtstruct_contours(loaded.volume, mask), refs)
        roi_contours.append(roi_contour)

        obs = pydicom.Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.ROIObservationLabel = name[:16]
        obs.RTROIInterpretedType = _roi_type(name)
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations

    ds.save_as(path, enforce_file_format=True)
    return path


def _contour_sequence(contours: dict[int, list[np.ndarray]], refs: dict[int, tuple[str, str]]) -> Sequence:
    """Closed planar contours (numbered 1..n), each citing the CT slice it lies on."""
    seq = Sequence()
    for k in sorted(contours):
        sop_class, uid = refs[k]
        for pts in contours[k]:
            c = pydicom.Dataset()
            img = pydicom.Dataset()
            img.ReferencedSOPClassUID = sop_class
            img.ReferencedSOPInstanceUID = uid
            c.ContourImageSequence = Sequence([img])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourNumber = len(seq) + 1
            c.ContourData = [_ds_str(v) for v in pts.ravel()]
            seq.append(c)
    return seq


# --------------------------------------------------------------------------------------------
# a DICOM CT series from a volume (demo / NIfTI sources)


def write_ct_series(volume: Volume, folder: str | os.PathLike, *, label: str = "lungseg-demo",
                    patient_name: str = "Demo^Phantom", patient_id: str | None = None,
                    series_description: str = "lungseg CT written from a volume") -> list[Path]:
    """Write ``volume`` (HU) as a new single-frame DICOM CT series (new UIDs) and return the files.

    Any axis-aligned or oblique ``direction`` is kept: row/column directions become
    ImageOrientationPatient and each slice's first voxel its ImagePositionPatient.  Patient name
    and ID default to placeholders (the demo phantom has no patient).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(volume.direction, float).reshape(3, 3)
    iop = [_ds_str(v) for v in np.concatenate([d[:, 0], d[:, 1]])]
    arr = np.clip(np.rint(volume.array), -32768, 32767).astype(np.int16)
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    date, time = _now()
    files = []
    for k in range(arr.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        p = folder / f"CT{k + 1:04d}.dcm"
        ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.PatientName = patient_name
        ds.PatientID = patient_id or label
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.StudyDate, ds.StudyTime = date, time
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.StudyDescription = label[:64]
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = series_description[:64]
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "CHEST"  # an unpaired part: General Series then needs no Laterality
        ds.Manufacturer = MANUFACTURER
        ds.SoftwareVersions = __version__
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_str(v) for v in volume.index_to_physical([[k, 0, 0]])[0]]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [_ds_str(volume.spacing[1]), _ds_str(volume.spacing[0])]  # row spacing (y), column spacing (x)
        ds.SliceThickness = _ds_str(volume.spacing[2])
        ds.KVP = ""
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.PixelData = np.ascontiguousarray(arr[k]).tobytes()
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    return files


def with_dicom_series(loaded: LoadedCT, folder: str | os.PathLike, **kwargs) -> LoadedCT:
    """``loaded`` as a DICOM CT: reused when it is one, else its volume written to ``folder`` and reloaded.

    The mask grid is unchanged (the written series has the canonical grid), so a mask made on
    ``loaded.volume`` exports onto the returned CT as is.  A ``folder`` that already holds this
    CT (written by an earlier export) is reused, so a SEG and an RTSTRUCT exported one after the
    other reference the same series; a folder holding anything else is refused, never overwritten.
    """
    if loaded.dicom is not None:
        return loaded
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        return _existing_series(loaded, folder)
    write_ct_series(loaded.volume, folder, label=kwargs.pop("label", loaded.label), **kwargs)
    dicom = load_ct(folder, label=loaded.label)
    if dicom.volume.shape != loaded.volume.shape or not dicom.volume.grid.matches(loaded.volume.grid, tol_mm=1e-2):
        raise ExportError(f"{loaded.label}: the written DICOM series does not reproduce the CT's grid")
    return dicom


def _existing_series(loaded: LoadedCT, folder: Path) -> LoadedCT:
    refuse = f"{folder} is not empty and does not hold this CT as a DICOM series; give a new or empty folder"
    try:
        dicom = load_ct(folder, label=loaded.label)
    except LungsegError:
        raise ExportError(refuse) from None
    same = (dicom.dicom is not None and dicom.volume.shape == loaded.volume.shape
            and dicom.volume.grid.matches(loaded.volume.grid, tol_mm=1e-2)
            and np.array_equal(dicom.volume.array, loaded.volume.array))
    if not same:
        raise ExportError(refuse)
    return dicom
