"""One case, from its sources to everything the app, the CLI and the study show.

A :class:`CaseSource` says where the CT, the manual contour and the automatic contour come from;
:func:`open_case` turns it into an immutable :class:`Case` (the loaded CT, the lung region, both
contours and the lesion table).  Results are cached on disk by :class:`ResultCache` (keyed by the
CT's content hash, the model version and the parameters; LRU within a size cap), so a case opened
once reopens without loading or processing again.

The automatic contour is always named by the caller: ``model`` (the U-Net, with its version) or
``file`` (a mask, SEG or RTSTRUCT ROI made by any other tool).  A stand-in (the manual contour
dilated and shifted) exists for demos and tests only, and only when the caller asks for it by name.

Every CLI command, the app pages, the study and the benchmarks build cases here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from lungseg.errors import InputError, LungsegError

Progress = Callable[[str, float], None]

CACHE_FORMAT = 2
DEMO = "demo"
AUTOMATIC_KINDS = ("model", "file", "stand-in")
MANUAL_KINDS = ("rtstruct", "seg", "label", "demo-truth")
DEFAULT_DISK_CAP_MB = 5 * 1024


# --------------------------------------------------------------------------------------------
# where a case comes from


@dataclass(frozen=True)
class ManualSource:
    """The manual contour.

    ``rtstruct``: ROI ``roi`` (a name or glob such as ``GTV*``) of the RTSTRUCT at ``path``, or of the
    structure set found beside the CT when ``path`` is None; with no ``roi``, the default GTV (``GTV-1``,
    else the first ``GTV*``).  ``seg``: segment ``roi`` (label or number;
    all segments when None) of a DICOM SEG.  ``label``: voxels equal to ``roi`` (any > 0 when None) of a
    label image on the CT's grid.  ``demo-truth``: the demo phantom's known tumour.
    """

    kind: str = "rtstruct"
    path: str | None = None
    roi: str | None = None

    def __post_init__(self):
        if self.kind not in MANUAL_KINDS:
            raise InputError(f"manual contour kind {self.kind!r}: expected one of {', '.join(MANUAL_KINDS)}")
        if self.kind in ("seg", "label") and not self.path:
            raise InputError(f"a {self.kind} manual contour needs a file")

    @property
    def name(self) -> str:
        if self.kind == "demo-truth":
            return "phantom truth"
        if self.kind == "rtstruct":
            return str(self.roi or "GTV (default)")
        return Path(str(self.path)).name + (f" · {self.roi}" if self.roi else "")


@dataclass(frozen=True)
class AutomaticSource:
    """The automatic contour: ``model`` (weights at ``model``, the shipped model when None), ``file``
    (a mask, SEG or RTSTRUCT ROI ``roi`` at ``path``, made by any tool), or ``stand-in`` (demo/test only)."""

    kind: str = "model"
    model: str | None = None
    path: str | None = None
    roi: str | None = None

    def __post_init__(self):
        if self.kind not in AUTOMATIC_KINDS:
            raise InputError(f"automatic contour kind {self.kind!r}: expected one of {', '.join(AUTOMATIC_KINDS)}")
        if self.kind == "file" and not self.path:
            raise InputError("an automatic contour of kind 'file' needs its path")

    @property
    def description(self) -> str:
        if self.kind == "model":
            return "tumour model output"
        if self.kind == "file":
            return f"contour from {Path(str(self.path)).name}" + (f" ({self.roi})" if self.roi else "")
        return "stand-in: the manual contour dilated and shifted (demo/test only, not a model)"


@dataclass(frozen=True)
class CaseSource:
    """Everything needed to open a case. ``ct`` is a file, a DICOM folder, a zip, or ``"demo"``."""

    ct: str
    automatic: AutomaticSource = AutomaticSource()
    manual: ManualSource | None = None
    series_uid: str | None = None
    label: str | None = None

    def __post_init__(self):
        if not self.ct:
            raise InputError("a case needs its CT")
        if self.automatic.kind == "stand-in" and self.manual is None:
            raise InputError("the stand-in automatic contour is made from the manual contour: give one")

    @classmethod
    def demo(cls, automatic: AutomaticSource | None = None) -> "CaseSource":
        return cls(DEMO, automatic or AutomaticSource("model"), ManualSource("demo-truth"))

    @property
    def is_demo(self) -> bool:
        return self.ct == DEMO

    def as_dict(self) -> dict:
        return {"ct": self.ct, "series_uid": self.series_uid, "label": self.label,
                "manual": asdict(self.manual) if self.manual else None, "automatic": asdict(self.automatic)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None) -> "CaseSource":
        """A case record as JSON: ``{"ct": PATH|"demo", "manual": {...}, "automatic": {...}}``.

        Relative paths are taken from ``base``.  Raises :class:`InputError` naming the bad field.
        """
        if not isinstance(data, Mapping):
            raise InputError("a case record must be a JSON object")
        unknown = set(data) - {"ct", "manual", "automatic", "series_uid", "label", "case_id"}
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}")

        def path(value: Any, what: str) -> str:
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{what}: expected a path")
            p = Path(value).expanduser()
            if base is not None and not p.is_absolute():
                p = base / p
            return str(p)

        ct = data.get("ct")
        if ct != DEMO:
            ct = path(ct, "ct")
        auto = data.get("automatic")
        if not isinstance(auto, Mapping) or "kind" not in auto:
            raise InputError('automatic: required, e.g. {"kind": "model"} or {"kind": "file", "path": ...}')
        extra = set(auto) - {"kind", "model", "path", "roi"}
        if extra:
            raise InputError(f"automatic: unknown field(s) {', '.join(sorted(extra))}")
        automatic = AutomaticSource(
            kind=str(auto["kind"]),
            model=path(auto["model"], "automatic.model") if auto.get("model") else None,
            path=path(auto["path"], "automatic.path") if auto.get("path") else None,
            roi=str(auto["roi"]) if auto.get("roi") is not None else None)
        man = data.get("manual")
        manual = None
        if man is not None:
            if not isinstance(man, Mapping) or "kind" not in man:
                raise InputError('manual: expected e.g. {"kind": "rtstruct", "roi": "GTV-1"}')
            extra = set(man) - {"kind", "path", "roi"}
            if extra:
                raise InputError(f"manual: unknown field(s) {', '.join(sorted(extra))}")
            manual = ManualSource(kind=str(man["kind"]),
                                  path=path(man["path"], "manual.path") if man.get("path") else None,
                                  roi=str(man["roi"]) if man.get("roi") is not None else None)
        if ct == DEMO and manual is None:
            manual = ManualSource("demo-truth")
        return cls(ct=ct, automatic=automatic, manual=manual, series_uid=data.get("series_uid") or None,
                   label=data.get("label") or None)

    def check_exists(self) -> None:
        """Every named file is there (one-line error otherwise)."""
        for what, p in (("ct", None if self.is_demo else self.ct),
                        ("manual", self.manual.path if self.manual else None),
                        ("automatic", self.automatic.path), ("automatic model", self.automatic.model)):
            if p and not Path(p).exists():
                raise InputError(f"{what}: {p} does not exist")


# --------------------------------------------------------------------------------------------
# the opened case


@dataclass(frozen=True, eq=False)
class Contour:
    """One contour on the CT's canonical grid, with its lesion table (largest first)."""

    role: str  # "automatic" | "manual"
    name: str
    mask: np.ndarray  # bool [z, y, x], read-only
    lesions: tuple[dict, ...]
    description: str = ""
    version: str | None = None  # the model version for a model contour

    def lesion_mask(self, numbers: "list[int] | tuple[int, ...] | None" = None) -> np.ndarray:
        """The mask of the given lesions (numbered as in the table, largest first); all when None."""
        if numbers is None:
            return self.mask
        from scipy import ndimage as ndi

        known = {int(r["lesion"]) for r in self.lesions}
        bad = sorted(set(int(n) for n in numbers) - known)
        if bad:
            raise InputError(f"{self.name}: no lesion {', '.join(map(str, bad))} "
                             f"(the table has {len(known)} lesion{'s' if len(known) != 1 else ''})")
        labels, _ = ndi.label(self.mask, structure=np.ones((3, 3, 3), bool))
        out = np.zeros_like(self.mask)
        for row in self.lesions:
            if int(row["lesion"]) in numbers:
                z, y, x = row["seed_voxel"]
                out |= labels == labels[z, y, x]
        return out

    @property
    def volume_voxels(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class Case:
    """An opened case. Immutable: share it freely between users and threads."""

    key: str  # content hash of the CT voxels and geometry
    label: str  # the case's own label, never a patient identifier
    source: CaseSource
    ct: Any  # lungseg.imaging.io.LoadedCT
    lungs: Any | None  # lungseg.lungs.LungResult (None while opening progressively)
    automatic: Contour | None
    manual: Contour | None
    stage: str = "done"  # "ct" → "lungs" → "done" while opening progressively
    from_cache: bool = False
    seconds: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def volume(self):
        return self.ct.volume

    @property
    def lesions(self) -> tuple[dict, ...]:
        return self.automatic.lesions if self.automatic is not None else ()

    def contour(self, role: str) -> Contour:
        c = self.automatic if role == "automatic" else self.manual if role == "manual" else None
        if role not in ("automatic", "manual"):
            raise InputError(f"no contour {role!r}: choose automatic or manual")
        if c is None:
            raise InputError(f"{self.label}: no {role} contour")
        return c

    def nbytes(self) -> int:
        n = self.ct.volume.array.nbytes
        if self.lungs is not None:
            n += sum(getattr(self.lungs, k).nbytes for k in ("lungs", "lung_region", "left_lung", "right_lung",
                                                             "body", "couch"))
            n += self.lungs.isolated.array.nbytes
        for c in (self.automatic, self.manual):
            if c is not None:
                n += c.mask.nbytes
        return int(n)

    def summary(self) -> dict:
        """What the app shows about a case: geometry and scanner, never patient identifiers."""
        info = self.ct.info
        v = self.ct.volume
        sx, sy, sz = v.spacing
        return {
            "Case": self.label,
            "Source": info.get("source", ""),
            "Dimensions (x × y × z)": " × ".join(str(s) for s in v.grid.size),
            "Pixel spacing (mm)": f"{sx:.3g} × {sy:.3g}",
            "Slice spacing (mm)": f"{sz:.3g}",
            "Slice thickness (mm)": str(info.get("slice_thickness_mm", "")),
            "Scanner": " ".join(str(info.get(k, "")) for k in ("manufacturer", "model")).strip() or "—",
            "kVp / kernel": " / ".join(str(info[k]) for k in ("kvp", "kernel") if info.get(k)) or "—",
            "ROIs in structure set": ", ".join(self.ct.roi_names()) or "—",
            "Lung region (ml)": f"{self.lungs.region_volume_ml:.0f}" if self.lungs is not None else "—",
            "Automatic contour": self.automatic.description if self.automatic else "—",
            "Manual contour": self.manual.name if self.manual else "—",
        }


# --------------------------------------------------------------------------------------------
# caches


def content_hash(volume) -> str:
    """A key for caching results: the voxels and their geometry."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(volume.array).tobytes())
    h.update(repr((volume.spacing, volume.origin, volume.direction)).encode())
    return h.hexdigest()[:32]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_identity(path: str | Path) -> str:
    """A cheap key for a CT source on disk: its resolved path, size and modification time
    (for a folder, those of every file in it)."""
    p = Path(path).resolve()
    st = p.stat()
    parts = [str(p), st.st_size, st.st_mtime_ns]
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                s = f.stat()
                parts += [str(f.relative_to(p)), s.st_size, s.st_mtime_ns]
    return _digest(parts)


def default_cache_dir() -> Path:
    return Path(os.environ.get("LUNGSEG_RESULT_CACHE") or Path(os.environ.get("LUNGSEG_CACHE", Path.home() / ".cache" / "lungseg")) / "results")


class ResultCache:
    """Case results on disk: the canonical CT, lung isolation, contours and lesion tables.

    Entries are plain ``.npy``/``.npz`` and JSON files (no pickles): a CT entry per content hash,
    a lungs entry per hash + parameters, a contour entry per hash + contour source + model version +
    parameters.  Least recently used entries are removed when the folder grows past ``cap_mb``.
    A corrupt or partial entry is a miss; writes go to a temporary name first.
    """

    def __init__(self, root: str | Path | None = None, cap_mb: float | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        env_cap = os.environ.get("LUNGSEG_DISK_CACHE_MB")
        self.cap_bytes = int((cap_mb if cap_mb is not None else float(env_cap) if env_cap else DEFAULT_DISK_CAP_MB) * 1024**2)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # --- plumbing --------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.root / name

    def _touch(self, p: Path) -> None:
        try:
            os.utime(p)
        except OSError:
            pass

    def _write_npz(self, name: str, arrays: dict, meta: dict) -> None:
        f = self._path(name + ".npz")
        tmp = self.root / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp.npz"
        arrays = dict(arrays, meta=np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8))
        np.savez(tmp, **arrays)
        tmp.replace(f)
        self.evict()

    def _read_npz(self, name: str) -> tuple[dict, dict] | None:
        f = self._path(name + ".npz")
        if not f.exists():
            return None
        try:
            with np.load(f) as z:
                arrays = {k: z[k] for k in z.files if k != "meta"}
                meta = json.loads(z["meta"].tobytes().decode())
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss
            f.unlink(missing_ok=True)
            return None
        self._touch(f)
        return arrays, meta

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())

    def evict(self) -> None:
        """Remove least recently used entries until the folder is within its cap."""
        with self._lock:
            try:
                files = [(f.stat().st_mtime, f.stat().st_size, f) for f in self.root.iterdir()
                         if f.is_file() and not f.name.startswith(".")]
            except FileNotFoundError:
                return
            total = sum(s for _, s, _ in files)
            for _, size, f in sorted(files, key=lambda t: t[0]):
                if total <= self.cap_bytes:
                    break
                f.unlink(missing_ok=True)
                total -= size

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)

    # --- source identity → content hash ---------------------------------------------------------
    def hash_for_source(self, identity: str) -> str | None:
        f = self._path(f"src-{identity}.json")
        try:
            key = json.loads(f.read_text())["key"]
        except (OSError, ValueError, KeyError):
            return None
        self._touch(f)
        return key

    def remember_source(self, identity: str, key: str) -> None:
        f = self._path(f"src-{identity}.json")
        tmp = self.root / f".{f.name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"key": key}))
        tmp.replace(f)

    # --- the CT -----------------------------------------------------------------------------------
    def save_ct(self, key: str, loaded) -> None:
        self._write_npz(f"ct-{key}", {"hu": loaded.volume.array}, _loaded_meta(loaded))

    def load_ct(self, key: str):
        hit = self._read_npz(f"ct-{key}")
        if hit is None:
            return None
        arrays, meta = hit
        try:
            return _loaded_from(arrays["hu"], meta)
        except Exception:  # noqa: BLE001 - an entry of an older layout is a miss
            return None

    # --- lungs ------------------------------------------------------------------------------------
    def save_lungs(self, name: str, lungs) -> None:
        shape = lungs.lung_region.shape
        arrays = {k: np.packbits(getattr(lungs, k).ravel()) for k in
                  ("lungs", "lung_region", "left_lung", "right_lung", "body", "couch")}
        arrays["spine_x"] = np.asarray(lungs.spine_x, np.float64)
        meta = {"shape": list(shape), "skipped": lungs.skipped, "voxel_ml": lungs.voxel_ml,
                "seconds": lungs.seconds, "params": _params_dict(lungs.params)}
        self._write_npz(name, arrays, meta)

    def load_lungs(self, name: str, volume, params):
        hit = self._read_npz(name)
        if hit is None:
            return None
        arrays, meta = hit
        from lungseg.lungs import LungResult

        shape = tuple(meta["shape"])
        if shape != volume.shape:
            return None
        n = int(np.prod(shape))
        masks = {k: np.unpackbits(arrays[k], count=n).astype(bool).reshape(shape)
                 for k in ("lungs", "lung_region", "left_lung", "right_lung", "body", "couch")}
        return LungResult(**masks, isolated=isolated_image(volume, masks["lung_region"], params),
                          spine_x=arrays["spine_x"], skipped=meta["skipped"], params=params,
                          seconds=meta["seconds"], voxel_ml=meta["voxel_ml"])

    # --- contours ---------------------------------------------------------------------------------
    def save_contour(self, name: str, contour: Contour) -> None:
        meta = {"shape": list(contour.mask.shape), "role": contour.role, "name": contour.name,
                "lesions": list(contour.lesions), "description": contour.description, "version": contour.version}
        self._write_npz(name, {"mask": np.packbits(contour.mask.ravel())}, meta)

    def load_contour(self, name: str, shape) -> Contour | None:
        hit = self._read_npz(name)
        if hit is None:
            return None
        arrays, meta = hit
        if tuple(meta["shape"]) != tuple(shape):
            return None
        mask = np.unpackbits(arrays["mask"], count=int(np.prod(shape))).astype(bool).reshape(shape)
        return _contour(meta["role"], meta["name"], mask, tuple(meta["lesions"]), meta["description"], meta["version"])


def _params_dict(params) -> dict:
    return json.loads(json.dumps(asdict(params), default=str))


def isolated_image(volume, lung_region: np.ndarray, params):
    """The lung-isolated normalised CT: the seed's last step (outside the region set to air)."""
    from lungseg.imaging.harmonise import normalise

    out = np.full(volume.shape, params.window.air_value, dtype=np.float32)
    out[lung_region] = normalise(volume.array[lung_region], params.window)
    return volume.with_array(out)


def _loaded_meta(loaded) -> dict:
    v = loaded.volume
    d = loaded.dicom
    return {
        "spacing": list(v.spacing), "origin": list(v.origin), "direction": list(v.direction),
        "source_grid": asdict(loaded.source_grid), "label": loaded.label, "info": loaded.info,
        "warnings": list(loaded.warnings),
        "other_series": [asdict(s) for s in loaded.other_series],
        "structure_sets": [{**asdict(s), "path": str(s.path)} for s in loaded.structure_sets],
        "segmentations": [{**asdict(s), "path": str(s.path)} for s in loaded.segmentations],
        "dicom": None if d is None else {
            "files": [str(f) for f in d.files], "series_uid": d.series_uid, "study_uid": d.study_uid,
            "frame_of_reference_uid": d.frame_of_reference_uid, "sop_instance_uids": list(d.sop_instance_uids),
            "sop_class_uid": d.sop_class_uid,
            "geometry": None if d.geometry is None else [np.asarray(g).tolist() if not np.isscalar(g) else g
                                                         for g in d.geometry]},
    }


def _loaded_from(hu: np.ndarray, meta: dict):
    from lungseg.imaging.io import DicomSource, LoadedCT, SegRef, SeriesSummary, StructureSetRef
    from lungseg.imaging.volume import Grid, Volume

    volume = Volume(hu, tuple(meta["spacing"]), tuple(meta["origin"]), tuple(meta["direction"]))
    g = meta["source_grid"]
    grid = Grid(tuple(g["size"]), tuple(g["spacing"]), tuple(g["origin"]), tuple(g["direction"]))
    d = meta["dicom"]
    dicom = None
    if d is not None:
        geometry = None
        if d["geometry"] is not None:
            geometry = tuple(np.asarray(x) if isinstance(x, list) else x for x in d["geometry"])
        dicom = DicomSource(files=[Path(f) for f in d["files"]], series_uid=d["series_uid"], study_uid=d["study_uid"],
                            frame_of_reference_uid=d["frame_of_reference_uid"],
                            sop_instance_uids=list(d["sop_instance_uids"]), sop_class_uid=d["sop_class_uid"],
                            headers=[], geometry=geometry)
    return LoadedCT(
        volume=volume, source_grid=grid, label=meta["label"], info=meta["info"], dicom=dicom,
        other_series=[SeriesSummary(**s) for s in meta["other_series"]],
        structure_sets=[StructureSetRef(**{**s, "path": Path(s["path"]), "roi_names": tuple(s["roi_names"])})
                        for s in meta["structure_sets"]],
        segmentations=[SegRef(**{**s, "path": Path(s["path"]), "segment_labels": tuple(s["segment_labels"])})
                       for s in meta["segmentations"]],
        warnings=list(meta["warnings"]))


def with_dicom_headers(loaded):
    """``loaded`` with its DICOM headers read back from its files (a cached CT keeps none)."""
    d = loaded.dicom
    if d is None or d.headers:
        return loaded
    import pydicom

    missing = [f for f in d.files if not Path(f).exists()]
    if missing:
        raise InputError(f"{loaded.label}: the DICOM files of the CT are no longer in the cache; reopen the source")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in d.files]
    return replace(loaded, dicom=replace(d, headers=headers))


