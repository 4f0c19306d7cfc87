"""Leave-one-real-patient-out evaluation of the automatic model trained on real lesions.

One command reproduces every figure of the model card's automatic-model section:

    python benchmarks/loo.py [--train] [--runs /tmp/lungseg-loo] [--final models/lungseg_unet.pt]

Folds may be evaluated in parallel first (`--folds LUNG1-001 --evaluate-only`, one process each); the
last call without `--evaluate-only` reads their cached candidates and writes the summary.

The fold models of the shipped model (``real-lesions-2``) come from ``benchmarks/fit_loo_gpu.sh``
(``RUNS/VARIANT/loo-PATIENT/model.pt``; pass ``--runs RUNS/VARIANT``).  Without them, each fold trains
(``--train``, or when its model is missing) the older CPU recipe of :mod:`lungseg.tumour.recipe`
(``real-lesions-1``) on the two other LUNG1 patients with train-side LIDC nodules placed
into their lungs (LUNG1-002 and the IBSI phantom are one patient, held out together), then
measures on the held-out patient:

* its GTVs (RTSTRUCT ``GTV*``): Dice, HD95, lesions found / missed / false;
* validation-side LIDC nodules >= 10 mm (``models/lidc_split.csv``), 6 per copy, placed into copies of
  the held-out patient's lungs away from its GTVs (:mod:`lungseg.tumour.placement`); the U-Net and the
  post-processing run on each copy with the unmodified scan's lung region: sensitivity, and false positives per scan (lesions touching neither a placed nodule
  nor a GTV; a lesion counts for a reference when at least 20 % of it lies inside);
* the tumour-free TotalSegmentator example CT: lesions found.

The false-positive filter (:class:`lungseg.tumour.segment.CandidateFilter`) is calibrated leave-one-
patient-out too: each fold's rules are chosen on the two other folds' candidates (never on its own);
the rules shipped with the final model are chosen on all three folds.  The TotalSegmentator CT is
never used for calibration.  Results: ``docs/loo_results.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from _common import REPO, peak_rss_mb, shared_data

from lungseg.imaging.harmonise import MODEL_WINDOW, normalise
from lungseg.case import ManualSource, load_manual_mask
from lungseg.imaging.io import load_ct
from lungseg.lungs import isolate
from lungseg.metrics import evaluate_case
from lungseg.tumour.fpr import CandidateScorer, add_lesion_scores, candidate_patches
from lungseg.tumour.placement import HostSites, place_nodules
from lungseg.tumour.recipe import lidc_crops
from lungseg.tumour.segment import CandidateContext, CandidateFilter, PostProcess, TumourPredictor, candidates, kept_labels

SAME_PATIENT = {"LUNG1-002": ["ibsi-ct-phantom"]}
PATIENTS = ["LUNG1-001", "LUNG1-002", "LUNG1-003"]
PRIMARY = "GTV-1"
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


def run_fold(model: Path, held: str, data: Path, val_crops: list, seed: int = 0, nodule_limit: int | None = None,
             min_diameter_mm: float = MIN_NODULE_MM) -> dict:
    predictor = TumourPredictor(model, "cpu")
    raw = PostProcess(candidate_filter=None)
    loaded = load_ct(data / f"{held}.zip", label=held)
    ct = loaded.volume
    gtvs = {}
    for name in ("GTV-1", "GTV-2", "GTV-3"):
        if name not in loaded.roi_names():
            continue
        m = load_manual_mask(ManualSource("rtstruct", None, name), loaded)
        if m.any():
            gtvs[name] = m
    gtv_all = np.any(list(gtvs.values()), axis=0)
    t = time.perf_counter()
    lungs = isolate(ct)
    pred = predictor.predict(ct, lungs, raw)
    labels, rows = candidates(pred.probability, lungs.lung_region, ct.voxel_volume_ml, raw.threshold, CandidateContext.of(ct, lungs))
    hits(labels, rows, gtvs)
    add_patches(rows, labels, ct, pred.probability, raw)
    case = {"rows": rows, "labels": labels.astype(np.int32), "gtv": gtv_all, "gtvs": gtvs, "ct": ct,
            "seconds": time.perf_counter() - t}

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
    return {"case": case, "copies": copies}


def totalseg_rows(model: Path, data: Path) -> list[dict]:
    predictor = TumourPredictor(model, "cpu")
    ct = load_ct(data / "totalsegmentator-example" / "example_ct.nii.gz").volume
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
    m["false_positive_lesions_outside_gtvs"] = sum(not r["hits"] for r in case["rows"] if r["label"] in set(kept))
    return m | {"nodules": score_filter([fold], f)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", action="store_true", help="train every fold model (else only missing ones)")
    ap.add_argument("--runs", default="/tmp/lungseg-loo")
    ap.add_argument("--folds", nargs="*", default=PATIENTS)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--final", default=None, help="a final model (all three patients) to check on the TotalSegmentator CT "
                                                  "and to write the calibrated filter into")
    ap.add_argument("--out", default=str(REPO / "docs" / "loo_results.json"))
    ap.add_argument("--nodule-limit", type=int, default=None, help="place only this many nodules (a quick plumbing check)")
    ap.add_argument("--classifier", nargs="?", const="classifier", default=None, metavar="NAMES",
                    help="score candidates with the second stage trained by benchmarks/fpr.py (RUNS/loo-P/NAME.pt; "
                    "RUNS/NAME.pt into --final); comma-separated names make an ensemble (mean probability)")
    ap.add_argument("--evaluate-only", action="store_true", help="cache the folds' candidates and stop (run folds in parallel)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = shared_data()
    t0 = time.perf_counter()
    val_crops = None
    folds, models = [], {}
    for held in args.folds:
        out_dir = Path(args.runs) / f"loo-{held}"
        model = out_dir / "model.pt"
        if args.train or not model.exists():
            from lungseg.tumour.recipe import main as train_recipe

            hosts = [p for p in PATIENTS if p != held]
            train_recipe(["--data", str(data), "--hosts", *hosts, "--out", str(out_dir), "--epochs", str(args.epochs)])
        cached = out_dir / "candidates.pkl"
        if cached.exists() and cached.stat().st_mtime > model.stat().st_mtime:
            fold = pickle.loads(cached.read_bytes())
        else:
            print(f"fold {held}: evaluating {model}", flush=True)
            if val_crops is None:
                val_crops = lidc_crops(data / "lidc-nodules", "validation", load_ct(data / "LUNG1-001.zip").volume.spacing_zyx)
            fold = run_fold(model, held, data, val_crops, nodule_limit=args.nodule_limit)
            fold["held_out"] = held
            fold["totalseg"] = totalseg_rows(model, data)
            cached.write_bytes(pickle.dumps(fold))
        folds.append(fold)
        models[held] = model
    if args.evaluate_only:
        return
    grid = GRID
    if args.classifier:
        grid = GRID_CLASSIFIER
        for fold in folds:
            scorer = load_scorer(Path(args.runs) / f"loo-{fold['held_out']}", args.classifier)
            score_rows(scorer, fold["case"]["rows"], fold["totalseg"], *(c["rows"] for c in fold["copies"]))

    results = {"settings": {**vars(args), "nodules_per_copy": NODULES_PER_COPY, "min_nodule_mm": MIN_NODULE_MM, "grid": GRID},
               "folds": []}
    for fold in folds:
        others = [f for f in folds if f is not fold]
        f, calib = calibrate(others, grid) if others else (None, {})
        raw = fold_figures(fold, None)
        filt = fold_figures(fold, f)
        ts_kept = kept_labels(fold["totalseg"], PostProcess(candidate_filter=f))
        entry = {"held_out": fold["held_out"], "model": str(models[fold["held_out"]]),
                 "filter": None if f is None else f.__dict__, "filter_calibration_on_other_folds": calib,
                 "without_filter": {k: v for k, v in raw.items()}, "with_filter": {k: v for k, v in filt.items()},
                 "totalseg_lesions_without_filter": len(kept_labels(fold["totalseg"], PostProcess(candidate_filter=None))),
                 "totalseg_lesions_with_filter": len(ts_kept),
                 "candidates": without_patches(fold["case"]["rows"])}
        results["folds"].append(entry)
        n = filt["nodules"]
        print(f"{fold['held_out']}: filter {entry['filter']}\n  Dice {raw['dice']:.3f} -> {filt['dice']:.3f}, HD95 {filt['hd95_mm']:.1f} mm, "
              f"GTVs found {filt['gtvs_found']}, FP lesions {raw['false_positive_lesions_outside_gtvs']} -> "
              f"{filt['false_positive_lesions_outside_gtvs']}\n  placed nodules >= 10 mm: found {n['nodules_found']}/{n['nodules']} "
              f"({n['sensitivity']:.0%}), FP per scan {n['fp_per_nodule_scan']:.2f} (without filter "
              f"{raw['nodules']['nodules_found']}/{raw['nodules']['nodules']}, {raw['nodules']['fp_per_nodule_scan']:.2f})\n"
              f"  TotalSegmentator example: {entry['totalseg_lesions_without_filter']} -> {entry['totalseg_lesions_with_filter']} lesions",
              flush=True)
    shipped, calib = calibrate(folds, grid)
    with_f = [e["with_filter"] for e in results["folds"]]
    summary = {
        "median_dice": float(np.median([w["dice"] for w in with_f])),
        "median_dice_without_filter": float(np.median([e["without_filter"]["dice"] for e in results["folds"]])),
        "primaries_found": sum(w["gtvs_found"].get(PRIMARY, False) for w in with_f),
        "gtvs_found": sum(sum(w["gtvs_found"].values()) for w in with_f),
        "gtvs": sum(len(w["gtvs_found"]) for w in with_f),
        "fp_lesions_per_lung1_scan": [w["false_positive_lesions_outside_gtvs"] for w in with_f],
        "nodule_sensitivity": sum(w["nodules"]["nodules_found"] for w in with_f) / max(1, sum(w["nodules"]["nodules"] for w in with_f)),
        "nodules_found": sum(w["nodules"]["nodules_found"] for w in with_f),
        "nodules": sum(w["nodules"]["nodules"] for w in with_f),
        "nodule_fp_per_scan": float(np.mean([w["nodules"]["fp_per_nodule_scan"] for w in with_f])),
        "totalseg_lesions_per_fold_model": [e["totalseg_lesions_with_filter"] for e in results["folds"]],
        "shipped_filter": shipped.__dict__, "shipped_filter_on_all_folds": calib,
        "seconds": time.perf_counter() - t0,
    }
    results["summary"] = summary
    print("summary:", json.dumps(summary, default=float))
    if args.final:
        payload = torch.load(args.final, weights_only=True)
        payload["meta"]["candidate_filter"] = shipped.__dict__
        payload.pop("candidate_classifier", None)
        if args.classifier:
            payload["candidate_classifier"] = load_scorer(Path(args.runs), args.classifier).to_payload()
        torch.save(payload, args.final)
        ts = totalseg_rows(Path(args.final), data)
        if args.classifier:
            score_rows(load_scorer(Path(args.runs), args.classifier), ts)
        results["final_model"] = {"path": args.final, "candidate_filter": shipped.__dict__,
                                  "totalseg_lesions": len(kept_labels(ts, PostProcess(candidate_filter=shipped))),
                                  "totalseg_candidates": without_patches(ts)}
        print(f"final model {args.final}: filter written; TotalSegmentator example lesions "
              f"{results['final_model']['totalseg_lesions']}", flush=True)
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
