"""Reading chest CTs and their manual contours.

``load_ct(path)`` takes a DICOM folder (searched recursively), a ``.zip`` of one, or an image file
(NIfTI, NRRD, MHA/MHD) and returns a :class:`LoadedCT`: the scan in HU on a canonical LPS grid
(see :mod:`lungseg.imaging.volume`), the grid it came on (to write results back), and what the folder
held besides (other series, structure sets, segmentations).

Contours: :func:`load_rtstruct`, :func:`load_seg` and :func:`load_label` each give a boolean mask
on the canonical grid of a loaded CT.  Every refusal is a :class:`~lungseg.errors.InputError` or
:class:`~lungseg.errors.ContourError` with a one-line reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from lungseg.errors import ContourError, InputError
from lungseg.imaging.volume import Grid, Volume

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

# Zip safety limits: a PACS export of one chest CT is well under these (a 1 mm, 600-slice CT is 320 MB);
# LUNGSEG_ZIP_MAX_FILES and LUNGSEG_ZIP_MAX_MB change the first two.
ZIP_MAX_MEMBERS = 10_000
ZIP_MAX_BYTES = 2 * 1024**3
ZIP_MAX_RATIO = 200


@dataclass(frozen=True)
class SeriesSummary:
    """One series found in a DICOM folder (no patient identifiers)."""

    series_uid: str
    modality: str
    n_files: int
    description: str = ""


@dataclass(frozen=True)
class StructureSetRef:
    """An RTSTRUCT found beside the CT."""

    path: Path
    frame_of_reference_uid: str
    roi_names: tuple[str, ...]
    references_ct: bool


@dataclass(frozen=True)
class SegRef:
    """A DICOM SEG found beside the CT."""

    path: Path
    frame_of_reference_uid: str
    segment_labels: tuple[str, ...]
    references_ct: bool


@dataclass
class DicomSource:
    """Where a DICOM CT came from, kept so exports can reference it."""

    files: list[Path]  # sorted inferior → superior along the slice normal
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str]
    sop_class_uid: str
    headers: list[pydicom.Dataset] = field(repr=False, default_factory=list)
    # (row dir, column dir, normal, first position, slice step, pixel spacing) as validated
    geometry: tuple | None = field(repr=False, default=None)


@dataclass
class LoadedCT:
    """A CT ready for processing: canonical HU volume + provenance."""

    volume: Volume  # int16 HU, canonical LPS orientation
    source_grid: Grid  # the grid of the input as stored (write results back onto it)
    label: str  # the case's own label (folder/file name), never a patient identifier
    info: dict  # scanner, slice thickness, … (no patient identifiers)
    dicom: DicomSource | None = None
    other_series: list[SeriesSummary] = field(default_factory=list)
    structure_sets: list[StructureSetRef] = field(default_factory=list)
    segmentations: list[SegRef] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def mask_to_source(self, mask: np.ndarray) -> sitk.Image:
        """A canonical-grid mask (bool/uint8/float) as a SimpleITK image on the input's own grid."""
        return to_source_grid(self.volume, mask, self.source_grid)

    def roi_names(self) -> list[str]:
        names: list[str] = []
        for s in self.structure_sets:
            if s.references_ct:
                names += [n for n in s.roi_names if n not in names]
        return names


# --------------------------------------------------------------------------------------------
# entry point


