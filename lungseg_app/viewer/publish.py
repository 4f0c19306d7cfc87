"""From a :class:`ViewerCase` to the component's arguments: URLs and geometry only, never voxels.

While a case opens, the opening job writes the same arguments as ``status.json`` in the case's
folder after each stage and each CT slab; the browser polls that small static file, so Python does
not rerun while a case opens (a Streamlit rerun every fraction of a second costs the server far more
CPU than the file).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lungseg.structures import colour_of

from .. import cases
from . import blobs
from .layers import DEFAULT_OPACITY, LAYER_COLOURS, ViewerCase

STATUS = "status.json"
_LOCK = threading.Lock()
_CT: dict[str, "CtWrite"] = {}  # folder token → its CT files being written or written
_MASKS: OrderedDict[tuple, tuple[np.ndarray, str]] = OrderedDict()  # (token, layer) → (mask, file)
_ALIASES: OrderedDict[str, str] = OrderedDict()  # case key → folder id it was opened under


def blob_root() -> Path:
    """The served folder (one sub-folder per case); its secret lives beside it, not inside."""
    d = cases.app_cache_dir() / "viewer-files"
    d.mkdir(parents=True, exist_ok=True)
    return d


def folder_for(case_id: str) -> blobs.Folder:
    """The folder of a case: by the id it was opened under (a job's source), else by ``case_id``."""
    with _LOCK:
        case_id = _ALIASES.get(case_id, case_id)
    return blobs.case_folder(blob_root(), cases.app_cache_dir() / "viewer-secret", case_id)


def alias(case_key: str, folder_id: str) -> None:
    """Files written while opening under ``folder_id`` serve the case ``case_key`` afterwards."""
    with _LOCK:
        _ALIASES[case_key] = folder_id
        while len(_ALIASES) > 4 * blobs.MAX_CASES:
            _ALIASES.popitem(last=False)


class CtWrite:
    """The CT slabs of one case being written on the blob pool; ``ready`` grows as files land."""

    def __init__(self, folder: blobs.Folder, array: np.ndarray, start: int, on_slab=None):
        self.folder = folder
        self.nz = array.shape[0]
        self.files = [blobs.ct_file(s) for s in range((self.nz + blobs.SLAB - 1) // blobs.SLAB)]
        self.ready: set[int] = {s for s, f in enumerate(self.files) if (folder.path / f).exists()}
        self.error: str | None = None
        self._on_slab = on_slab
        self._thread = None
        if len(self.ready) < len(self.files):
            self._thread = threading.Thread(target=self._write, args=(array, start), daemon=True, name="viewer-ct")
            self._thread.start()
        blobs.prune(blob_root(), protect=(folder.token,))

    def _write(self, array, start):
        def landed(s):
            self.ready.add(s)
            if self._on_slab:
                self._on_slab()

        try:
            blobs.write_ct(self.folder, array, start, on_slab=landed)
        except OSError as exc:
            self.error = str(exc)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    @property
    def complete(self) -> bool:
        return len(self.ready) == len(self.files)


def start_ct(folder: blobs.Folder, array: np.ndarray, start: int, on_slab=None) -> CtWrite:
    with _LOCK:
        w = _CT.get(folder.token)
        if w is None or not folder.path.exists() or w.error:
            w = _CT[folder.token] = CtWrite(folder, array, start, on_slab)
            while len(_CT) > blobs.MAX_CASES:
                _CT.pop(next(iter(_CT)))
        else:
            blobs.touch(folder)
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


def write_status(folder: blobs.Folder, status: dict) -> None:
    tmp = folder.path / f".{STATUS}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, folder.path / STATUS)


def geometry(vc: ViewerCase) -> dict:
    v = vc.volume
    nz, ny, nx = v.shape
    return {"nx": nx, "ny": ny, "nz": nz, "spacing": [float(s) for s in v.spacing],
            "origin": [float(o) for o in v.origin], "direction": [float(d) for d in v.direction],
            "slab": blobs.SLAB}


def component_args(vc: ViewerCase, start_slice: int, wait: bool = False, folder: blobs.Folder | None = None) -> dict:
    """The component's arguments: the CT slabs on disk so far (all of them with ``wait``), the
    layers (a layer still being computed has no file yet) and their colours, the lesions."""
    folder = folder or folder_for(vc.key)
    ct = start_ct(folder, vc.volume.array, start_slice)
    if wait:
        ct.wait()
    layers = []
    for name, colour in LAYER_COLOURS.items():
        if name not in vc.layers:
            continue
        mask = vc.layers[name]
        if name == "manual contour" and vc.manual_name:
            colour = colour_of(vc.manual_name)  # the colour it keeps once listed as a structure
        layers.append({"name": name, "colour": list(colour), "opacity": DEFAULT_OPACITY[name],
                       "file": mask_file(folder, name, mask) if mask is not None else None,
                       "detail": vc.manual_name if name == "manual contour" else None})
    lesions = []
    for r in vc.lesions[:12]:
        row = {"lesion": int(r["lesion"]), "side": r.get("side", ""), "volume_ml": round(float(r["volume_ml"]), 1),
               "slice": int(r["centroid_slice"])}
        if r.get("centroid_mm") is not None:
            _, y, x = vc.volume.physical_to_index(np.asarray(r["centroid_mm"], float))[0]
            row["y"], row["x"] = int(round(y)), int(round(x))
        lesions.append(row)
    return {"case": folder.token, "label": vc.label, "folder": folder.token, "geometry": geometry(vc),
            "ct": [f if s in ct.ready else None for s, f in enumerate(ct.files)], "start_slice": int(start_slice),
            "layers": layers, "lesions": lesions, "lesion_source": vc.lesion_source}
