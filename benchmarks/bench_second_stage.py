"""What the second stage (the lesion classifier, :mod:`lungseg.tumour.fpr`) costs, where it has work.

    python benchmarks/bench_second_stage.py --runs MODEL.run   (a `python -m lungseg train ... --folds loo` run)

On its own training patients the shipped model leaves the classifier almost nothing to score, so the
cost is measured where it meets candidates: each leave-one-out fold model (``RUNS/loo-P/model.pt``)
with its fold's classifiers (``RUNS/loo-P/classifier.pt``) on the patient it never saw, under the shipped rules.  The U-Net runs
once; post-processing is then timed without and with the classifier (median of ``--repeat``).  The
whole-process ``segment`` figure is ``bench_segment.py``'s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import peak_rss_mb, shared_data
from scipy import ndimage as ndi

from lungseg.imaging.io import load_ct
from lungseg.lungs import isolate
from lungseg.tumour.segment import DEFAULT_MODEL, CandidateContext, PostProcess, TumourPredictor, postprocess


PATIENTS = ["LUNG1-001", "LUNG1-002", "LUNG1-003"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data, runs = shared_data(), Path(args.runs)
    shipped_filter = torch.load(DEFAULT_MODEL, weights_only=True)["meta"]["candidate_filter"]
    print(f"shipped rules {shipped_filter}; post-processing, median of {args.repeat}:")
    with tempfile.TemporaryDirectory() as tmp:
        for held in PATIENTS:
            payload = torch.load(runs / f"loo-{held}" / "model.pt", weights_only=True)
            payload["meta"]["candidate_filter"] = shipped_filter
            payload["candidate_classifier"] = torch.load(runs / f"loo-{held}" / "classifier.pt", weights_only=True)
            path = Path(tmp) / f"{held}.pt"
            torch.save(payload, path)
            predictor = TumourPredictor(path, "cpu")
            ct = load_ct(data / f"{held}.zip").volume
            lungs = isolate(ct)
            probability = predictor.predict(ct, lungs).probability
            context = CandidateContext.of(ct, lungs)
            post = PostProcess(candidate_filter=predictor.candidate_filter)
            line = []
            for label, scorer in (("rules only", None), ("with classifier", predictor.scorer)):
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    mask = postprocess(probability, lungs.lung_region, ct.voxel_volume_ml, post, context, scorer)
                    times.append(time.perf_counter() - t)
                line.append(f"{label} {statistics.median(times):.3f} s, {ndi.label(mask)[1]} lesion(s)")
            print(f"  {held} (fold model, never saw it): " + "; ".join(line), flush=True)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
