"""Case results on disk: plain arrays and JSON keyed by content hash, model version and parameters (LRU)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.case.result import Contour, make_contour
from lungseg.errors import InputError
from lungseg.storage import write_private

CACHE_FORMAT = 3


def content_hash(volume) -> str:
    """A key for caching results: the voxels and their geometry."""
    h = hashlib.blake2b(digest_size=16)  # twice as fast as sha256 on a whole CT
    h.update(memoryview(np.ascontiguousarray(volume.array)).cast("B"))
    h.update(repr((volume.spacing, volume.origin, volume.direction)).encode())
    return h.hexdigest()


def digest(obj: Any) -> str:
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
    return digest(parts)


def file_identity(path: str | None) -> str | None:
    if not path or not Path(path).exists():
        return None
    return source_identity(path)


def default_cache_dir() -> Path:
    from lungseg.storage import result_cache_root

    return result_cache_root()


class ResultCache:
    """Case results on disk: the canonical CT, lung isolation, contours and lesion tables.

    Entries are plain ``.npy``/``.npz`` and JSON files (no pickles): a CT entry per content hash,
    a lungs entry per hash + parameters, a contour entry per hash + contour source + model version +
    parameters.  Files are 0600 in a 0700 folder.  With ``cap_mb`` least recently used entries are removed
    when this folder grows past it; without, the retention policy of :mod:`lungseg.storage` (every folder
    of patient data within ``LUNGSEG_DISK_CACHE_MB``, nothing older than ``LUNGSEG_RETENTION_DAYS``) is
    applied after each write.  A corrupt or partial entry is a miss; writes go to a temporary name first.
    """

    def __init__(self, root: str | Path | None = None, cap_mb: float | None = None):
        from lungseg.storage import RetentionPolicy, private_dir

        self.root = Path(root) if root is not None else default_cache_dir()
        self.own_cap = cap_mb is not None
        self.cap_bytes = int(cap_mb * 1024**2) if cap_mb is not None else RetentionPolicy.from_env().budget_bytes
        private_dir(self.root)
        self._lock = threading.Lock()

    @property
    def series_root(self) -> Path:
        """Where DICOMweb series are retrieved to (``dicomweb/`` of this cache)."""
        return self.root

    unzip_root: Path | None = None  # None: zips unpack into the shared cache (``$LUNGSEG_CACHE/unzipped``)

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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
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
        """Apply the retention policy (:func:`lungseg.storage.enforce`, this folder included), or with an own
        ``cap_mb`` remove this folder's least recently used entries until it is within the cap."""
        if not self.own_cap:
            from lungseg.storage import DataFolder, enforce

            enforce(extra=(DataFolder("results", self.root, "files"),
                           DataFolder("PACS series", self.root / "dicomweb", "folders")))
            return
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
        write_private(tmp, json.dumps({"key": key}).encode())
        tmp.replace(f)

    # --- the CT -----------------------------------------------------------------------------------
    # One entry per content hash and source: what a LoadedCT says besides its voxels (its label, its
    # files, the structure sets beside it) belongs to the source it was opened from.
    def save_ct(self, key: str, loaded, source: str = "") -> None:
        self._write_npz(f"ct-{key}-{source[:16]}", {"hu": loaded.volume.array}, _loaded_meta(loaded))

    def load_ct(self, key: str, source: str = ""):
        hit = self._read_npz(f"ct-{key}-{source[:16]}")
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
                "seconds": lungs.seconds, "params": params_dict(lungs.params)}
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
        masks = {k: np.unpackbits(arrays[k], count=n).view(bool).reshape(shape)
                 for k in ("lungs", "lung_region", "left_lung", "right_lung", "body", "couch")}
        region = masks["lung_region"]
        return LungResult(**masks, isolated=lambda: isolated_image(volume, region, params),
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
        mask = np.unpackbits(arrays["mask"], count=int(np.prod(shape))).view(bool).reshape(shape)
        return make_contour(meta["role"], meta["name"], mask, tuple(meta["lesions"]), meta["description"], meta["version"])


class NoCache(ResultCache):
    """A result cache that never hits and never writes (``--no-cache``; benchmarks of cold runs).

    What a run must still put on disk (an unzipped series, a series retrieved from a PACS) goes into a
    private scratch folder that :meth:`close` removes (at the latest when the process exits; one left by
    a killed process is removed by :func:`lungseg.storage.enforce`).
    """

    def __init__(self):  # noqa: D107 - nothing on disk until a zip or a PACS series needs a folder
        self.root = None
        self.cap_bytes = 0
        self.own_cap = True
        self._scratch: Path | None = None
        self._finalizer = None

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            import weakref

            from lungseg.storage import scratch_dir

            self._scratch = scratch_dir()
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._scratch), True)
        return self._scratch

    @property
    def series_root(self) -> Path:
        return self._scratch_dir()

    @property
    def unzip_root(self) -> Path:
        return self._scratch_dir() / "unzipped"

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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


def params_dict(params) -> dict:
    return json.loads(json.dumps(asdict(params), default=str))


def isolated_image(volume, lung_region: np.ndarray, params):
    """The lung-isolated normalised CT as a Volume (the seed's last step), as :func:`lungseg.lungs.isolate` makes it."""
    from lungseg.lungs import isolated_image as isolated_array

    return volume.with_array(isolated_array(volume.array, lung_region, params.window))


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