# --------------------------------------------------------------------------------------------
# opening


def _frozen(mask: np.ndarray) -> np.ndarray:
    m = np.ascontiguousarray(mask, dtype=bool)
    m.setflags(write=False)
    return m


def _contour(role, name, mask, lesions, description="", version=None) -> Contour:
    return Contour(role=role, name=name, mask=_frozen(mask), lesions=tuple(lesions), description=description,
                   version=version)


def lesion_rows(mask: np.ndarray, volume, spine_x) -> tuple[dict, ...]:
    """The lesion table of a mask (largest first; each row keeps a voxel inside its lesion)."""
    from lungseg.tumour.lesions import lesion_table

    return tuple(lesion_table(mask, volume, spine_x))


_default_predictor: Any = None
_predictor_lock = threading.Lock()


def default_predictor(model: str | None = None, device: str = "auto"):
    """The tumour model, loaded once per process (the shipped weights unless ``model`` names others)."""
    global _default_predictor
    from lungseg.tumour.segment import DEFAULT_MODEL, TumourPredictor

    path = str(Path(model or DEFAULT_MODEL).resolve())
    with _predictor_lock:
        p = _default_predictor
        if p is None or getattr(p, "_lungseg_path", None) != (path, device):
            p = TumourPredictor(path, device)
            p._lungseg_path = (path, device)
            _default_predictor = p
    return p


