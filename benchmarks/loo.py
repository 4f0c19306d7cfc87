"""Leave-one-real-patient-out evaluation of the U-Net and its synthetic held-out check.

For each real tumour patient in the shared data a model is trained without it (LUNG1-002 and
the IBSI phantom are the same patient and are held out together), then evaluated on it: Dice,
HD95, surface Dice at 2 mm, volumes, lesion detection.  Also evaluates on synthetic cases made
with seeds never used in training.  Results go to docs/loo_results.json and are printed.

    python benchmarks/loo.py [--epochs 60] [--folds LUNG1-001 LUNG1-002 LUNG1-003] [--runs data/runs]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import REPO, peak_rss_mb, shared_data

from lungseg.tumour.datasets import discover, load_case_slices, real_with_synthetic_tumours, synthetic_cases
from lungseg.metrics import evaluate_case
from lungseg.tumour.segment import TumourPredictor
from lungseg.cli.segment import evaluate_cohort, summarise
from lungseg.tumour.train import TrainConfig, train
from lungseg.tumour.unet import UNetConfig

SAME_PATIENT = {"LUNG1-002": ["ibsi-ct-phantom"]}


def training_cases(refs, synthetic_per_real, n_synthetic, seed):
    cases, ids = [], []
    for i, ref in enumerate(refs):
        stack, ct, _ = load_case_slices(ref)
        cases.append((stack.images, stack.masks))
        ids.append(ref.case_id)
        for j, s in enumerate(real_with_synthetic_tumours(ct, synthetic_per_real, seed=100 + i)):
            cases.append((s.images, s.masks))
            ids.append(f"{ref.case_id}+synthetic-{j}")
    for cid, s in synthetic_cases(n_synthetic, seed=seed):
        cases.append((s.images, s.masks))
        ids.append(cid)
    return cases, ids


def train_model(refs, out_dir: Path, args) -> Path:
    cases, ids = training_cases(refs, args.synthetic_per_real, args.synthetic, seed=args.seed)
    val = [cases[-1]]
    config = TrainConfig(epochs=args.epochs, batch_size=16, crop_size=args.crop, seed=args.seed, negative_ratio=args.negative_ratio,
                         unet=UNetConfig(base_channels=args.base_channels), in_plane_spacing_mm=(1.0, 1.0))
    t = time.perf_counter()
    train(config, cases[:-1], val, out_dir, resume=True, progress=False, case_ids=ids[:-1],
          extra_meta={"in_plane_mm": 1.0, "version": "loo"})
    print(f"  trained on {len(cases) - 1} cases ({', '.join(i for i in ids if '+' not in i and not i.startswith('synthetic'))} "
          f"+ synthetic) in {time.perf_counter() - t:.0f} s", flush=True)
    best = out_dir / "model_best.pt"
    return best if best.exists() else out_dir / "model.pt"


def synthetic_heldout(model: Path, n: int, seed: int = 999) -> list[float]:
    from lungseg.lungs import isolate
    from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct
    from lungseg.tumour.synthetic import insert_tumours

    predictor = TumourPredictor(model, "auto")
    dices = []
    for i in range(n):
        rng = np.random.default_rng(seed * 10_000 + i)
        p = synthetic_chest_ct(PhantomSpec(seed=seed * 10_000 + i, with_tumour=False))
        hu, mask = insert_tumours(p.ct.array.astype(np.float32), p.ct.spacing_zyx, p.lungs, rng)
        ct = p.ct.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
        pred = predictor.predict(ct, isolate(ct))
        dices.append(evaluate_case(pred.mask, mask, ct.spacing_zyx)["dice"])
    return dices


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--folds", nargs="*", default=["LUNG1-003", "LUNG1-001", "LUNG1-002"])
    ap.add_argument("--runs", default=str(REPO / "data" / "runs"))
    ap.add_argument("--synthetic", type=int, default=6)
    ap.add_argument("--synthetic-per-real", type=int, default=3)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--base-channels", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--negative-ratio", type=float, default=1.0)
    ap.add_argument("--synthetic-heldout", type=int, default=4)
    ap.add_argument("--out", default=str(REPO / "docs" / "loo_results.json"))
    args = ap.parse_args()

    data = shared_data()
    all_refs = [r for r in discover(data) if r.case_id.startswith("LUNG1-")]
    results = {"folds": [], "settings": vars(args)}
    for held in args.folds:
        out_dir = Path(args.runs) / f"loo-{held}"
        excluded = {held, *SAME_PATIENT.get(held, [])}
        refs = [r for r in all_refs if r.case_id not in excluded]
        print(f"fold {held}: training without {sorted(excluded)}", flush=True)
        model = train_model(refs, out_dir, args)
        rows = evaluate_cohort([r for r in all_refs if r.case_id == held], TumourPredictor(model, "auto"))
        for r in rows:
            print(f"  {r['case_id']}: Dice {r['dice']:.3f}, HD95 {r['hd95_mm']:.1f} mm, surface Dice@2mm {r['surface_dice']:.3f}, "
                  f"{r['volume_pred_ml']:.1f}/{r['volume_ref_ml']:.1f} ml, lesions TP {r['lesion_true_positives']} "
                  f"FP {r['lesion_false_positives']} FN {r['lesion_false_negatives']}", flush=True)
        syn = synthetic_heldout(model, args.synthetic_heldout)
        print(f"  synthetic held-out Dice: {', '.join(f'{d:.3f}' for d in syn)}", flush=True)
        results["folds"].append({"held_out": held, "model": str(model), "cases": rows, "synthetic_heldout_dice": syn})
    rows = [r for f in results["folds"] for r in f["cases"]]
    results["summary"] = summarise(rows)
    results["synthetic_heldout_median_dice"] = float(np.median([d for f in results["folds"] for d in f["synthetic_heldout_dice"]]))
    print("summary:", json.dumps(results["summary"]), "synthetic held-out median Dice", round(results["synthetic_heldout_median_dice"], 3))
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
