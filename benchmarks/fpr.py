"""Train the second stage (:mod:`lungseg.tumour.fpr`) of the automatic model, leave-one-patient-out.

    python benchmarks/fpr.py mine  --runs RUNS/b16c1 --nodules 150 --seed 1              # candidates of every fold
    python benchmarks/fpr.py mine  --runs RUNS/b16c1 --nodules 300 --seed 2 --tag=-2     # model on its held-out scan
    python benchmarks/fpr.py train --runs RUNS/b16c1      # one classifier per fold, and a final one
    python benchmarks/loo.py --runs RUNS/b16c1 --classifier --final models/lungseg_unet.pt

``mine`` runs each fold model (trained without patient P, ``RUNS/loo-P/model.pt``) on P's scan and on
copies of it with **train-side** LIDC nodules placed into its lungs (:mod:`lungseg.tumour.placement`;
the validation-side nodules that ``loo.py`` measures with are never used here).  Each candidate the
size and region rules keep becomes a sample: a lesion if it lies on a GTV or a placed nodule, a false
positive if not.  These are the candidates of a model on a patient it has not seen, which is what
the second stage meets in use (a model on its own training patients makes few false positives).

``train`` fits, for each fold P, a classifier on the samples of the **other** folds' scans only
(``RUNS/loo-P/classifier.pt``), so ``loo.py`` scores P's candidates with a classifier that never saw
P's CT; and a final classifier on all samples (``RUNS/classifier.pt``), shipped in the model's weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import peak_rss_mb, shared_data

from loo import PATIENTS, run_fold
from lungseg.imaging.io import load_ct
from lungseg.tumour.fpr import feature_vector, train_classifier
from lungseg.tumour.recipe import lidc_crops

MIN_TRAIN_NODULE_MM = 5.0


def samples(fold: dict) -> dict[str, np.ndarray]:
    """Every candidate with a patch: kind 0 false, 1 on a placed nodule, 2 on a GTV only."""
    rows = list(fold["case"]["rows"]) + [r for c in fold["copies"] for r in c["rows"]]
    rows = [r for r in rows if "patch" in r]
    nodules = {n["crop"] for c in fold["copies"] for n in c["nodules"]}
    kind = np.array([0 if not r["hits"] else (1 if nodules & set(r["hits"]) else 2) for r in rows], np.int8)
    return {"patches": np.stack([r["patch"] for r in rows]), "features": np.stack([feature_vector(r) for r in rows]),
            "lesion": (kind > 0).astype(np.float32), "kind": kind}


def mine(args, data: Path) -> None:
    crops = lidc_crops(data / "lidc-nodules", "train", load_ct(data / "LUNG1-001.zip").volume.spacing_zyx, MIN_TRAIN_NODULE_MM)
    for held in args.folds:
        out = Path(args.runs) / f"loo-{held}"
        t = time.perf_counter()
        fold = run_fold(out / "model.pt", held, data, crops, seed=args.seed, nodule_limit=args.nodules, min_diameter_mm=MIN_TRAIN_NODULE_MM)
        s = samples(fold)
        np.savez_compressed(out / f"mined{args.tag}.npz", **s)
        print(f"{held}: {len(s['kind'])} candidates, {int((s['kind'] == 1).sum())} on nodules, {int((s['kind'] == 2).sum())} on GTVs, "
              f"{int((s['kind'] == 0).sum())} false ({time.perf_counter() - t:.0f} s)", flush=True)


def load_samples(runs: Path, folds: list[str]) -> dict[str, np.ndarray]:
    parts = [dict(np.load(f)) for p in folds for f in sorted((runs / f"loo-{p}").glob("mined*.npz"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def train(args) -> None:
    runs = Path(args.runs)
    torch.set_num_threads(args.threads)
    filename = f"{args.name}.pt"
    targets = [(p, [q for q in PATIENTS if q != p], runs / f"loo-{p}" / filename) for p in args.folds]
    targets.append(("final", PATIENTS, runs / filename))
    summary = {}
    for name, folds, out in targets:
        s = load_samples(runs, folds)
        t = time.perf_counter()
        print(f"{name}: training on {folds} ({len(s['lesion'])} samples, {int(s['lesion'].sum())} lesions)", flush=True)
        scorer = train_classifier(s["patches"], s["features"], s["lesion"], epochs=args.epochs, seed=args.seed)
        torch.save(scorer.to_payload() | {"trained_on": folds, "samples": int(len(s["lesion"]))}, out)
        summary[name] = {"folds": folds, "samples": int(len(s["lesion"])), "lesions": int(s["lesion"].sum()),
                         "seconds": time.perf_counter() - t}
        if name != "final":  # its own fold's mined samples: never seen by this classifier
            held = load_samples(runs, [name])
            score = scorer.score(held["patches"], held["features"])
            for kind, label in ((1, "nodules"), (2, "GTVs"), (0, "false")):
                sel = held["kind"] == kind
                if sel.any():
                    print(f"  held-out {name} {label}: n={int(sel.sum())}, median score {np.median(score[sel]):.3f}, "
                          f"share >= 0.5: {(score[sel] >= 0.5).mean():.2f}", flush=True)
    (runs / f"{args.name}_training.json").write_text(json.dumps(summary, indent=1))
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["mine", "train"])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--folds", nargs="*", default=PATIENTS)
    ap.add_argument("--nodules", type=int, default=120, help="train-side nodules placed per fold (6 per copy)")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="", help="mine: the output is mined{TAG}.npz (for example --tag=-2); train uses every mined*.npz")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="classifier", help="train: writes RUNS/loo-P/NAME.pt and RUNS/NAME.pt")
    args = ap.parse_args()
    if args.step == "mine":
        torch.set_num_threads(1)
        mine(args, shared_data())
    else:
        train(args)


if __name__ == "__main__":
    main()