def model_version(predictor) -> str:
    return str(getattr(predictor, "version", "unknown"))


def _load_source_ct(source: CaseSource, cache: ResultCache, say: Progress):
    """(LoadedCT, content key, from cache)."""
    from lungseg.imaging.io import load_ct

    if source.is_demo:
        from lungseg.imaging.phantom import demo_case

        loaded, _ = demo_case()
        return loaded, content_hash(loaded.volume), False
    p = Path(source.ct)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    identity = _digest([source_identity(p), source.series_uid, source.label, CACHE_FORMAT])
    key = cache.hash_for_source(identity)
    if key is not None:
        loaded = cache.load_ct(key)
        if loaded is not None:
            return loaded, key, True
    say(f"Reading {p.name}", 0.02)
    loaded = load_ct(p, series_uid=source.series_uid, label=source.label)
    key = content_hash(loaded.volume)
    try:
        cache.save_ct(key, loaded)
        cache.remember_source(identity, key)
    except OSError:
        pass
    return loaded, key, False


def _manual_contour(source: CaseSource, loaded, lungs, key: str, cache: ResultCache) -> Contour | None:
    m = source.manual
    if m is None:
        return None
    name = f"manual-{key}-{_digest([asdict(m), _file_identity(m.path), CACHE_FORMAT])}"
    hit = cache.load_contour(name, loaded.volume.shape)
    if hit is not None:
        return hit
    mask = load_manual_mask(m, loaded)
    contour = _contour("manual", m.name, mask, lesion_rows(mask, loaded.volume, lungs.spine_x),
                       description=f"manual contour ({m.kind})")
    try:
        cache.save_contour(name, contour)
    except OSError:
        pass
    return contour


