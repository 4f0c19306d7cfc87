"""Cohort evaluation of click-to-segment on the LIDC crop layout.

The click is the reference mask's centre of mass rounded to a voxel inside the mask (the point a
reader would click).  Dice is computed on the crop's own grid.  The classical baseline thresholds at
−500 HU and keeps the component under the same click.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lungseg.lesion.lidc import DIAMETER_BANDS, Nodule, load_crop
from lungseg.lesion.segment import click_inside, threshold_component_at
from lungseg.metrics import dice


@dataclass(frozen=True)
class CropScore:
    crop: str
    patient_id: str
    diameter_mm: float
    band: str
    texture: str
    subtlety: int | None
    dice: float
    baseline_dice: float | None
    volume_ml: float
    reference_ml: float
    seconds: float


def score_crop(nodule: Nodule, predictor, baseline: bool = False) -> CropScore:
    volume, reference = load_crop(nodule)
    click = click_inside(reference, volume.spacing_zyx)
    point = volume.index_to_physical(np.asarray(click, float))[0]
    result = predictor.segment(volume, point)
    base = dice(threshold_component_at(volume, point), reference) if baseline else None
    return CropScore(nodule.crop, nodule.patient_id, nodule.diameter_mm, nodule.diameter_band, nodule.texture,
                     nodule.subtlety, dice(result.mask, reference), base, result.volume_ml,
                     float(reference.sum() * volume.voxel_volume_ml), result.seconds)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 4) if values else None


def summarise(scores: list[CropScore]) -> dict:
    def group(key, names):
        out = {}
        for name in names:
            sel = [s for s in scores if key(s) == name]
            if sel:
                out[name] = {"n": len(sel), "median_dice": _median(s.dice for s in sel),
                             "baseline_median_dice": _median(s.baseline_dice for s in sel)}
        return out

    return {
        "n": len(scores),
        "patients": len({s.patient_id for s in scores}),
        "median_dice": _median(s.dice for s in scores),
        "mean_dice": round(float(np.mean([s.dice for s in scores])), 4) if scores else None,
        "baseline_median_dice": _median(s.baseline_dice for s in scores),
        "bands": group(lambda s: s.band, [b[2] for b in DIAMETER_BANDS]),
        "textures": group(lambda s: s.texture, ["solid", "part-solid", "ground-glass", "unknown"]),
        "subtlety": group(lambda s: str(s.subtlety) if s.subtlety is not None else "unknown",
                          ["1", "2", "3", "4", "5", "unknown"]),
        "median_seconds_per_click": _median(s.seconds for s in scores),
    }


def evaluate(nodules: list[Nodule], predictor, baseline: bool = False, progress=None) -> tuple[list[CropScore], dict]:
    scores = []
    t0 = time.perf_counter()
    for i, n in enumerate(nodules):
        scores.append(score_crop(n, predictor, baseline))
        if progress and (i + 1) % 50 == 0:
            progress(f"{i + 1}/{len(nodules)} crops, {time.perf_counter() - t0:.0f} s")
    return scores, summarise(scores)
