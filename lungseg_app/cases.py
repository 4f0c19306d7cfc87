"""What the app can open: the demo, the data folder, uploads (and, in department mode, nothing else).

Opening itself is :func:`lungseg.case.open_case`; this module only finds sources and keeps them inside
the configured data folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from lungseg import storage
from lungseg.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CASE_SUFFIXES = (".zip", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def data_root() -> Path:
    return Path(os.environ.get("LUNGSEG_DATA", REPO.parent / "shared" / "data"))


def app_cache_dir() -> Path:
    """The app's folder of patient data (``LUNGSEG_APP_CACHE``), 0700; see :mod:`lungseg.storage`."""
    return storage.private_dir(storage.app_cache_root())


def department_mode() -> bool:
    """Department mode (``LUNGSEG_DEPARTMENT=1``): sign-in on every page with images or case lists,
    cases only from the data folder, uploads capped.  Off on a single-user localhost install."""
    return os.environ.get("LUNGSEG_DEPARTMENT", "").strip().lower() in ("1", "true", "yes", "on")


def max_upload_bytes() -> int:
    return int(float(os.environ.get("LUNGSEG_MAX_UPLOAD_MB", "1024")) * 1024**2)


def list_data_folder(root: Path | None = None) -> list[Path]:
    """Cases in the data folder: zips, image files and DICOM folders (one level deep; no links out)."""
    root = root or data_root()
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if p.name.startswith("."):
            continue
        try:
            inside_data_folder(p, root)
        except InputError:
            continue
        low = p.name.lower()
        if p.is_file() and low.endswith(CASE_SUFFIXES):
            found.append(p)
        elif p.is_dir() and _looks_like_dicom_folder(p):
            found.append(p)
    return found


def inside_data_folder(path: str | Path, root: Path | None = None) -> Path:
    """``path`` resolved, refused unless it lies inside the data folder (no ``..``, no link pointing out,
    also for any file inside a DICOM folder)."""
    root = (root or data_root()).resolve()
    p = Path(path)
    if not p.is_absolute():
        p = root / p
    resolved = p.resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError(f"{Path(path).name}: outside the data folder; only cases in the data folder can be opened")
    if resolved.is_dir():
        for f in resolved.rglob("*"):
            if f.is_symlink():
                target = f.resolve()
                if target != root and root not in target.parents:
                    raise InputError(f"{Path(path).name}: holds a link out of the data folder")
    return resolved


def _looks_like_dicom_folder(p: Path, limit: int = 200) -> bool:
    n = 0
    for f in p.rglob("*"):
        n += 1
        if n > limit:
            return False
        if f.is_file():
            if f.suffix.lower() == ".dcm":
                return True
            try:
                with open(f, "rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
            except OSError:
                pass
    return False


def rtstruct_roi_names(path: Path) -> list[str] | None:
    """ROI names of an RTSTRUCT file (None when it is not one)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "StructureSetROISequence"])
    except Exception:  # noqa: BLE001 - not DICOM: a label image or SEG
        return None
    if str(ds.get("Modality", "")) != "RTSTRUCT":
        return None
    return [str(r.ROIName) for r in ds.get("StructureSetROISequence", [])]


def save_upload(name: str, data: bytes) -> Path:
    """An uploaded file kept under the app cache by its content hash (0600 in a 0700 folder); refused past the
    size cap, and refused when it is not self-contained (a header naming another file for its voxels)."""
    from lungseg.imaging.io import check_image_data_files

    if len(data) > max_upload_bytes():
        raise InputError(f"{Path(name).name}: {len(data) / 1024**2:.0f} MB is over the upload limit of "
                         f"{max_upload_bytes() / 1024**2:.0f} MB")
    d = storage.private_dir(app_cache_dir() / "uploads" / hashlib.sha256(data).hexdigest()[:24])
    p = d / (Path(name).name or "upload")
    if not p.exists():
        storage.write_private(p, data)
    try:
        check_image_data_files(p, self_contained=True)
    except InputError:
        shutil.rmtree(d, ignore_errors=True)
        raise
    storage.hold(d)
    storage.enforce()
    return p


def one_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