def _file_identity(path: str | None) -> str | None:
    if not path or not Path(path).exists():
        return None
    return source_identity(path)


def load_manual_mask(m: ManualSource, loaded) -> np.ndarray:
    """The bool mask of a manual contour on the CT's canonical grid."""
    from lungseg.imaging.io import find_structure_set, load_contour, load_rtstruct

    if m.kind == "demo-truth":
        from lungseg.imaging.phantom import demo_case

        _, truth = demo_case()
        return np.asarray(truth, bool)
    if m.kind == "rtstruct" and m.path is None:
        ss = find_structure_set(loaded)
        if ss is None:
            raise InputError(f"{loaded.label}: no structure set referencing this CT")
        if not Path(ss.path).exists():
            raise InputError(f"{loaded.label}: the structure set is no longer in the cache; reopen the source")
        return np.asarray(load_rtstruct(ss.path, loaded, m.roi or default_roi(loaded)), bool)
    roi = m.roi
    if m.kind == "label" and roi is not None:
        from lungseg.imaging.io import load_label

        try:
            return np.asarray(load_label(m.path, loaded, int(roi)), bool)
        except ValueError:
            raise InputError(f"label value {roi!r} is not a whole number") from None
    return np.asarray(load_contour(m.path, loaded, roi), bool)