def load_ct(path: str | os.PathLike, series_uid: str | None = None, label: str | None = None, *,
            skip_unreadable: bool = False, unzip_into: str | os.PathLike | None = None) -> LoadedCT:
    """Load a chest CT from a DICOM folder, a DICOM zip or an image file.

    An unreadable DICOM file in the series is refused (the volume would silently miss a slice) unless
    ``skip_unreadable``; a zip is extracted into the cache, or into ``unzip_into`` (a run without cache).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    name = label or case_label(p)
    if p.is_dir():
        return _load_dicom_folder(p, series_uid, name, skip_unreadable)
    lower = p.name.lower()
    if lower.endswith(".zip"):
        folder, fresh = unpack_zip(p, unzip_into)
        try:
            return _load_dicom_folder(folder, series_uid, name, skip_unreadable)
        except InputError:
            if fresh:  # a series refused as it came is not kept (one opened before may be in use elsewhere)
                shutil.rmtree(folder, ignore_errors=True)
            raise
    if lower.endswith(IMAGE_SUFFIXES):
        return _load_image_file(p, name)
    if lower.endswith(".dcm") or _is_dicom_file(p):
        raise InputError(f"{p.name}: a single DICOM file is one slice; give the folder or zip of the whole series")
    raise InputError(f"{p.name}: unknown format (expected a DICOM folder, .zip, .nii, .nii.gz, .nrrd, .mha or .mhd)")


def case_label(p: Path) -> str:
    """The label of a case opened from ``p``: its file or folder name without the suffix."""
    n = p.name
    for s in (".nii.gz",) + IMAGE_SUFFIXES + (".zip",):
        if n.lower().endswith(s):
            return n[: -len(s)]
    return n


# --------------------------------------------------------------------------------------------
# zip


def cache_dir() -> Path:
    from lungseg import storage

    return storage.private_dir(storage.cache_root())


def _file_digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _zip_limits() -> tuple[int, int]:
    """(members, bytes) a zip may hold: ``LUNGSEG_ZIP_MAX_FILES`` and ``LUNGSEG_ZIP_MAX_MB``."""
    try:
        members = int(os.environ.get("LUNGSEG_ZIP_MAX_FILES") or ZIP_MAX_MEMBERS)
        size = int(float(os.environ.get("LUNGSEG_ZIP_MAX_MB") or ZIP_MAX_BYTES / 1024**2) * 1024**2)
    except ValueError:
        raise InputError("LUNGSEG_ZIP_MAX_FILES and LUNGSEG_ZIP_MAX_MB must be numbers") from None
    return members, size


def check_zip_members(name: str, members: list[zipfile.ZipInfo], archive_bytes: int) -> None:
    """Refuse a zip before anything is extracted: no members, too many, too large unpacked, a member or the
    whole compressed more than ``ZIP_MAX_RATIO``:1 (a zip bomb), absolute or ``..`` paths, links."""
    max_members, max_bytes = _zip_limits()
    if not members:
        raise InputError(f"{name}: the zip is empty")
    if len(members) > max_members:
        raise InputError(f"{name}: {len(members)} files in the zip, more than the limit of {max_members}")
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise InputError(f"{name}: unpacks to {total / 1024**2:.0f} MB, more than the limit of "
                         f"{max_bytes / 1024**2:.0f} MB")
    if total > ZIP_MAX_RATIO * max(1, archive_bytes):
        raise InputError(f"{name}: unpacks to {total // max(1, archive_bytes)} times its size; refused as a zip bomb")
    for m in members:
        parts = Path(m.filename.replace("\\", "/")).parts
        if m.filename.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", m.filename):
            raise InputError(f"{name}: unsafe path in zip: {m.filename!r}")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise InputError(f"{name}: the zip holds a symbolic link ({m.filename!r}); refused")
        if m.file_size > ZIP_MAX_RATIO * max(1, m.compress_size):
            raise InputError(f"{name}: {m.filename!r} compresses {m.file_size // max(1, m.compress_size)}:1; "
                             "refused as a zip bomb")


def extract_zip(path: Path, into: Path | None = None) -> Path:
    """Extract a DICOM zip safely and return the folder: into the cache (once per content), or into ``into``.
    See :func:`unpack_zip`."""
    return unpack_zip(path, into)[0]


def unpack_zip(path: Path, into: Path | None = None) -> tuple[Path, bool]:
    """(the folder of a DICOM zip's files, whether this call unpacked it); see :func:`extract_zip`.

    Everything is checked before a byte is written (:func:`check_zip_members`), the bytes written are
    counted against the same limit, and the folder is written as ``.part-PID-…`` and renamed when complete;
    a failure or an interruption removes it, and one left by a killed process is removed by the next
    extraction (:func:`lungseg.storage.enforce`).
    """
    from lungseg import storage

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path.name}: not a readable zip ({exc})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        check_zip_members(path.name, members, path.stat().st_size)
        parent = Path(into) if into is not None else cache_dir() / "unzipped"
        target = parent / _file_digest(path)[:24]
        if (target / ".complete").exists():
            storage.hold(target)
            os.utime(target)  # most recently used
            return target, False
        storage.enforce()  # room for this one, and no partial folder of a killed run left behind
        tmp = storage.part_folder(parent)
        _, max_bytes = _zip_limits()
        written = 0
        try:
            for m in members:
                dest = tmp / Path(m.filename.replace("\\", "/"))
                storage.private_dir(dest.parent)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with zf.open(m) as src, os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        written += len(chunk)
                        if written > max_bytes:
                            raise InputError(f"{path.name}: unpacks to more than {max_bytes / 1024**2:.0f} MB; "
                                             "refused")
                        out.write(chunk)
            storage.write_private(tmp / ".complete", b"")
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path.name}: the zip is damaged ({exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed; removed on any failure or interruption
    storage.hold(target)
    storage.enforce()
    return target, True


# --------------------------------------------------------------------------------------------
# DICOM folder


def _is_dicom_file(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def scan_dicom_folder(folder: Path, pixels: bool = False) -> tuple[list[tuple[Path, pydicom.Dataset]], list[str]]:
    """Headers of every DICOM file under ``folder`` (recursively) and notes on skipped files.

    With ``pixels`` each file's pixel data is read in the same pass (reading it costs less than
    opening and parsing the file a second time); :func:`_load_dicom_folder` drops it once used.
    A folder or file that cannot be read for lack of permission is refused, naming it.
    """
    found, skipped, _ = _scan(folder, pixels)
    return found, skipped


def _scan(folder: Path, pixels: bool) -> tuple[list[tuple[Path, pydicom.Dataset]], list[str], list[tuple[Path, str]]]:
    """(DICOM files with their headers, notes on skipped files, files that look like DICOM but do not parse)."""
    found: list[tuple[Path, pydicom.Dataset]] = []
    skipped: list[str] = []
    broken: list[tuple[Path, str]] = []

    def walk_error(exc: OSError) -> None:
        if isinstance(exc, PermissionError):
            where = Path(exc.filename or folder)
            raise InputError(f"{where.name or where}: cannot read this folder (permission denied)")

    if not os.access(folder, os.R_OK | os.X_OK):
        raise InputError(f"{folder.name or folder}: cannot read this folder (permission denied)")
    for root, dirs, files in os.walk(folder, onerror=walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            p = Path(root) / name
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=not pixels)
            except PermissionError:
                raise InputError(f"{p.name}: cannot read this file (permission denied)") from None
            except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
                skipped.append(f"{p.name}: {type(exc).__name__}")
                if p.suffix.lower() == ".dcm" or _is_dicom_file(p):
                    broken.append((p, type(exc).__name__))
                continue
            if "SOPClassUID" not in ds and "Modality" not in ds:
                skipped.append(f"{p.name}: not a DICOM object")
                if _is_dicom_file(p):  # says it is DICOM, but holds no object: damaged
                    broken.append((p, "no DICOM object in it"))
                continue
            found.append((p, ds))
    return found, skipped, broken


def _load_dicom_folder(folder: Path, series_uid: str | None, label: str, skip_unreadable: bool = False) -> LoadedCT:
    found, skipped, broken = _scan(folder, pixels=True)
    if not found:
        raise InputError(f"{label}: no DICOM files found" + (f" ({len(skipped)} unreadable files)" if skipped else ""))
    if broken and not skip_unreadable:
        p, why = broken[0]
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise InputError(f"{label}: {p.name}{more} is not a readable DICOM file ({why}); the volume would miss "
                         "slices. Remove it, or pass --skip-unreadable to go on without it")

    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for p, ds in found:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))

    def modality(items):
        return str(items[0][1].get("Modality", "?"))

    summaries = [
        SeriesSummary(uid, modality(items), len(items), str(items[0][1].get("SeriesDescription", "")))
        for uid, items in series.items()
    ]
    image_series = {uid: items for uid, items in series.items() if modality(items) not in ("RTSTRUCT", "RTPLAN", "RTDOSE", "SEG", "RTRECORD", "SR", "PR", "KO", "REG")}
    ct_series = {uid: items for uid, items in image_series.items() if modality(items) == "CT"}

    if series_uid is not None:
        if series_uid not in series:
            listing = ", ".join(f"{s.series_uid} ({s.modality}, {s.n_files} files)" for s in summaries)
            raise InputError(f"{label}: series {series_uid} not found; the folder holds: {listing}")
        chosen_uid = series_uid
        if modality(series[chosen_uid]) != "CT":
            raise InputError(f"{label}: series {series_uid} is {modality(series[chosen_uid])}, not a CT")
    else:
        if not ct_series:
            kinds = sorted({_describe_non_ct(items[0][1]) for items in image_series.values()} or {s.modality for s in summaries})
            raise InputError(f"{label}: not a CT: the folder holds {', '.join(kinds)} and no CT series")
        chosen_uid = max(ct_series, key=lambda u: len(ct_series[u]))

    items = series[chosen_uid]
    warnings: list[str] = []
    if broken:
        warnings.append(f"skipped {len(broken)} unreadable DICOM file(s) (--skip-unreadable): "
                        + ", ".join(p.name for p, _ in broken[:5]) + (", …" if len(broken) > 5 else ""))
    if len(skipped) > len(broken):
        warnings.append(f"{len(skipped) - len(broken)} non-DICOM files were skipped")
    others = [s for s in summaries if s.series_uid != chosen_uid]
    n_ct = len(ct_series)
    if n_ct > 1 and series_uid is None:
        listing = "; ".join(f"{s.series_uid} ({s.n_files} slices{', ' + s.description if s.description else ''})"
                            for s in summaries if s.series_uid in ct_series and s.series_uid != chosen_uid)
        warnings.append(f"{n_ct} CT series in the folder; chose {chosen_uid} with the most slices ({len(items)}); "
                        f"the others: {listing}; pick one with --series UID")

    source, geometry_notes = _sorted_ct_slices(items, label)
    warnings += geometry_notes
    volume, source_grid = _series_volume(source, label)
    for _, ds in found:  # pixel data of the other files was only read along; free it
        if "PixelData" in ds:
            del ds.PixelData

    first = source.headers[0]
    info = {
        "source": "DICOM",
        "modality": "CT",
        "manufacturer": str(first.get("Manufacturer", "")),
        "model": str(first.get("ManufacturerModelName", "")),
        "slice_thickness_mm": _float_or_none(first.get("SliceThickness")),
        "kvp": _float_or_none(first.get("KVP")),
        "kernel": str(first.get("ConvolutionKernel", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "n_slices": len(source.files),
    }
    loaded = LoadedCT(volume, source_grid, label, info, source, others, warnings=warnings)
    loaded.info.update(_geometry_info(loaded))

    for p, ds in found:
        mod = str(ds.get("Modality", ""))
        for_uid = _referenced_frame_of_reference(ds)
        if mod == "RTSTRUCT":
            names = tuple(str(r.ROIName) for r in ds.get("StructureSetROISequence", []))
            loaded.structure_sets.append(StructureSetRef(p, for_uid, names, for_uid == source.frame_of_reference_uid))
        elif mod == "SEG":
            labels = tuple(str(s.get("SegmentLabel", s.SegmentNumber)) for s in ds.get("SegmentSequence", []))
            loaded.segmentations.append(SegRef(p, for_uid, labels, for_uid == source.frame_of_reference_uid))
    return loaded


def _describe_non_ct(ds: pydicom.Dataset) -> str:
    mod = str(ds.get("Modality", "?"))
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith(SECONDARY_CAPTURE_PREFIX) or mod in ("OT", "SC"):
        return f"{mod} (secondary capture)"
    if mod in ("CR", "DX", "DR", "RG", "XA", "RF", "MG"):
        return f"{mod} (X-ray)"
    return mod


def _float_or_none(v) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _referenced_frame_of_reference(ds: pydicom.Dataset) -> str:
    if "FrameOfReferenceUID" in ds:
        return str(ds.FrameOfReferenceUID)
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in ref:
            return str(ref.FrameOfReferenceUID)
    for roi in ds.get("StructureSetROISequence", []):
        if "ReferencedFrameOfReferenceUID" in roi:
            return str(roi.ReferencedFrameOfReferenceUID)
    return ""


def _sorted_ct_slices(items: list[tuple[Path, pydicom.Dataset]], label: str) -> tuple[DicomSource, list[str]]:
    """Order slices along the slice normal and refuse stacks that would give a wrong volume."""
    notes: list[str] = []
    headers = [ds for _, ds in items]
    first = headers[0]
    sop_class = str(first.get("SOPClassUID", ""))
    if sop_class == ENHANCED_CT_STORAGE or int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{label}: multi-frame (enhanced) CT is not supported; export the series as single-frame slices")

    # the same SOP instance twice (a PACS export quirk) is harmless; keep one copy
    seen: dict[str, int] = {}
    unique: list[tuple[Path, pydicom.Dataset]] = []
    for p, ds in items:
        uid = str(ds.get("SOPInstanceUID", "") or p)
        if uid in seen:
            continue
        seen[uid] = 1
        unique.append((p, ds))
    if len(unique) < len(items):
        notes.append(f"{len(items) - len(unique)} duplicate copies of the same slice were ignored")
    items = unique

    if len(items) < 2:
        raise InputError(f"{label}: the CT series has a single slice; a volume needs at least two")

    for p, ds in items:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if tag not in ds:
                raise InputError(f"{label}: slice {p.name} lacks {tag}; cannot place it in space")

    iop = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in items])
    if np.abs(iop - iop[0]).max() > 1e-3:
        raise InputError(f"{label}: mixed orientations in one series ({len(np.unique(iop.round(3), axis=0))} different ImageOrientationPatient values)")
    row_dir, col_dir = iop[0, :3], iop[0, 3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1) > 1e-2 or abs(row_dir @ col_dir) > 1e-2:
        raise InputError(f"{label}: ImageOrientationPatient is not orthonormal")
    axial_angle = np.degrees(np.arccos(min(1.0, abs(normal[2]))))
    if axial_angle > 45:
        raise InputError(f"{label}: not an axial series (slice normal {axial_angle:.0f}° from the body axis); lungseg reads axial CT")

    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(shapes) > 1:
        raise InputError(f"{label}: slices of different sizes in one series: {sorted(shapes)}")
    spacings = {tuple(round(float(v), 4) for v in ds.PixelSpacing) for _, ds in items}
    if len(spacings) > 1:
        raise InputError(f"{label}: slices with different pixel spacing in one series: {sorted(spacings)}")

    ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    ipp, along = ipp[order], along[order]
    items = [items[i] for i in order]

    tilt = float(first.get("GantryDetectorTilt", 0) or 0)
    steps = np.diff(ipp, axis=0)
    sideways = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if abs(tilt) > 0.01 or sideways.max() > 0.01 * max(1.0, float(np.median(np.abs(steps @ normal)))):
        angle = abs(tilt) if abs(tilt) > 0.01 else float(np.degrees(np.arctan2(sideways.max(), np.median(np.abs(steps @ normal)))))
        raise InputError(f"{label}: gantry tilt of {angle:.1f}° (slices are sheared); resample the series to an untilted grid first")

    dz = np.diff(along)
    if np.any(dz < 1e-3):
        k = int(np.argmin(dz))
        raise InputError(f"{label}: duplicate slice position z = {along[k]:.2f} mm (two different slices at the same place)")
    step = float(np.median(dz))
    bad = np.abs(dz - step) > max(0.05, 0.02 * step)
    if bad.any():
        k = int(np.argmax(np.abs(dz - step)))
        ratio = dz[k] / step
        if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
            missing = int(round(ratio)) - 1
            raise InputError(
                f"{label}: missing slices: a gap of {dz[k]:.2f} mm between z = {along[k]:.2f} and {along[k + 1]:.2f} mm "
                f"where the spacing is {step:.2f} mm ({missing} slice{'s' if missing > 1 else ''} missing)"
            )
        raise InputError(f"{label}: non-uniform slice spacing ({dz.min():.2f} to {dz.max():.2f} mm); resample it to a regular grid first")

    files = [p for p, _ in items]
    headers = [ds for _, ds in items]
    source = DicomSource(
        files=files,
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        sop_instance_uids=[str(ds.SOPInstanceUID) for ds in headers],
        sop_class_uid=sop_class or CT_IMAGE_STORAGE,
        headers=headers,
    )
    # geometry computed here, not taken from the reader, so it follows the validated order
    source.geometry = (row_dir, col_dir, normal, ipp[0], step, [float(v) for v in first.PixelSpacing])
    return source, notes


UNCOMPRESSED_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _series_volume(source: DicomSource, label: str) -> tuple[Volume, Grid]:
    """The series as a canonical int16 HU volume and the grid it is stored on.

    The common case (uncompressed 16-bit slices already in LPS order: rows along +x, columns
    along +y, slices along +z) is assembled straight from the pixel data read with the headers;
    anything else goes through SimpleITK's reader and reorientation.
    """
    row_dir, col_dir, normal, origin, step, ps = source.geometry
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    spacing = (float(ps[1]), float(ps[0]), float(step))
    origin = tuple(float(v) for v in origin)
    hu = None
    if np.allclose(direction, np.eye(3), atol=1e-3):
        hu = _hu_from_pixel_data(source.headers)
    if hu is None:
        image = _read_series_pixels(source, label)
        volume = to_canonical(_hu_image(sitk.GetArrayFromImage(image), image))
    else:
        volume = Volume(hu, spacing, origin)
    first = source.headers[0]
    grid = Grid((int(first.Columns), int(first.Rows), len(source.files)), spacing, origin,
                tuple(float(v) for v in direction.ravel()))
    return volume, grid


def _hu_from_pixel_data(headers: list[pydicom.Dataset]) -> np.ndarray | None:
    """int16 HU ``[slice, row, column]`` from uncompressed 16-bit pixel data, or None (other formats).

    The same values as SimpleITK's float reading followed by :func:`_hu_image`: each slice's
    rescale applied, rounded, and clipped to [−1024, 32767].
    """
    first = headers[0]
    syntax = str(getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax not in UNCOMPRESSED_LITTLE_ENDIAN:
        return None
    rows, cols = int(first.Rows), int(first.Columns)
    for ds in headers:
        if ("PixelData" not in ds or int(ds.get("BitsAllocated", 0)) != 16 or int(ds.get("SamplesPerPixel", 1)) != 1
                or len(ds.PixelData) < 2 * rows * cols):
            return None
    hu = np.empty((len(headers), rows, cols), np.int16)
    for k, ds in enumerate(headers):
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        raw = np.frombuffer(ds.PixelData, dtype="<i2" if signed else "<u2", count=rows * cols).reshape(rows, cols)
        stored = int(ds.get("BitsStored", 16) or 16)
        if stored < 16:
            shift = 16 - stored
            if signed:  # sign-extend from the stored bits
                raw = (raw << shift) >> shift
            else:
                raw = raw & ((1 << stored) - 1)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope == 1.0 and intercept == int(intercept):
            value = raw.astype(np.int32) + int(intercept)
        else:
            value = np.rint(raw * slope + intercept)
        np.clip(value, -1024, 32767, out=hu[k], casting="unsafe")
        del ds.PixelData  # the headers are kept (for exports); their pixels are in the volume now
    return hu


def _read_series_pixels(source: DicomSource, label: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in source.files])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable pixel data"
        bad = _first_unreadable_slice(source.files)
        which = f"slice {bad.name}'s" if bad is not None else "a slice's"
        raise InputError(f"{label}: {which} pixel data is truncated or unreadable ({msg[:160]})") from None
    _refuse_non_finite(sitk.GetArrayViewFromImage(image), label)
    n = len(source.files)
    if image.GetSize()[2] != n:
        raise InputError(f"{label}: read {image.GetSize()[2]} slices, expected {n}")
    row_dir, col_dir, normal, origin, step, ps = source.geometry
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing((float(ps[1]), float(ps[0]), float(step)))
    image.SetDirection(tuple(float(v) for v in np.stack([row_dir, col_dir, normal], axis=1).ravel()))
    return image


def _first_unreadable_slice(files: list[Path]) -> Path | None:
    for f in files:
        try:
            r = sitk.ImageFileReader()
            r.SetFileName(str(f))
            r.Execute()
        except RuntimeError:
            return f
    return None


def _refuse_non_finite(arr: np.ndarray, what: str) -> None:
    """NaN or infinite voxels would silently become 0 HU: refuse, naming how many."""
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{what}: {bad} voxel(s) are NaN or infinite; a CT needs a number (HU) in every voxel")


def _hu_image(hu: np.ndarray, like: sitk.Image) -> sitk.Image:
    """Float HU → int16 HU image (values below −1024, e.g. outside the scan circle, set to −1024)."""
    arr = np.clip(np.rint(hu), -1024, 32767).astype(np.int16)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(like)
    return out


def to_canonical(image: sitk.Image) -> Volume:
    """Reorient to LPS (a permutation/flip of axes, no interpolation)."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    axis_aligned = np.allclose(np.abs(d), np.round(np.abs(d)), atol=1e-3)
    if not axis_aligned:
        angle = np.degrees(np.arccos(np.clip(np.abs(d).max(axis=0).min(), -1, 1)))
        raise InputError(f"oblique image orientation ({angle:.1f}° off the patient axes); resample it to an axis-aligned grid first")
    oriented = sitk.DICOMOrient(image, "LPS")
    vol = Volume.from_sitk(oriented)
    return Volume(vol.array, vol.spacing, vol.origin, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def to_source_grid(volume: Volume, mask: np.ndarray, grid: Grid) -> sitk.Image:
    """Put a canonical-grid array back onto the input's own grid (exact for axis permutations)."""
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the CT's {volume.shape}")
    data = mask.astype(np.uint8) if mask.dtype == bool else mask
    img = volume.to_sitk(data)
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(grid.direction)
    back = sitk.DICOMOrient(img, code)
    target = grid.empty_image(back.GetPixelID())
    if Grid.of(back).matches(grid, tol_mm=1e-2):
        back.CopyInformation(target)
        return back
    return sitk.Resample(back, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, back.GetPixelID())


def _geometry_info(ct: LoadedCT) -> dict:
    v = ct.volume
    return {
        "size_xyz": [int(s) for s in v.grid.size],
        "spacing_mm": [round(s, 4) for s in v.spacing],
        "slice_spacing_mm": round(v.spacing[2], 4),
        "source_orientation": sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ct.source_grid.direction),
    }


