"""CLI commands ``segment`` and ``evaluate`` (each wraps library calls)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lungseg.errors import LungsegError


def cmd_segment(args) -> int:
    from lungseg.cli.common import case_source, check_output, print_warnings
    from lungseg.imaging.io import write_mask

    check_output(args.out)  # before torch is imported and the model loaded
    check_output(args.prob_out, "--prob-out")
    from lungseg.case import default_predictor, open_case_progressively
    from lungseg.cli import cache_for
    from lungseg.tumour.segment import PostProcess
    t0 = time.perf_counter()
    predictor = default_predictor(args.model, args.device)
    source = case_source(args, default_manual=False)
    post = PostProcess(threshold=args.threshold, min_volume_ml=args.min_volume_ml, keep_largest=args.keep_largest)
    times = [t0]
    with cache_for(args) as cache:
        for case in open_case_progressively(source, predictor, cache=cache, post=post):
            times.append(time.perf_counter())
    load, lungs, unet = (times[1] - times[0]), (times[2] - times[1]), (times[3] - times[2])
    print_warnings(case.ct)
    write_mask(case.ct, case.automatic.mask, args.out)
    if args.prob_out:
        probability = predictor.predict(case.volume, case.lungs, post).probability
        write_mask(case.ct, probability.astype(np.float32), args.prob_out)
    t4 = time.perf_counter()
    lesions = case.lesions
    total = sum(l["volume_ml"] for l in lesions)
    how = " (cached)" if case.from_cache else f" ({predictor.device})"
    print(f"{case.label}: {len(lesions)} lesion(s), {total:.1f} ml; load {load:.2f} s, lungs {lungs:.2f} s, "
          f"U-Net {unet:.2f} s{how}, write {t4 - times[3]:.2f} s")
    for l in lesions:
        print(f"  lesion {l['lesion']}: {l['volume_ml']:.1f} ml, {l['longest_axial_diameter_mm']:.0f} mm, "
              f"slices {l['first_slice']}-{l['last_slice']}, {l['side']}")
    return 0


def evaluate_cohort(cases, predictor, out_csv=None) -> list[dict]:
    """Segment every :class:`~lungseg.training.sources.TrainingCase` and compare with its contour; one row of
    metrics and strata per case (:func:`lungseg.evaluation.case_row`)."""
    import csv

    from lungseg.case import AutomaticSource, CaseSource, open_case
    from lungseg.evaluation import case_row

    rows = []
    for ref in cases:
        case = open_case(CaseSource(ref.ct, AutomaticSource("model"), ref.manual, label=ref.case_id), predictor)
        rows.append(case_row(ref.case_id, case.automatic.mask, case.manual.mask, case.volume, case.lungs))
    if out_csv and rows:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        with open(out_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


def _read_mask(path: str, option: str):
    """A mask file for ``evaluate`` (its data file, if any, inside its own folder)."""
    import SimpleITK as sitk

    from lungseg.imaging.io import check_image_data_files

    if not Path(path).is_file():
        raise LungsegError(f"{option} {path}: no such file")
    check_image_data_files(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise LungsegError(f"{option} {Path(path).name}: not a readable image ({lines[-1][:120] if lines else ''})") from None


def cmd_evaluate(args) -> int:
    import SimpleITK as sitk

    from lungseg.metrics import evaluate_case

    if args.cases:
        from lungseg.cli.common import check_output

        check_output(args.csv, "--csv", suffixes=(".csv",))
        from lungseg.case import default_predictor
        from lungseg.evaluation import stratified
        from lungseg.training.sources import discover

        refs = [r for r in discover(args.cases, args.roi).cases if not args.only or r.case_id in args.only]
        if not refs:
            raise LungsegError(f"{args.cases}: no labelled cases found")
        rows = evaluate_cohort(refs, default_predictor(args.model, args.device), args.csv)
        summary = stratified(rows)
        if args.json:
            print(json.dumps({"cases": rows, "summary": summary}, default=float))
        else:
            for r in rows:
                print(f"{r['case_id']}: Dice {r['dice']:.3f}, HD95 {r['hd95_mm']:.1f} mm, surface Dice@2mm {r['surface_dice']:.3f}, "
                      f"volume {r['volume_pred_ml']:.1f}/{r['volume_ref_ml']:.1f} ml, lesions TP {r['lesion_true_positives']} "
                      f"FP {r['lesion_false_positives']} FN {r['lesion_false_negatives']}")
            for key, groups in summary.items():
                for value, g in ({"all": groups} if key == "all" else groups).items():
                    print(f"{key} {value}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                         for k, v in g.items()))
        return 0
    if not (args.pred and args.ref):
        raise LungsegError("give --pred and --ref, or --cases DIR for a cohort")
    pred_img, ref_img = _read_mask(args.pred, "--pred"), _read_mask(args.ref, "--ref")
    if pred_img.GetSize() != ref_img.GetSize() or not np.allclose(pred_img.GetOrigin(), ref_img.GetOrigin(), atol=1e-2):
        raise LungsegError("prediction and reference are on different grids")
    sp = ref_img.GetSpacing()
    result = evaluate_case(sitk.GetArrayFromImage(pred_img) > 0, sitk.GetArrayFromImage(ref_img) > 0, (sp[2], sp[1], sp[0]))
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from lungseg.cli.common import add_reading_arguments

    p = sub.add_parser("segment", help="tumour segmentation with the 2D U-Net")
    p.add_argument("input", help="the CT: DICOM folder, DICOM .zip, NIfTI/NRRD/MHA file, DICOMweb series URL "
                   "(http(s)://…/studies/STUDY/series/SERIES), or 'demo'")
    p.add_argument("--out", required=True, help="tumour mask (uint8, on the input's grid)")
    p.add_argument("--prob-out", help="tumour probability (float32, on the input's grid)")
    p.add_argument("--model", help="tumour model weights (default: the shipped model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_reading_arguments(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache; leave "
                   "nothing on disk")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--min-volume-ml", type=float, default=0.1)
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest lesion (as the paper did)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="Dice, HD95, surface Dice, volumes, lesion detection")
    p.add_argument("--pred", help="predicted mask (image file)")
    p.add_argument("--ref", help="reference mask on the same grid")
    p.add_argument("--cases", help="cohort form: labelled cases in any layout train --data takes (MSD, pairs, DICOM + RTSTRUCT)")
    p.add_argument("--only", nargs="*", help="cohort form: only these case ids")
    p.add_argument("--roi", default="GTV*")
    p.add_argument("--model")
    p.add_argument("--device", default="auto")
    p.add_argument("--csv", help="cohort form: write per-case metrics here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
