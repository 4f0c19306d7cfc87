"""Leave-one-patient-out figures of a training run (``python -m lungseg train ... --folds loo``).

    python benchmarks/loo.py --run MODEL.run [--out docs/loo_results.json]

The run's fold models (``MODEL.run/loo-P/model.pt``, each trained without patient P) are measured by
:func:`lungseg.training.recipe.second_stage_and_calibration` on the patient they never saw, with the
filter calibrated on the other folds (the figures the model card shows; cached candidates in the run
folder are reused, delete ``loo-P/candidates.pkl`` to measure again).  Prints one line per fold and the
summary; writes the whole record as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _common import REPO, peak_rss_mb

from lungseg.training.recipe import Run, TrainSpec, patient_groups, second_stage_and_calibration
from lungseg.training.sources import discover_all


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="the run folder of a train command (MODEL.run)")
    ap.add_argument("--out", default=str(REPO / "docs" / "loo_results.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = Path(args.run)
    record = json.loads((folder / "record.json").read_text())
    s = record["spec"]
    spec = TrainSpec(**{**s, "out": Path(s["out"]), "data": tuple(s["data"]), "tumour_free": tuple(s["tumour_free"]),
                        "classifier_seeds": tuple(s["classifier_seeds"]), "resume": True})
    run = Run(spec, folder, "cpu", lambda m: print(m, flush=True), record=record)
    sources = discover_all(list(spec.data), spec.roi)
    groups = patient_groups(sources.cases)
    models = {f"loo-{p}": folder / f"loo-{p}" / "model.pt" for p in groups}
    shipped, _ = second_stage_and_calibration(run, sources, groups, models)
    loo = run.record["loo"]
    print("summary:", json.dumps({k: v for k, v in loo.items() if k != "folds"}, default=float))
    print(f"filter calibrated on all folds: {shipped.__dict__}; peak RSS {peak_rss_mb():.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(loo, indent=1, default=float))


if __name__ == "__main__":
    main()
