"""Opening cases for the app: demo, data folder, uploads; in-process and on-disk result caches.

A :class:`Case` holds the loaded CT, the pipeline result and any manual contours.  Results are cached
on disk under ``data/cache/`` (``LUNGSEG_APP_CACHE`` overrides) keyed by the CT's content hash and the
tumour model's version, and the loaded CT itself is cached by the source file's path/size/mtime, so
reopening a case skips both loading and processing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lungseg.errors import LungsegError
from lungseg.imaging.io import LoadedCT, find_structure_set, load_contour, load_rtstruct
from lungseg.tumour.lesions import lesion_table
from lungseg.lungs import LungResult
from lungseg.pipeline import CaseResult, content_hash, process_case

REPO = Path(__file__).resolve().parents[1]
Progress = Callable[[str, float], None]
CACHE_FORMAT = 1
DEMO_KEY = "demo-phantom"
CASE_SUFFIXES = (".zip", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def data_root() -> Path:
    return Path(os.environ.get("LUNGSEG_DATA", REPO.parent / "shared" / "data"))


def app_cache_dir() -> Path:
    d = Path(os.environ.get("LUNGSEG_APP_CACHE", REPO / "data" / "cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class Case:
    key: str  # content hash (demo: "demo-phantom")
    label: str
    loaded: LoadedCT
    result: CaseResult
    manual: dict[str, np.ndarray] = field(default_factory=dict)  # contour name → bool mask
    manual_name: str | None = None  # the contour shown as "manual"
    from_cache: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def manual_mask(self) -> np.ndarray | None:
        return self.manual.get(self.manual_name) if self.manual_name else None

    def roi_names(self) -> list[str]:
        return self.loaded.roi_names()

    def lesions(self) -> tuple[str, list[dict]]:
        """The lesion table to show: the model's, else the manual contour's."""
        if self.result.tumour is not None:
            return "automatic tumour", self.result.lesions
        m = self.manual_mask
        if m is not None and m.any():
            key = ("manual", self.manual_name)
            cache = self.__dict__.setdefault("_lesion_cache", {})
            if key not in cache:
                cache[key] = lesion_table(m, self.loaded.volume, self.result.lungs.spine_x)
            return f"manual contour ({self.manual_name})", cache[key]
        return "", []


# --------------------------------------------------------------------------------------------
# what can be opened


def list_data_folder(root: Path | None = None) -> list[Path]:
    """Cases in the data folder: zips, image files and DICOM folders (one level deep)."""
    root = root or data_root()
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if p.name.startswith("."):
            continue
        low = p.name.lower()
        if p.is_file() and low.endswith(CASE_SUFFIXES):
            found.append(p)
        elif p.is_dir() and _looks_like_dicom_folder(p):
            found.append(p)
    return found


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


def default_roi(names: list[str] | tuple[str, ...]) -> str | None:
    """GTV-1 if present, else the first GTV*, else None."""
    if "GTV-1" in names:
        return "GTV-1"
    for n in names:
        if n.upper().startswith("GTV"):
            return n
    return None


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


# --------------------------------------------------------------------------------------------
# model


def load_predictor():
    """(predictor or None, note).  Never raises: a missing or broken model means lung region only."""
    try:
        from lungseg.tumour import segment  # noqa: PLC0415 - optional, built separately
    except ImportError:
        return None, "No tumour model installed (lungseg.tumour.segment missing): showing the lung region only."
    loader = getattr(segment, "load_default_predictor", None)
    if loader is None:
        return None, "No tumour model available: showing the lung region only."
    try:
        predictor = loader()
    except Exception as exc:  # noqa: BLE001
        return None, f"Tumour model could not be loaded ({_one_line(exc)}): showing the lung region only."
    if predictor is None:
        return None, "No tumour model available: showing the lung region only."
    return predictor, None


def model_version(predictor) -> str:
    return str(getattr(predictor, "version", "unknown")) if predictor is not None else "none"


# --------------------------------------------------------------------------------------------
# opening


def demo_loaded() -> tuple[LoadedCT, np.ndarray]:
    """The synthetic phantom as a LoadedCT and its true tumour mask."""
    from lungseg.imaging.phantom import demo_case

    return demo_case()


def source_key(path: Path) -> str:
    st_ = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st_.st_size}|{st_.st_mtime_ns}|{CACHE_FORMAT}".encode()).hexdigest()[:24]


def load_ct_cached(path: Path, progress: Progress) -> tuple[LoadedCT, bool]:
    """load_ct with an on-disk pickle keyed by the source's path, size and mtime."""
    from lungseg.imaging.io import load_ct

    f = app_cache_dir() / f"ct-{source_key(path)}.pkl"
    if f.exists():
        try:
            with open(f, "rb") as fh:
                loaded = pickle.load(fh)
            # structure sets point into the unzip cache; only trust the pickle if they still exist
            if all(s.path.exists() for s in loaded.structure_sets):
                return loaded, True
        except Exception:  # noqa: BLE001 - a stale or truncated cache entry is just a miss
            pass
    progress(f"Reading {path.name}", 0.02)
    loaded = load_ct(path)
    tmp = f.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(loaded, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(f)
    except Exception:  # noqa: BLE001 - caching is best effort
        tmp.unlink(missing_ok=True)
    return loaded, False


def _result_path(key: str, version: str) -> Path:
    v = hashlib.sha256(version.encode()).hexdigest()[:8]
    return app_cache_dir() / f"result-{key}-{v}.npz"


def save_result(key: str, version: str, result: CaseResult) -> None:
    lr = result.lungs
    shape = lr.lung_region.shape
    arrays = {
        "shape": np.array(shape),
        "lung_region": np.packbits(lr.lung_region.ravel()),
        "lungs": np.packbits(lr.lungs.ravel()),
        "left_lung": np.packbits(lr.left_lung.ravel()),
        "right_lung": np.packbits(lr.right_lung.ravel()),
        "spine_x": lr.spine_x.astype(np.float32),
    }
    if result.tumour is not None:
        arrays["tumour"] = np.packbits(result.tumour.ravel())
    meta = {"lesions": result.lesions, "notes": result.notes, "model_version": result.model_version,
            "seconds": result.seconds, "skipped": lr.skipped, "voxel_ml": lr.voxel_ml}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    f = _result_path(key, version)
    tmp = f.with_name(f.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(f)


def load_result(key: str, version: str, loaded: LoadedCT) -> CaseResult | None:
    f = _result_path(key, version)
    if not f.exists():
        return None
    try:
        with np.load(f) as z:
            shape = tuple(int(s) for s in z["shape"])
            n = int(np.prod(shape))

            def bits(name):
                return np.unpackbits(z[name], count=n).astype(bool).reshape(shape)

            meta = json.loads(z["meta"].tobytes().decode())
            lungs = LungResult(lungs=bits("lungs"), lung_region=bits("lung_region"), isolated=loaded.volume,
                               left_lung=bits("left_lung"), right_lung=bits("right_lung"),
                               body=np.zeros((0,), bool), couch=np.zeros((0,), bool),
                               spine_x=z["spine_x"].astype(np.float64), skipped=meta["skipped"],
                               voxel_ml=meta["voxel_ml"])
            tumour = bits("tumour") if "tumour" in z.files else None
    except Exception:  # noqa: BLE001 - stale/corrupt cache is a miss
        return None
    return CaseResult(lungs=lungs, tumour=tumour, lesions=meta["lesions"], model_version=meta["model_version"],
                      seconds=meta["seconds"], notes=meta["notes"])


def process_cached(loaded: LoadedCT, key: str, predictor, progress: Progress) -> tuple[CaseResult, bool]:
    version = model_version(predictor)
    cached = load_result(key, version, loaded)
    if cached is not None:
        return cached, True
    try:
        result = process_case(loaded, predictor=predictor, progress=progress)
    except LungsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model failure must not take the app down
        if predictor is None:
            raise
        progress(f"Tumour model failed ({_one_line(exc)}); lung region only", 0.5)
        result = process_case(loaded, predictor=None, progress=progress)
        result.notes.append(f"Tumour model failed on this case ({_one_line(exc)}): showing the lung region only.")
        return result, False
    try:
        save_result(key, version, result)
    except OSError:
        pass
    return result, False


def open_demo(predictor, progress: Progress) -> Case:
    t = time.perf_counter()
    loaded, truth = demo_loaded()
    result, hit = process_cached(loaded, content_hash(loaded), predictor, progress)
    case = Case(DEMO_KEY, loaded.label, loaded, result, {"phantom truth": truth}, "phantom truth", hit)
    case.seconds["open"] = time.perf_counter() - t
    return case


def open_path(path: Path, predictor, progress: Progress, contour: Path | None = None, roi: str | None = None) -> Case:
    """Load + process a CT (cached), then attach a manual contour: the given file, else the RTSTRUCT
    beside the CT with ``roi`` (default GTV-1 / first GTV*)."""
    t = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise LungsegError(f"{path}: no such file or folder")
    loaded, ct_hit = load_ct_cached(path, progress)
    progress("Checking the results cache", 0.1)
    key = content_hash(loaded)
    result, res_hit = process_cached(loaded, key, predictor, progress)
    case = Case(key, loaded.label, loaded, result, from_cache=ct_hit and res_hit)
    if contour is not None:
        attach_contour_file(case, contour, roi)
    else:
        ss = find_structure_set(loaded)
        name = roi or (default_roi(ss.roi_names) if ss else None)
        if ss is not None and name:
            attach_rtstruct_roi(case, name)
    case.seconds["open"] = time.perf_counter() - t
    return case


def attach_rtstruct_roi(case: Case, roi: str) -> None:
    """Show ROI ``roi`` of the structure set beside the CT as the manual contour."""
    if roi not in case.manual:
        ss = find_structure_set(case.loaded)
        if ss is None:
            raise LungsegError(f"{case.label}: no structure set referencing this CT")
        case.manual[roi] = load_rtstruct(ss.path, case.loaded, roi)
    case.manual_name = roi


def attach_contour_file(case: Case, path: Path, roi: str | None = None) -> None:
    name = f"{Path(path).name}" + (f" · {roi}" if roi else "")
    if name not in case.manual:
        case.manual[name] = load_contour(path, case.loaded, roi)
    case.manual_name = name


def summary(case: Case) -> dict:
    """What the app shows about a case: geometry and scanner, never patient identifiers."""
    info = case.loaded.info
    v = case.loaded.volume
    sx, sy, sz = v.spacing
    rows = {
        "Case": case.label,
        "Source": info.get("source", ""),
        "Dimensions (x × y × z)": " × ".join(str(s) for s in v.grid.size),
        "Pixel spacing (mm)": f"{sx:.3g} × {sy:.3g}",
        "Slice spacing (mm)": f"{sz:.3g}",
        "Slice thickness (mm)": str(info.get("slice_thickness_mm", "")),
        "Scanner": " ".join(str(info.get(k, "")) for k in ("manufacturer", "model")).strip() or "—",
        "kVp / kernel": " / ".join(str(info[k]) for k in ("kvp", "kernel") if info.get(k)) or "—",
        "ROIs in structure set": ", ".join(case.roi_names()) or "—",
        "Lung region (ml)": f"{case.result.lungs.region_volume_ml:.0f}" if case.result.lungs.voxel_ml else "—",
    }
    return rows


def _one_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def one_line(exc: Exception) -> str:
    return _one_line(exc)
