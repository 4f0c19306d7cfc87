"""One call from a loaded CT to everything the app shows: lung region, tumour, lesion table."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lungseg.imaging.io import LoadedCT
from lungseg.tumour.lesions import lesion_table
from lungseg.lungs import LungParams, LungResult, isolate

Progress = Callable[[str, float], None]


@dataclass
class CaseResult:
    lungs: LungResult
    tumour: np.ndarray | None = None  # bool [z, y, x], None when no model is available
    probability: np.ndarray | None = None  # float32 [z, y, x]
    lesions: list[dict] = field(default_factory=list)
    model_version: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def content_hash(loaded: LoadedCT) -> str:
    """A key for caching results: the voxels and their geometry."""
    v = loaded.volume
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(v.array).tobytes())
    h.update(repr((v.spacing, v.origin, v.direction)).encode())
    return h.hexdigest()[:32]


def process_case(loaded: LoadedCT, predictor=None, progress: Progress | None = None,
                 lung_params: LungParams = LungParams()) -> CaseResult:
    """Lung isolation, then (when ``predictor`` is given) tumour prediction and the lesion table."""
    say = progress or (lambda message, fraction: None)
    t = time.perf_counter()
    say("Isolating the lung region", 0.05)
    lungs = isolate(loaded.volume, lung_params)
    result = CaseResult(lungs=lungs, seconds={"lungs": time.perf_counter() - t})
    if lungs.skipped:
        result.notes.append("Lung isolation skipped: " + "; ".join(f"{k} ({v})" for k, v in lungs.skipped.items()))
    if predictor is None:
        result.notes.append("No tumour model loaded: showing the lung region only.")
        say("Done", 1.0)
        return result
    say("Segmenting the tumour", 0.4)
    t = time.perf_counter()
    pred = predictor.predict(loaded.volume, lungs)
    result.tumour, result.probability = pred.mask, pred.probability
    result.lesions = lesion_table(pred.mask, loaded.volume, lungs.spine_x)
    result.model_version = getattr(predictor, "version", None)
    result.seconds["tumour"] = time.perf_counter() - t
    say("Done", 1.0)
    return result