# --------------------------------------------------------------------------------------------
# image files

HEADER_BYTES = 1 << 16  # MetaImage and NRRD headers are a few hundred bytes; ElementDataFile ends a MetaImage header
_METAIMAGE_DATA = re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[ \t]*(.*?)[ \t]*\r?$", re.M | re.I)
_NRRD_DATA = re.compile(rb"^data ?file:[ \t]*(.*?)[ \t]*\r?$", re.M | re.I)


def image_data_file(path: str | os.PathLike) -> tuple[str, str] | None:
    """The data file an image header names: ``("MetaImage"|"NRRD", value)``; None when the voxels are in the
    file itself (MetaImage ``LOCAL``, an attached NRRD, NIfTI and other single-file formats)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return None
    if head.startswith(b"NRRD000"):
        m = _NRRD_DATA.search(head.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0])
        return None if m is None else ("NRRD", m.group(1).decode("utf-8", "replace"))
    m = _METAIMAGE_DATA.search(head)
    if m is None:
        return None
    value = m.group(1).decode("utf-8", "replace")
    return None if value.upper() == "LOCAL" else ("MetaImage", value)


def check_image_data_files(path: str | os.PathLike, *, self_contained: bool = False) -> None:
    """Refuse an image whose header points at voxels outside the input.

    A MetaImage (``.mhd``/``.mha``) or detached NRRD (``.nhdr``) header names its data file: a list of files
    (``LIST``), a numbered pattern, a relative or absolute path.  Only one data file that resolves inside the
    header's own folder (links followed) is accepted; with ``self_contained`` (uploads) none at all, so only
    an ``.mha`` with ``LOCAL`` data, an attached ``.nrrd`` or a NIfTI passes.
    """
    p = Path(path)
    named = image_data_file(p)
    if named is None:
        return
    kind, value = named
    if self_contained:
        raise InputError(f"{p.name}: a {kind} header whose voxels are in another file ({value!r}); upload a "
                         "self-contained file (.mha with LOCAL data, .nrrd with attached data, .nii.gz)")
    parts = value.split()
    if not value or parts[0].upper() == "LIST" or "%" in value:
        raise InputError(f"{p.name}: the {kind} header names several data files ({value[:80]!r}); only one data "
                         "file beside the header is read")
    if os.path.isabs(value) or value.startswith("\\") or re.match(r"^[A-Za-z]:", value):
        raise InputError(f"{p.name}: the {kind} header names a data file by an absolute path ({value[:80]!r}); "
                         "only a data file in the header's own folder is read")
    folder = p.parent.resolve()
    data = (p.parent / value).resolve()
    if data.parent != folder and folder not in data.parents:
        raise InputError(f"{p.name}: the {kind} header's data file {value[:80]!r} lies outside the header's folder "
                         "(by '..' or a link); refused")



_NIFTI_FLOATS = {16: "<f4", 64: "<f8"}


def _nifti_layout(head: bytes) -> tuple[str, int, int, int] | None:
    """(byte order, datatype, voxel offset, data bytes) of a NIfTI-1 or NIfTI-2 header; None if not NIfTI."""
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], order + "i4")[0]) if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348:
            dim = np.frombuffer(head[40:56], order + "i2")
            datatype, bitpix = (int(v) for v in np.frombuffer(head[70:74], order + "i2"))
            offset = int(np.frombuffer(head[108:112], order + "f4")[0])
        elif size == 540 and len(head) >= 540:
            datatype, bitpix = (int(v) for v in np.frombuffer(head[12:16], order + "i2"))
            dim = np.frombuffer(head[16:80], order + "i8")
            offset = int(np.frombuffer(head[168:176], order + "i8")[0])
        else:
            continue
        n = int(np.prod([max(1, int(d)) for d in dim[1:1 + max(1, min(7, int(dim[0])))]], dtype=np.int64))
        return order, datatype, offset, n * max(1, bitpix) // 8
    return None


def _check_nifti(path: Path) -> None:
    """A NIfTI whose voxel data is cut short, or holds NaN/infinite values, is refused: SimpleITK reads the
    first as zeros and turns the second into 0 HU, without a word."""
    import gzip

    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            layout = _nifti_layout(f.read(540))
    except (OSError, EOFError):
        return  # not readable as NIfTI: the image reader says so
    if layout is None:
        return
    order, datatype, offset, nbytes = layout
    need = offset + nbytes
    if gz:
        with open(path, "rb") as f:  # a complete single-member gzip ends with the data size (mod 2^32)
            f.seek(-4, os.SEEK_END)
            complete = int.from_bytes(f.read(4), "little") == need % 2**32
    else:
        complete = path.stat().st_size >= need
    if complete and datatype not in _NIFTI_FLOATS:
        return
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            f.seek(offset)
            data = f.read(nbytes + 1)
    except (OSError, EOFError):
        data = b""
    if len(data) < nbytes:
        raise InputError(f"{path.name}: the image data is truncated ({len(data)} of {nbytes} bytes)")
    if datatype in _NIFTI_FLOATS:
        _refuse_non_finite(np.frombuffer(data[:nbytes], order + _NIFTI_FLOATS[datatype][1:]), path.name)


def _load_image_file(path: Path, label: str) -> LoadedCT:
    check_image_data_files(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        ncomp = reader.GetNumberOfComponents()
        size = reader.GetSize()
    except RuntimeError as exc:
        raise InputError(f"{path.name}: not a readable image ({_first_line(exc)})") from None
    if ncomp != 1:
        raise InputError(f"{path.name}: a {ncomp}-channel image; a CT has one value per voxel")
    if dim == 2 or (dim == 3 and size[2] == 1):
        raise InputError(f"{path.name}: a single slice; a volume needs at least two")
    if dim != 3:
        raise InputError(f"{path.name}: a {dim}D image; expected a 3D CT volume")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path.name}: the image data is truncated or unreadable ({_first_line(exc)})") from None
    arr = sitk.GetArrayFromImage(image)
    if not np.issubdtype(arr.dtype, np.number) or arr.size == 0:
        raise InputError(f"{path.name}: no numeric voxel data")
    _refuse_non_finite(arr, path.name)
    lo, hi = float(np.percentile(arr, 0.5)), float(np.percentile(arr, 99.5))
    if lo > -200 or hi > 5000:
        raise InputError(
            f"{path.name}: values {lo:.0f} to {hi:.0f} do not look like CT Hounsfield units (air should be near −1000); "
            "is it an MR or an unscaled image?"
        )
    hu_image = _hu_image(arr.astype(np.float32), image)
    volume = to_canonical(hu_image)
    info = {"source": path.suffix.lstrip(".").upper() or "image", "modality": "CT (assumed)", "n_slices": volume.shape[0],
            "slice_thickness_mm": round(volume.spacing[2], 4)}
    loaded = LoadedCT(volume, Grid.of(image), label, info)
    loaded.info.update(_geometry_info(loaded))
    return loaded


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]


# --------------------------------------------------------------------------------------------
# contours


def match_roi(names: list[str] | tuple[str, ...], wanted: str) -> list[str]:
    """ROI names matching ``wanted``: exact, then ignoring case/spaces/underscores/hyphens, then glob."""
    if wanted in names:
        return [wanted]

    def norm(s: str) -> str:
        return re.sub(r"[\s_\-]+", "", s).lower()

    hits = [n for n in names if norm(n) == norm(wanted)]
    if hits:
        return hits
    if any(ch in wanted for ch in "*?["):
        return [n for n in names if fnmatch.fnmatch(n.lower(), wanted.lower())]
    return []


def load_rtstruct(rtstruct: str | os.PathLike | pydicom.Dataset, ct: LoadedCT, roi: str) -> np.ndarray:
    """Rasterise ROI ``roi`` (a name or a glob such as ``GTV*``, union of matches) on the CT's grid.

    Contours are placed by their z position in the frame of reference, not by the SOP Instance
    UIDs they cite: archives that re-identify images and structure sets separately break those.
    Filling uses the even-odd rule over all contours of a slice, so holes stay holes.
    """
    ds = rtstruct if isinstance(rtstruct, pydicom.Dataset) else _read_dicom(Path(rtstruct), "RTSTRUCT")
    if str(ds.get("Modality", "")) != "RTSTRUCT":
        raise ContourError(f"not an RTSTRUCT (modality {ds.get('Modality', '?')})")
    for_uid = _referenced_frame_of_reference(ds)
    if ct.dicom is not None and for_uid and ct.dicom.frame_of_reference_uid and for_uid != ct.dicom.frame_of_reference_uid:
        raise ContourError("the RTSTRUCT references another frame of reference than this CT (another series or scan)")
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    wanted = match_roi(list(names.values()), roi)
    if not wanted:
        raise ContourError(f"ROI {roi!r} not found; the RTSTRUCT holds: {', '.join(names.values())}")
    numbers = {n for n, name in names.items() if name in wanted}

    vol = ct.volume
    nz, ny, nx = vol.shape
    polygons: dict[int, list[np.ndarray]] = {}
    outside = 0
    n_contours = 0
    for rc in ds.get("ROIContourSequence", []):
        if int(rc.ReferencedROINumber) not in numbers:
            continue
        for c in rc.get("ContourSequence", []):
            if str(c.get("ContourGeometricType", "CLOSED_PLANAR")) not in ("CLOSED_PLANAR", "OPEN_NONPLANAR", "OPEN_PLANAR") :
                continue
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            if len(pts) < 3:
                continue
            n_contours += 1
            idx = vol.physical_to_index(pts)  # [z, y, x]
            kz = float(np.mean(idx[:, 0]))
            k = int(round(kz))
            if k < 0 or k >= nz or abs(kz - k) > 0.5:
                outside += 1
                continue
            polygons.setdefault(k, []).append(idx[:, 1:])
    if n_contours == 0:
        raise ContourError(f"ROI {', '.join(wanted)} has no contours")
    if outside == n_contours:
        raise ContourError(f"every contour of ROI {', '.join(wanted)} lies outside the CT's slices (another scan?)")
    mask = np.zeros(vol.shape, dtype=bool)
    for k, polys in polygons.items():
        mask[k] = fill_polygons_even_odd(polys, (ny, nx))
    return mask


def row_crossings(polygon: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where a closed polygon ((y, x) vertices, pixel centres at integers) crosses the pixel rows.

    For each edge and each row r with min(y) <= r < max(y) (half-open, so a vertex is crossed once):
    the row and the first column whose pixel centre lies strictly right of the crossing (clipped to
    0..nx).  Horizontal edges cross nothing.
    """
    ny, nx = shape
    y0, x0 = polygon[:, 0], polygon[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    keep = y0 != y1
    y0, x0, y1, x1 = y0[keep], x0[keep], y1[keep], x1[keep]
    r0 = np.clip(np.ceil(np.minimum(y0, y1)), 0, ny).astype(int)
    r1 = np.clip(np.ceil(np.maximum(y0, y1)), 0, ny).astype(int)
    counts = np.maximum(r1 - r0, 0)
    if counts.sum() == 0:
        return np.zeros(0, int), np.zeros(0, int)
    edge = np.repeat(np.arange(len(y0)), counts)
    rows = np.concatenate([np.arange(a, b) for a, b in zip(r0, r1) if b > a])
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    cols = np.clip(np.floor(x0[edge] + t * (x1[edge] - x0[edge])).astype(int) + 1, 0, nx)
    return rows, cols


def fill_polygons_even_odd(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside the polygons by the even-odd rule.

    ``polygons`` are arrays of (y, x) vertex coordinates in pixel units (pixel centres at integers).
    Scanline fill: every edge crossing of a pixel row toggles the inside state for the pixels to
    its right; a cumulative sum modulo 2 gives the fill for all polygons at once.
    """
    ny, nx = shape
    toggles = np.zeros((ny, nx + 1), dtype=np.int32)
    for poly in polygons:
        rows, cols = row_crossings(poly, shape)
        np.add.at(toggles, (rows, cols), 1)
    return (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)


SEG_FRACTIONAL_THRESHOLD = 0.5  # a FRACTIONAL SEG voxel is inside from this value (after rescaling to 0..1)


def load_seg(seg: str | os.PathLike | pydicom.Dataset, ct: LoadedCT, segment: str | int | None = None) -> np.ndarray:
    """A DICOM SEG segment (by label or number; default: all segments) as a mask on the CT's grid.

    Read with highdicom: BINARY and LABELMAP voxels are inside when set; FRACTIONAL voxels
    (probability or occupancy, rescaled by the Maximum Fractional Value) when at least
    :data:`SEG_FRACTIONAL_THRESHOLD`.  Frames are placed by their position in the frame of
    reference, so a SEG made on the same scan in any slice order or with empty frames omitted fits.
    """
    import highdicom as hd

    ds = seg if isinstance(seg, pydicom.Dataset) else _read_dicom(Path(seg), "SEG", pixels=True)
    if str(ds.get("Modality", "")) != "SEG":
        raise ContourError(f"not a DICOM SEG (modality {ds.get('Modality', '?')})")
    for_uid = str(ds.get("FrameOfReferenceUID", ""))
    if ct.dicom is not None and for_uid and ct.dicom.frame_of_reference_uid and for_uid != ct.dicom.frame_of_reference_uid:
        raise ContourError("the SEG references another frame of reference than this CT (another series or scan)")
    try:
        hseg = hd.seg.Segmentation.from_dataset(ds, copy=isinstance(seg, pydicom.Dataset))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ContourError(f"not a readable DICOM SEG ({_first_line(exc)})") from None
    labels = {int(s.SegmentNumber): str(s.get("SegmentLabel", s.SegmentNumber)) for s in hseg.SegmentSequence}
    if segment is None:
        numbers = set(labels)
    elif isinstance(segment, int) or str(segment).isdigit():
        numbers = {int(segment)} & set(labels)
    else:
        numbers = {n for n, name in labels.items() if name in match_roi(list(labels.values()), str(segment))}
    if not numbers:
        raise ContourError(f"segment {segment!r} not found; the SEG holds: {', '.join(labels.values())}")
    if not numbers & _seg_frame_segments(hseg):
        raise ContourError(f"segment {segment!r} has no frames")
    try:
        volume = hseg.get_volume(segment_numbers=sorted(numbers), combine_segments=False, rescale_fractional=True)
    except (ValueError, RuntimeError, AttributeError, KeyError, IndexError) as exc:
        raise ContourError(f"the SEG's frames do not form a volume ({_first_line(exc)})") from None
    if volume is None:
        raise ContourError("the SEG's frames do not form a regularly spaced volume")
    inside = _seg_inside(hseg, np.asarray(volume.array))
    return _place_seg_voxels(np.argwhere(inside.any(axis=-1)), volume.affine, ct.volume)


def _seg_frame_segments(hseg) -> set[int]:
    """The segment numbers that have at least one frame (a LABELMAP SEG's frames hold every segment)."""
    if "SegmentIdentificationSequence" in hseg.SharedFunctionalGroupsSequence[0]:
        return {int(hseg.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0].ReferencedSegmentNumber)}
    if str(hseg.get("SegmentationType", "")) == "LABELMAP":
        return {int(s.SegmentNumber) for s in hseg.SegmentSequence}
    return {int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for fg in hseg.PerFrameFunctionalGroupsSequence if "SegmentIdentificationSequence" in fg}


def _seg_inside(hseg, values: np.ndarray) -> np.ndarray:
    """Inside voxels of highdicom's per-segment volume (slices, rows, columns, segments)."""
    import highdicom as hd

    if hseg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL:
        return values >= SEG_FRACTIONAL_THRESHOLD
    return values > 0


def _place_seg_voxels(sij: np.ndarray, affine: np.ndarray, vol: Volume) -> np.ndarray:
    """SEG voxel indices (slice, row, column) → a mask on the CT's canonical grid, via patient space."""
    mask = np.zeros(vol.shape, dtype=bool)
    if len(sij) == 0:
        return mask
    pts = sij @ affine[:3, :3].T + affine[:3, 3]  # LPS mm
    idx = vol.physical_to_index(pts)
    ridx = np.rint(idx)
    if np.abs(idx - ridx).max() > 0.1:
        raise ContourError("the SEG's pixel grid does not match the CT's grid; resample it onto the CT first")
    ridx = ridx.astype(int)
    if not np.all((ridx >= 0) & (ridx < np.array(vol.shape))):
        raise ContourError("the SEG extends outside the CT volume (another scan?)")
    mask[ridx[:, 0], ridx[:, 1], ridx[:, 2]] = True
    return mask


def load_label(path: str | os.PathLike, ct: LoadedCT, value: int | None = None) -> np.ndarray:
    """A label image (NIfTI/NRRD/MHA) as a mask on the CT's grid: voxels == ``value`` or, by default, > 0."""
    p = Path(path)
    try:
        check_image_data_files(p)
    except InputError as exc:
        raise ContourError(str(exc)) from None
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise ContourError(f"{p.name}: not a readable label image ({_first_line(exc)})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ContourError(f"{p.name}: a label file must be a 3D single-channel image")
    try:
        oriented = sitk.DICOMOrient(image, "LPS")
    except RuntimeError as exc:
        raise ContourError(f"{p.name}: cannot orient the label image ({_first_line(exc)})") from None
    vol = ct.volume
    if not Grid.of(oriented).matches(vol.grid, tol_mm=0.05 * min(vol.spacing)):
        # same patient space, other sampling: nearest-neighbour resampling onto the CT
        ref = vol.to_sitk(np.zeros(vol.shape, np.uint8))
        lo = np.array(oriented.TransformIndexToPhysicalPoint((0, 0, 0)))
        hi = np.array(oriented.TransformIndexToPhysicalPoint([s - 1 for s in oriented.GetSize()]))
        vlo, vhi = vol.index_to_physical([[0, 0, 0]])[0], vol.index_to_physical([[s - 1 for s in vol.shape]])[0]
        overlap = np.all(np.minimum(np.maximum(lo, hi), vhi) >= np.maximum(np.minimum(lo, hi), vlo))
        if not overlap:
            raise ContourError(f"{p.name}: the label image does not overlap the CT in patient space (another scan?)")
        oriented = sitk.Resample(oriented, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    arr = sitk.GetArrayFromImage(oriented)
    mask = arr > 0 if value is None else arr == value
    if value is not None and not mask.any():
        present = [int(v) for v in np.unique(arr) if v != 0][:20]
        raise ContourError(f"{p.name}: label value {value} not present (values: {present})")
    return mask


def _read_dicom(p: Path, what: str, pixels: bool = False) -> pydicom.Dataset:
    if not p.exists():
        raise ContourError(f"{p}: no such file")
    try:
        return pydicom.dcmread(p, stop_before_pixels=not pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise ContourError(f"{p.name}: not a readable DICOM {what} ({type(exc).__name__})") from None


def find_structure_set(ct: LoadedCT) -> StructureSetRef | None:
    """The RTSTRUCT beside the CT that references its frame of reference, if any."""
    for s in ct.structure_sets:
        if s.references_ct:
            return s
    return None


def load_contour(path: str | os.PathLike, ct: LoadedCT, roi: str | None = None) -> np.ndarray:
    """Any manual contour file (RTSTRUCT, SEG or label image) as a mask on the CT's grid."""
    p = Path(path)
    if p.name.lower().endswith(IMAGE_SUFFIXES):
        return load_label(p, ct, None if roi is None or not str(roi).isdigit() else int(roi))
    ds = _read_dicom(p, "contour")
    mod = str(ds.get("Modality", ""))
    if mod == "RTSTRUCT":
        if roi is None:
            raise ContourError(f"{p.name}: name the ROI to load; the RTSTRUCT holds: {', '.join(str(r.ROIName) for r in ds.StructureSetROISequence)}")
        return load_rtstruct(ds, ct, roi)
    if mod == "SEG":
        return load_seg(_read_dicom(p, "SEG", pixels=True), ct, roi)
    raise ContourError(f"{p.name}: a {mod or 'non-contour'} file, not an RTSTRUCT, SEG or label image")


def write_mask(loaded, mask, path: str | Path) -> Path:
    """A canonical-grid mask written onto the input's own grid (uint8, compressed)."""
    out = Path(path)
    try:
        sitk.WriteImage(loaded.mask_to_source(mask), str(out), useCompression=True)
    except RuntimeError as exc:
        Path(out).unlink(missing_ok=True)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise InputError(f"{out}: cannot write the mask ({lines[-1][:160] if lines else 'write failed'})") from None
    return out
