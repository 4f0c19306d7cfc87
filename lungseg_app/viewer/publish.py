"""From a :class:`ViewerCase` to the component's arguments: URLs and geometry only, never voxels."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .. import cases
from . import blobs
from .layers import DEFAULT_OPACITY, LAYER_COLOURS, ViewerCase

_LOCK = threading.Lock()
_CT: dict[str, "CtWrite"] = {}  # case key → its CT files being written or written
_MASKS: OrderedDict[tuple, tuple[np.ndarray, str]] = OrderedDict()  # (token, layer) → (mask, file)


def blob_root() -> Path:
    """The served folder (one sub-folder per case); its secret lives beside it, not inside."""
    d = cases.app_cache_dir() / "viewer-files"
    d.mkdir(parents=True, exist_ok=True)
    return d


def folder_for(key: str) -> blobs.Folder:
    return blobs.case_folder(blob_root(), cases.app_cache_dir() / "viewer-secret", key)


class CtWrite:
    """The CT slabs of one case being written on the blob pool; ``ready`` grows as files land."""

    def __init__(self, key: str, array: np.ndarray, start: int):
        self.folder = folder_for(key)
        self.nz = array.shape[0]
        self.files = [blobs.ct_file(s) for s in range((self.nz + blobs.SLAB - 1) // blobs.SLAB)]
        self.ready: set[int] = {s for s, f in enumerate(self.files) if (self.folder.path / f).exists()}
        self.error: str | None = None
        self._thread = None
        if len(self.ready) < len(self.files):
            self._thread = threading.Thread(target=self._write, args=(array, start), daemon=True, name="viewer-ct")
            self._thread.start()
        blobs.prune(blob_root(), protect=(self.folder.token,))

    def _write(self, array, start):
        try:
            blobs.write_ct(self.folder, array, start, on_slab=self.ready.add)
        except OSError as exc:
            self.error = str(exc)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    @property
    def complete(self) -> bool:
        return len(self.ready) == len(self.files) and (self.folder.path / self.files[0]).exists()


def start_ct(key: str, array: np.ndarray, start: int) -> CtWrite:
    with _LOCK:
        w = _CT.get(key)
        if w is None or not w.folder.path.exists() or w.error:
            w = _CT[key] = CtWrite(key, array, start)
            while len(_CT) > blobs.MAX_CASES:
                _CT.pop(next(iter(_CT)))
        else:
            blobs.touch(w.folder)
        return w


def mask_file(folder: blobs.Folder, layer: str, mask: np.ndarray) -> str:
    k = (folder.token, layer)
    with _LOCK:
        hit = _MASKS.get(k)
        if hit is not None and hit[0] is mask and (folder.path / hit[1]).exists():
            return hit[1]
    name = blobs.write_mask(folder, layer, mask)
    with _LOCK:
        _MASKS[k] = (mask, name)
        while len(_MASKS) > 4 * blobs.MAX_CASES:
            _MASKS.popitem(last=False)
    return name


def geometry(vc: ViewerCase) -> dict:
    v = vc.volume
    nz, ny, nx = v.shape
    return {"nx": nx, "ny": ny, "nz": nz, "spacing": [float(s) for s in v.spacing],
            "origin": [float(o) for o in v.origin], "direction": [float(d) for d in v.direction],
            "slab": blobs.SLAB}


def component_args(vc: ViewerCase, start_slice: int, wait: bool = False) -> dict:
    """The component's arguments: the CT slabs on disk so far (all of them with ``wait``), finished
    layers and their colours, the lesions."""
    ct = start_ct(vc.key, vc.volume.array, start_slice)
    if wait:
        ct.wait()
    layers = []
    for name, colour in LAYER_COLOURS.items():
        if name not in vc.layers:
            continue
        mask = vc.layers[name]
        layers.append({"name": name, "colour": list(colour), "opacity": DEFAULT_OPACITY[name],
                       "file": mask_file(ct.folder, name, mask) if mask is not None else None,
                       "detail": vc.manual_name if name == "manual contour" else None})
    lesions = []
    for r in vc.lesions[:12]:
        row = {"lesion": int(r["lesion"]), "side": r.get("side", ""), "volume_ml": round(float(r["volume_ml"]), 1),
               "slice": int(r["centroid_slice"])}
        if r.get("centroid_mm") is not None:
            _, y, x = vc.volume.physical_to_index(np.asarray(r["centroid_mm"], float))[0]
            row["y"], row["x"] = int(round(y)), int(round(x))
        lesions.append(row)
    args = {"case": vc.key, "label": vc.label, "folder": ct.folder.token, "geometry": geometry(vc),
            "ct": [f if s in ct.ready else None for s, f in enumerate(ct.files)],
            "layers": layers, "lesions": lesions, "lesion_source": vc.lesion_source}
    return args