def default_roi(loaded) -> str:
    """The ROI shown as the manual contour when none is named: GTV-1, else the first GTV*."""
    names = loaded.roi_names() if find_structure_set_path(loaded) else []
    if "GTV-1" in names:
        return "GTV-1"
    for n in names:
        if n.upper().startswith("GTV"):
            return n
    raise InputError(f"{loaded.label}: no GTV in the structure set; name the manual contour's ROI")


def find_structure_set_path(loaded) -> Path | None:
    from lungseg.imaging.io import find_structure_set

    ss = find_structure_set(loaded)
    return Path(ss.path) if ss is not None and Path(ss.path).exists() else None


def resolved_manual(m: ManualSource | None, loaded) -> ManualSource | None:
    """``m`` with the default ROI replaced by the ROI it stands for (so reviews name what was shown);
    None when the default was asked for and the CT has no structure set with a GTV."""
    if m is not None and m.kind == "rtstruct" and m.path is None and not m.roi:
        try:
            return replace(m, roi=default_roi(loaded))
        except InputError:
            return None
    return m


def stand_in(mask: np.ndarray, grow: int = 2, shift_yx: tuple[int, int] = (2, 3)) -> np.ndarray:
    """The demo/test stand-in "automatic" contour: ``mask`` dilated in-plane and shifted by voxels."""
    from scipy import ndimage as ndi

    out = np.asarray(mask, bool)
    if grow:
        st = np.zeros((3, 3, 3), bool)
        st[1] = ndi.generate_binary_structure(2, 1)
        out = ndi.binary_dilation(out, structure=st, iterations=grow)
    dy, dx = shift_yx
    shifted = np.zeros_like(out)
    ny, nx = out.shape[1:]
    shifted[:, max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)] = \
        out[:, max(-dy, 0):ny - max(dy, 0), max(-dx, 0):nx - max(dx, 0)]
    return shifted


