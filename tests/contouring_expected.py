"""Independent computations of a contouring study's figures, for the tests: scipy for the tests, numpy for
Dice and the surface distances (brute force over surface voxel centres, no lungseg code)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats


def surface_points_mm(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    """Centres (mm) of mask voxels with a face neighbour outside the mask or the array."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1]
    all_in = np.ones_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            all_in &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    surface = inner & ~all_in
    return np.argwhere(surface) * np.asarray(spacing_zyx, float)


def agreement(a: np.ndarray, b: np.ndarray, spacing_zyx, tol: float = 2.0) -> dict:
    a, b = a.astype(bool), b.astype(bool)
    if not a.any() and not b.any():
        return {"dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0}
    if not a.any() or not b.any():
        return {"dice": 0.0, "hd95_mm": None, "surface_dice": 0.0}
    dice = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    pa, pb = surface_points_mm(a, spacing_zyx), surface_points_mm(b, spacing_zyx)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    ab, ba = d.min(axis=1), d.min(axis=0)
    return {"dice": dice, "hd95_mm": max(np.percentile(ab, 95), np.percentile(ba, 95)),
            "surface_dice": (np.count_nonzero(ab <= tol) + np.count_nonzero(ba <= tol)) / (ab.size + ba.size)}


def time_stats(values) -> dict:
    v = np.asarray(values, float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": v.size, "mean": v.mean(), "sd": v.std(ddof=1) if v.size > 1 else None, "median": med, "q1": q1,
            "q3": q3, "iqr": q3 - q1}


def expected_report(times: dict, model: dict, masks: dict, automatic: dict, spacing: dict, repeats: dict) -> dict:
    """``times[(reader, case, arm)]`` seconds; ``model[case]``; ``masks[(reader, case, arm)]`` arrays;
    ``automatic[case]``; ``spacing[case]``; ``repeats[(reader, case, arm)]`` the repeated readings' masks."""
    readers = sorted({k[0] for k in times} | {k[0] for k in masks})
    out: dict = {"per_arm": {}, "per_reader": {}, "mw": {}, "wilcoxon_per_reader": {}}
    for arm in ("scratch", "assisted"):
        out["per_arm"][arm] = time_stats([s for (r, c, a), s in times.items() if a == arm])
    out["per_arm"]["model"] = time_stats(list(model.values()))
    mw_p = {}
    for r in readers:
        for arm in ("scratch", "assisted"):
            mine = [s for (rr, c, a), s in sorted(times.items()) if rr == r and a == arm]
            if mine:
                out["per_reader"][(r, arm)] = time_stats(mine)
                res = stats.mannwhitneyu(mine, list(model.values()), alternative="two-sided")
                mw_p[(r, arm)] = (res.statistic, res.pvalue)
    out["mw"] = {k: (u, p, min(1.0, p * len(mw_p))) for k, (u, p) in mw_p.items()}
    cases = sorted({c for (_, c, _) in times})
    pairs = [(r, c, times[(r, c, "scratch")] - times[(r, c, "assisted")]) for r in readers for c in cases
             if (r, c, "scratch") in times and (r, c, "assisted") in times]
    out["saved"] = time_stats([p[2] for p in pairs])
    scratch = [times[(r, c, "scratch")] for r, c, _ in pairs]
    assisted = [times[(r, c, "assisted")] for r, c, _ in pairs]
    out["wilcoxon_pooled"] = stats.wilcoxon(scratch, assisted).pvalue
    per = {}
    for r in readers:
        s = [times[(rr, c, "scratch")] for rr, c, _ in pairs if rr == r]
        a = [times[(rr, c, "assisted")] for rr, c, _ in pairs if rr == r]
        per[r] = stats.wilcoxon(s, a).pvalue
    out["wilcoxon_per_reader"] = {r: (p, min(1.0, p * len(per))) for r, p in per.items()}
    inter = {}
    for (c, arm) in sorted({(c, a) for (_, c, a) in masks}):
        who = [r for r in readers if (r, c, arm) in masks]
        for a_, b_ in itertools.combinations(who, 2):
            inter[(c, arm, a_, b_)] = agreement(masks[(a_, c, arm)], masks[(b_, c, arm)], spacing[c])
    out["inter"] = inter
    out["intra"] = {k: agreement(masks[k], m, spacing[k[1]]) for k, m in repeats.items()}
    out["model_vs_reader"] = {k: agreement(automatic[k[1]], m, spacing[k[1]]) for k, m in masks.items()
                              if k[1] in automatic}
    return out
