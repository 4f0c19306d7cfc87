"""open_case: load the CT, isolate the lungs, read the manual contour, make the automatic one (cached)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lungseg.case.cache import (CACHE_FORMAT, ResultCache, digest, file_identity, params_dict, content_hash,
                               source_identity)
from lungseg.case.result import Case, Contour, make_contour, lesion_rows
from lungseg.case.sources import CaseSource, ManualSource
from lungseg.dicomweb import is_dicomweb_url
from lungseg.errors import InputError

Progress = Callable[[str, float], None]
_default_predictor: Any = None
_predictor_lock = threading.Lock()


def default_predictor(model: str | None = None, device: str = "auto"):
    """The tumour model, loaded once per process: ``model``, else the one chosen among ``models/``
    (:mod:`lungseg.installed_models`; the shipped weights unless an admin chose others)."""
    global _default_predictor
    from lungseg.installed_models import chosen_model
    from lungseg.tumour.segment import TumourPredictor

    path = str(Path(model or chosen_model()).resolve())
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
    """(LoadedCT, content key, from cache).  The CT's label is that of the source opened (its file name,
    the series' label, or ``source.label``), also when the same pixels were cached from another source."""
    from lungseg.imaging.io import case_label, load_ct

    if source.is_demo:
        from lungseg.imaging.phantom import demo_case

        loaded, _ = demo_case()
        return loaded, content_hash(loaded.volume), False
    label = source.label
    if is_dicomweb_url(source.ct):  # a PACS series: retrieved into the cache, keyed by URL + instance list
        from lungseg.dicomweb import fetch_series

        fetched = fetch_series(source.ct, cache.series_root, say)
        p, ct_identity, label = fetched.folder, fetched.identity, label or fetched.label
    else:
        p = Path(source.ct)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        ct_identity = source_identity(p)
        label = label or case_label(p)
    identity = digest([ct_identity, source.series_uid, source.label, source.skip_unreadable, CACHE_FORMAT])
    key = cache.hash_for_source(identity)
    # the CT entry is per source, not per content: the same voxels from a PACS series and from a zip come with
    # different structure sets and files beside them
    if key is not None:
        loaded = cache.load_ct(key, identity)
        if loaded is not None:
            return replace(loaded, label=label), key, True
    say(f"Reading {label}", 0.02)
    loaded = load_ct(p, series_uid=source.series_uid, label=label, skip_unreadable=source.skip_unreadable,
                     unzip_into=cache.unzip_root)
    key = content_hash(loaded.volume)
    try:
        cache.save_ct(key, loaded, identity)
        cache.remember_source(identity, key)
    except OSError:
        pass
    return loaded, key, False


def _manual_contour(source: CaseSource, loaded, lungs, key: str, cache: ResultCache) -> Contour | None:
    m = source.manual
    if m is None:
        return None
    name = f"manual-{key}-{digest([asdict(m), file_identity(m.path), CACHE_FORMAT])}"
    hit = cache.load_contour(name, loaded.volume.shape)
    if hit is not None:
        return hit
    mask = load_manual_mask(m, loaded)
    contour = make_contour("manual", m.name, mask, lesion_rows(mask, loaded.volume, lungs.spine_x),
                       description=f"manual contour ({m.kind})")
    try:
        cache.save_contour(name, contour)
    except OSError:
        pass
    return contour


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
        return make_contour("automatic", "stand-in", mask, lesion_rows(mask, loaded.volume, lungs.spine_x), a.description)
    if a.kind == "file":
        name = f"auto-{key}-{digest([asdict(a), file_identity(a.path), CACHE_FORMAT])}"
        hit = cache.load_contour(name, loaded.volume.shape)
        if hit is not None:
            return hit
        from lungseg.imaging.io import load_contour

        mask = np.asarray(load_contour(a.path, loaded, a.roi), bool)
        contour = make_contour("automatic", Path(a.path).name + (f" · {a.roi}" if a.roi else ""), mask,
                           lesion_rows(mask, loaded.volume, lungs.spine_x), a.description)
        cache.save_contour(name, contour)
        return contour
    if predictor is None:
        predictor = default_predictor(a.model)
    version = model_version(predictor)
    name = f"auto-{key}-{lung_key}-{digest([version, asdict(post), CACHE_FORMAT])}"
    hit = cache.load_contour(name, loaded.volume.shape)
    if hit is not None:
        return hit
    say("Segmenting the tumour", 0.45)
    pred = predictor.predict(loaded.volume, lungs, post)
    contour = make_contour("automatic", "automatic tumour", pred.mask,
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

    say = progress or (lambda message, fraction: None)
    cache = cache or ResultCache()
    lung_params = lung_params or LungParams()
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
    lung_key = digest([params_dict(lung_params), CACHE_FORMAT])
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
    if post is None:
        from lungseg.tumour.segment import PostProcess  # torch: only when the tumour stage runs

        post = PostProcess()
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