def _automatic_contour(source: CaseSource, loaded, lungs, manual: Contour | None, key: str, lung_key: str,
                       cache: ResultCache, predictor, post, say: Progress) -> Contour:
    a = source.automatic
    if a.kind == "stand-in":
        if manual is None:
            raise InputError("the stand-in automatic contour needs the manual contour")
        mask = stand_in(manual.mask)
        return _contour("automatic", "stand-in", mask, lesion_rows(mask, loaded.volume, lungs.spine_x), a.description)
    if a.kind == "file":
        name = f"auto-{key}-{_digest([asdict(a), _file_identity(a.path), CACHE_FORMAT])}"
        hit = cache.load_contour(name, loaded.volume.shape)
        if hit is not None:
            return hit
        from lungseg.imaging.io import load_contour

        mask = np.asarray(load_contour(a.path, loaded, a.roi), bool)
        contour = _contour("automatic", Path(a.path).name + (f" · {a.roi}" if a.roi else ""), mask,
                           lesion_rows(mask, loaded.volume, lungs.spine_x), a.description)
        cache.save_contour(name, contour)
        return contour
    if predictor is None:
        predictor = default_predictor(a.model)
    version = model_version(predictor)
    name = f"auto-{key}-{lung_key}-{_digest([version, asdict(post), CACHE_FORMAT])}"
    hit = cache.load_contour(name, loaded.volume.shape)
    if hit is not None:
        return hit
    say("Segmenting the tumour", 0.45)
    pred = predictor.predict(loaded.volume, lungs, post)
    contour = _contour("automatic", "automatic tumour", pred.mask,
                       lesion_rows(pred.mask, loaded.volume, lungs.spine_x), a.description, version)
    try:
        cache.save_contour(name, contour)
    except OSError:
        pass
    return contour


