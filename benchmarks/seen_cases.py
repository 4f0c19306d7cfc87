"""The shipped automatic model on its own training patients (LUNG1-001/002/003), with and without
its false-positive filter.  These are TRAINING cases: the figures show memorisation, not accuracy
on new patients (for that, see benchmarks/loo.py).

    python benchmarks/seen_cases.py [--model models/lungseg_unet.pt]
"""

from __future__ import annotations

import argparse

from _common import REPO, shared_data

from lungseg.case import ManualSource, load_manual_mask
from lungseg.imaging.io import load_ct
from lungseg.lungs import isolate
from lungseg.metrics import evaluate_case
from lungseg.tumour.segment import PostProcess, TumourPredictor

KEYS = ("dice", "hd95_mm", "volume_pred_ml", "volume_ref_ml", "lesion_true_positives", "lesion_false_positives",
        "lesion_false_negatives")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "models" / "lungseg_unet.pt"))
    args = ap.parse_args()
    predictor = TumourPredictor(args.model, "cpu")
    print(predictor.version, predictor.candidate_filter)
    for case_id in ("LUNG1-001", "LUNG1-002", "LUNG1-003"):
        ct = load_ct(shared_data() / f"{case_id}.zip", label=case_id)
        gtv = load_manual_mask(ManualSource("rtstruct", None, "GTV*"), ct)
        lungs = isolate(ct.volume)
        for post in (PostProcess(candidate_filter=None), PostProcess()):
            m = evaluate_case(predictor.predict(ct.volume, lungs, post).mask, gtv, ct.volume.spacing_zyx)
            shown = {k: round(m[k], 3) if isinstance(m[k], float) else m[k] for k in KEYS}
            print(f"{case_id} (training case), {'with' if post.candidate_filter else 'without'} filter: {shown}")


if __name__ == "__main__":
    main()
