"""Leave-one-patient-out evaluation of fold models and the calibration of the candidate filter.

A fold model (trained without patient P) is measured on P:

* P's tumours (each ROI of its contour): Dice, HD95, lesions found / missed / false;
* validation-side LIDC nodules >= 10 mm (``models/lidc_split.csv``), 6 per copy, placed into copies of
  P's lungs away from its tumours (:mod:`lungseg.tumour.placement`); the U-Net and the post-processing
  run on each copy with the unmodified scan's lung region: sensitivity, and false positives per scan
  (lesions touching neither a placed nodule nor a tumour; a lesion counts for a reference when at least
  20 % of it lies inside);
* tumour-free scans (the TotalSegmentator example CT here): lesions found.

The false-positive filter (:class:`lungseg.tumour.segment.CandidateFilter`) is calibrated leave-one-
patient-out too: each fold's rules are chosen on the other folds' candidates (never on its own); the
rules shipped with the final model are chosen on all folds.  Tumour-free scans never calibrate.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from lungseg.imaging.harmonise import MODEL_WINDOW, normalise
from lungseg.imaging.io import load_ct
from lungseg.lungs import isolate
from lungseg.metrics import evaluate_case
from lungseg.tumour.fpr import CandidateScorer, add_lesion_scores, candidate_patches
from lungseg.tumour.placement import HostSites, place_nodules
from lungseg.tumour.segment import CandidateContext, CandidateFilter, PostProcess, TumourPredictor, candidates, kept_labels

PRIMARY = "primary"  # the reference name under which each held-out case's primary tumour is also listed
NODULES_PER_COPY = 6
MIN_NODULE_MM = 10.0
GRID = {"min_peak_probability": [0.5],
        "min_volume_ml": [0.0, 0.3, 0.5, 1.0, 2.0],
        "min_slices": [1, 2, 3],
        "min_ring_lung": [0.0, 0.4, 0.5, 0.6, 0.7],
        "min_mean_hu": [-1024.0, -450.0, -300.0],
        "max_mean_hu": [3071.0, 50.0, 20.0],
        "min_mean_probability": [0.0, 0.85, 0.88]}
# with the second stage (--classifier), which learns the features above itself: fewer rule values,
# and the classifier's lesion-probability threshold
GRID_CLASSIFIER = {"min_peak_probability": [0.5],
                   "min_volume_ml": [0.0, 0.3, 0.5, 1.0],
                   "min_slices": [1, 2, 3],
                   "min_ring_lung": [0.0, 0.5],
                   "min_mean_hu": [-1024.0, -450.0, -300.0],
                   "max_mean_hu": [3071.0, 20.0],
                   "min_mean_probability": [0.0, 0.88],
                   "min_lesion_score": [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]}


def hits(labels: np.ndarray, rows: list[dict], references: dict[str, np.ndarray], min_share: float = 0.2) -> None:
    """Mark each candidate row with the names of the reference masks it overlaps; a candidate must have
    at least ``min_share`` of its voxels in a reference to count for it (one blob over the whole lung
    finds nothing)."""
    sizes = np.bincount(labels.ravel(), minlength=len(rows) + 1)
    for r in rows:
        r["hits"] = []
    for name, ref in references.items():
        overlap = np.bincount(labels[ref].ravel(), minlength=len(rows) + 1)
        for lab in np.nonzero(overlap)[0]:
            if lab and overlap[lab] >= min_share * sizes[lab]:
                rows[lab - 1]["hits"].append(name)


def with_new_hu(lungs, vol):
    """The held-out scan's lung region, re-normalised over the HU with nodules placed (the nodules lie
    inside the lungs, so the region is that of the unmodified scan; saves a lung isolation per copy)."""
    iso = np.full(vol.shape, MODEL_WINDOW.air_value, np.float32)
    iso[lungs.lung_region] = normalise(vol.array[lungs.lung_region], MODEL_WINDOW)
    return replace(lungs, isolated=vol.with_array(iso))


def add_patches(rows: list[dict], labels: np.ndarray, ct, probability: np.ndarray, post: PostProcess) -> None:
    """Attach the second stage's input (``patch``, :mod:`lungseg.tumour.fpr`) to every candidate that
    the size and region rules keep, so classifiers can be scored on cached folds."""
    keep = kept_labels(rows, post)
    whole = tuple(slice(0, n) for n in labels.shape)
    patches = candidate_patches(ct.array, probability, labels, whole, ndi.find_objects(labels), ct.spacing_zyx, keep)
    for lab, patch in patches.items():
        rows[lab - 1]["patch"] = patch


def tumour_references(case, loaded) -> dict[str, np.ndarray]:
    """The held-out case's tumours by name: each ROI matching an RTSTRUCT pattern (``GTV*``: GTV-1, -2, -3),
    or the contour as one; the largest is also listed as :data:`PRIMARY`."""
    from lungseg.case import ManualSource, load_manual_mask
    from lungseg.imaging.io import match_roi

    refs = {}
    if case.manual.kind == "rtstruct" and case.manual.path is None and case.manual.roi:
        for name in match_roi(loaded.roi_names(), case.manual.roi):
            m = np.asarray(load_manual_mask(ManualSource("rtstruct", None, name), loaded), bool)
            if m.any():
                refs[name] = m
    if not refs:
        refs[case.manual.name] = np.asarray(load_manual_mask(case.manual, loaded), bool)
    primary = "GTV-1" if "GTV-1" in refs else max(refs, key=lambda n: refs[n].sum())
    return refs | {PRIMARY: refs[primary]}


def run_fold(model: Path, case, val_crops: list, seed: int = 0, nodule_limit: int | None = None,
             min_diameter_mm: float = MIN_NODULE_MM, device: str = "cpu") -> dict:
    """Fold model ``model`` on its held-out :class:`~lungseg.training.sources.TrainingCase` and on copies of
    it with ``val_crops`` placed in its lungs: every candidate with its features and reference hits."""
    predictor = TumourPredictor(model, device)
    raw = PostProcess(candidate_filter=None)
    loaded = load_ct(case.ct, label=case.case_id)
    ct = loaded.volume
    gtvs = tumour_references(case, loaded)
    gtv_all = np.any([m for n, m in gtvs.items() if n != PRIMARY], axis=0)
    t = time.perf_counter()
    lungs = isolate(ct)
    pred = predictor.predict(ct, lungs, raw)
    labels, rows = candidates(pred.probability, lungs.lung_region, ct.voxel_volume_ml, raw.threshold, CandidateContext.of(ct, lungs))
    hits(labels, rows, gtvs)
    add_patches(rows, labels, ct, pred.probability, raw)
    case_out = {"rows": rows, "labels": labels.astype(np.int32), "gtv": gtv_all,
                "gtvs": {n: m for n, m in gtvs.items() if n != PRIMARY}, "ct": ct, "seconds": time.perf_counter() - t}

    rng = np.random.default_rng(seed)
    crops = [c for c in val_crops if c[0].diameter_mm >= min_diameter_mm]
    order = rng.permutation(len(crops))[:nodule_limit]
    sites = HostSites.of(ct.array, lungs.lungs, gtv_all, ct.spacing_zyx)
    copies = []
    for start in range(0, len(order), NODULES_PER_COPY):
        chosen = [crops[i] for i in order[start:start + NODULES_PER_COPY]]
        hu, placed, records = place_nodules(ct.array, sites, ct.spacing_zyx, [c[1:] for c in chosen], rng)
        vol = ct.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
        lungs_c = with_new_hu(lungs, vol)
        p = predictor.predict(vol, lungs_c, raw)
        lab, crows = candidates(p.probability, lungs_c.lung_region, vol.voxel_volume_ml, raw.threshold,
                                CandidateContext.of(vol, lungs_c))
        comp, _ = ndi.label(placed, structure=np.ones((3, 3, 3), bool))
        refs = {"gtv": gtv_all}
        nodules = []
        for k, (c, rec) in enumerate(zip(chosen, records)):
            if not rec["placed"]:
                continue
            centre = tuple(rec["centre_voxel"])
            nid = f"{c[0].crop}"
            refs[nid] = comp == comp[centre] if comp[centre] else np.zeros_like(placed)
            nodules.append({"crop": nid, "diameter_mm": c[0].diameter_mm, "texture": c[0].texture,
                            "juxtapleural": rec["juxtapleural"]})
        hits(lab, crows, refs)
        add_patches(crows, lab, vol, p.probability, raw)
        copies.append({"rows": crows, "nodules": nodules})
    return {"case": case_out, "copies": copies, "held_out": case.case_id}


def tumour_free_rows(model: Path, scan: str | Path, device: str = "cpu") -> list[dict]:
    """Every candidate of ``model`` on a scan without tumour (each one is a false lesion)."""
    predictor = TumourPredictor(model, device)
    ct = load_ct(scan).volume
    lungs = isolate(ct)
    raw = PostProcess(candidate_filter=None)
    pred = predictor.predict(ct, lungs, raw)
    labels, rows = candidates(pred.probability, lungs.lung_region, ct.voxel_volume_ml, raw.threshold, CandidateContext.of(ct, lungs))
    for r in rows:
        r["hits"] = []
    add_patches(rows, labels, ct, pred.probability, raw)
    return rows


def score_filter(folds: list[dict], f: CandidateFilter | None) -> dict:
    """Counts under filter ``f``: primaries found, GTV false positives, nodule sensitivity, FP per scan."""
    post = PostProcess(candidate_filter=f)
    primaries = fp_case = 0
    found = total = fp_copies = n_copies = 0
    for fold in folds:
        kept = set(kept_labels(fold["case"]["rows"], post))
        rows = [r for r in fold["case"]["rows"] if r["label"] in kept]
        primaries += any(PRIMARY in r["hits"] for r in rows)
        fp_case += sum(not r["hits"] for r in rows)
        for c in fold["copies"]:
            kept = set(kept_labels(c["rows"], post))
            rows = [r for r in c["rows"] if r["label"] in kept]
            detected = {h for r in rows for h in r["hits"]}
            found += sum(n["crop"] in detected for n in c["nodules"])
            total += len(c["nodules"])
            fp_copies += sum(not r["hits"] for r in rows)
            n_copies += 1
    return {"primaries_found": primaries, "primaries": len(folds), "fp_lung1_per_scan": fp_case / len(folds),
            "nodules_found": found, "nodules": total, "sensitivity": found / max(total, 1),
            "fp_per_nodule_scan": fp_copies / max(n_copies, 1)}


def calibrate(folds: list[dict], grid: dict = GRID) -> tuple[CandidateFilter, dict]:
    """The filter that finds every primary; then, among those within the issue's false-positive budget
    (≤ 2 false lesions per LUNG1 scan, ≤ 1 per scan with placed nodules), the most sensitive (ties: fewer
    false positives); if none is within budget, the one maximising sensitivity − 0.25 × false positives
    per scan."""
    best = None
    for values in itertools.product(*grid.values()):
        f = CandidateFilter(**dict(zip(grid, values)))
        s = score_filter(folds, f)
        fp = (s["fp_lung1_per_scan"] + s["fp_per_nodule_scan"]) / 2
        within = s["fp_lung1_per_scan"] <= 2 and s["fp_per_nodule_scan"] <= 1
        merit = (round(s["sensitivity"], 6), -round(fp, 6)) if within else (round(s["sensitivity"] - 0.25 * fp, 6), 0.0)
        # ties: the laxest rules (first in grid order, which runs from lax to strict)
        key = (s["primaries_found"], within, *merit)
        if best is None or key > best[0]:
            best = (key, f, s)
    return best[1], best[2]


def load_scorer(folder: Path, names: str) -> CandidateScorer:
    """The classifiers FOLDER/NAME.pt for each comma-separated NAME, as one (ensemble) scorer."""
    return CandidateScorer.ensemble([CandidateScorer.from_payload(torch.load(folder / f"{n}.pt", weights_only=True))
                                     for n in names.split(",")])


def score_rows(scorer: CandidateScorer, *row_lists: list[dict]) -> None:
    """Each candidate's ``lesion_score`` from ``scorer`` (candidates without a patch are dropped by the
    size and region rules anyway)."""
    for rows in row_lists:
        rows_in = [r for r in rows if "patch" in r]
        add_lesion_scores(scorer, rows_in, [r["patch"] for r in rows_in])


def without_patches(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "patch"} for r in rows]


def fold_figures(fold: dict, f: CandidateFilter | None) -> dict:
    case = fold["case"]
    kept = kept_labels(case["rows"], PostProcess(candidate_filter=f))
    lut = np.zeros(len(case["rows"]) + 1, bool)
    lut[kept] = True
    mask = lut[case["labels"]]
    m = evaluate_case(mask, case["gtv"], case["ct"].spacing_zyx)
    kept_rows = [r for r in case["rows"] if r["label"] in set(kept)]
    m["gtvs_found"] = {n: any(n in r["hits"] for r in kept_rows) for n in case["gtvs"]}
    m["primary_found"] = any(PRIMARY in r["hits"] for r in kept_rows)
    m["false_positive_lesions_outside_gtvs"] = sum(not r["hits"] for r in case["rows"] if r["label"] in set(kept))
    return m | {"nodules": score_filter([fold], f)}