def open_case_progressively(source: CaseSource, predictor=None, progress: Progress | None = None, *,
                            cache: ResultCache | None = None, lung_params=None, post=None) -> Iterator[Case]:
    """Open a case in stages: yields the case with the CT only (``stage="ct"``), then with the lung
    region and manual contour (``"lungs"``), then complete (``"done"``). Each yield is immutable."""
    from lungseg.lungs import LungParams, isolate
    from lungseg.tumour.segment import PostProcess

    say = progress or (lambda message, fraction: None)
    cache = cache or ResultCache()
    lung_params = lung_params or LungParams()
    post = post or PostProcess()
    source.check_exists()
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    loaded, key, ct_hit = _load_source_ct(source, cache, say)
    source = replace(source, manual=resolved_manual(source.manual, loaded))
    seconds["load"] = time.perf_counter() - t0
    label = source.label or loaded.label
    base = Case(key=key, label=label, source=source, ct=loaded, lungs=None, automatic=None, manual=None,
                stage="ct", from_cache=ct_hit, seconds=dict(seconds))
    yield base
    t = time.perf_counter()
    lung_key = _digest([_params_dict(lung_params), CACHE_FORMAT])
    lung_name = f"lungs-{key}-{lung_key}"
    lungs = cache.load_lungs(lung_name, loaded.volume, lung_params)
    lungs_hit = lungs is not None
    if lungs is None:
        say("Isolating the lung region", 0.1)
        lungs = isolate(loaded.volume, lung_params)
        try:
            cache.save_lungs(lung_name, lungs)
        except OSError:
            pass
    manual = _manual_contour(source, loaded, lungs, key, cache)
    seconds["lungs"] = time.perf_counter() - t
    notes = []
    if lungs.skipped:
        notes.append("Lung isolation skipped: " + "; ".join(f"{k} ({v})" for k, v in lungs.skipped.items()))
    notes += list(loaded.warnings)
    with_lungs = replace(base, lungs=lungs, manual=manual, stage="lungs", seconds=dict(seconds), notes=tuple(notes))
    yield with_lungs
    t = time.perf_counter()
    automatic = _automatic_contour(source, loaded, lungs, manual, key, lung_key, cache, predictor, post, say)
    seconds["automatic"] = time.perf_counter() - t
    seconds["open"] = time.perf_counter() - t0
    say("Done", 1.0)
    yield replace(with_lungs, automatic=automatic, stage="done", seconds=dict(seconds),
                  from_cache=ct_hit and lungs_hit)


def open_case(source: CaseSource, predictor=None, progress: Progress | None = None, **kwargs) -> Case:
    """Open a case: load the CT, isolate the lungs, read the manual contour and make the automatic one.

    ``predictor`` is a loaded :class:`~lungseg.tumour.segment.TumourPredictor` (reused across cases);
    when None and the automatic contour is a model's, the process-wide default is loaded once.
    Raises :class:`~lungseg.errors.LungsegError` with a one-line reason on bad input.
    """
    case = None
    for case in open_case_progressively(source, predictor, progress, **kwargs):
        pass
    return case


def source_for_input(input: str, *, roi: str | None = None, manual: str | None = None,
                     automatic: str | None = None, automatic_roi: str | None = None, model: str | None = None,
                     series_uid: str | None = None, stand_in_ok: bool = False,
                     default_manual: bool = True) -> CaseSource:
    """The CaseSource of a CLI INPUT and its options (one place for every command).

    ``manual``: a contour file (RTSTRUCT/SEG/label); ``roi``: its ROI/segment/label, or the ROI of the
    structure set beside the CT when no file is given.  ``automatic``: a contour file made by another
    tool (else the model at ``model``, the shipped one by default).
    """
    man = None
    if manual:
        kind = contour_file_kind(manual)
        man = ManualSource(kind, manual, roi)
    elif roi:
        man = ManualSource("rtstruct", None, roi)
    elif input == DEMO:
        man = ManualSource("demo-truth")
    elif default_manual:
        man = ManualSource("rtstruct", None, None)  # the default GTV of the structure set, if there is one
    if automatic == "stand-in":
        if not stand_in_ok:
            raise InputError("the stand-in automatic contour is for demos and tests only")
        auto = AutomaticSource("stand-in")
    elif automatic:
        auto = AutomaticSource("file", path=automatic, roi=automatic_roi)
    else:
        auto = AutomaticSource("model", model=model)
    return CaseSource(ct=input, automatic=auto, manual=man, series_uid=series_uid)


def contour_file_kind(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_file():
        try:
            import pydicom

            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Modality"])
            modality = str(ds.get("Modality", ""))
            if modality == "RTSTRUCT":
                return "rtstruct"
            if modality == "SEG":
                return "seg"
        except Exception:  # noqa: BLE001 - not DICOM: a label image
            pass
    return "label"


# --------------------------------------------------------------------------------------------
# a bounded in-memory cache of immutable cases (shared by every user of a server)


class CaseMemory:
    """Least recently used opened cases, bounded by a memory budget (``LUNGSEG_CACHE_MB``, default 4 GB).

    Cases are immutable, so one opened case can be handed to every user; per-user choices live in each
    user's session, never on the case.
    """

    def __init__(self, budget_mb: float | None = None):
        env = os.environ.get("LUNGSEG_CACHE_MB")
        self.budget = int((budget_mb if budget_mb is not None else float(env) if env else 4096) * 1024**2)
        self._items: "OrderedDict[str, Case]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key_of(source: CaseSource, version: str | None = None) -> str:
        files = [source.ct if source.is_demo else source_identity(source.ct)]
        for p in (source.manual.path if source.manual else None, source.automatic.path):
            files.append(_file_identity(p))
        return _digest([source.as_dict(), files, version])

    def get(self, key: str) -> Case | None:
        with self._lock:
            case = self._items.get(key)
            if case is not None:
                self._items.move_to_end(key)
            return case

    def put(self, key: str, case: Case) -> None:
        with self._lock:
            self._items[key] = case
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.used_bytes() > self.budget:
                self._items.popitem(last=False)

    def used_bytes(self) -> int:
        return sum(c.nbytes() for c in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


class NoCache(ResultCache):
    """A result cache that never hits and never writes (``--no-cache``; benchmarks of cold runs)."""

    def __init__(self):  # noqa: D107 - nothing on disk
        self.root = None
        self.cap_bytes = 0

    def _read_npz(self, name):
        return None

    def _write_npz(self, name, arrays, meta):
        return None

    def hash_for_source(self, identity):
        return None

    def remember_source(self, identity, key):
        return None

    def evict(self):
        return None

    def size_bytes(self):
        return 0
