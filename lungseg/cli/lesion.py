"""CLI commands ``segment-lesion``, ``evaluate-lesions`` and ``train-lesion`` (click-to-segment)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lungseg.errors import InputError


def parse_point(text: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(abs(v) < float("inf") for v in values):
        raise InputError(f"--at {text!r}: expected three numbers X,Y,Z in mm, e.g. --at=-45.2,30.0,-120.5")
    return values


def cmd_segment_lesion(args) -> int:
    from lungseg.imaging.io import load_ct
    from lungseg.lesion.segment import DEFAULT_LESION_MODEL, LesionPredictor

    from lungseg.cli.common import check_output, print_warnings
    from lungseg.imaging.io import write_mask

    point = parse_point(args.at)
    out = check_output(args.out)
    t0 = time.perf_counter()
    loaded = load_ct(args.input, series_uid=args.series, skip_unreadable=args.skip_unreadable)
    print_warnings(loaded)
    t1 = time.perf_counter()
    predictor = LesionPredictor(args.model or DEFAULT_LESION_MODEL, threads=args.threads)
    t2 = time.perf_counter()
    result = predictor.segment(loaded.volume, point)
    write_mask(loaded, result.mask, out)
    print(f"{loaded.label}: {result.summary()}; load {t1 - t0:.2f} s, model {t2 - t1:.2f} s, "
          f"click {result.seconds:.2f} s; wrote {out}")
    return 0


def cmd_evaluate_lesions(args) -> int:
    from lungseg.lesion.evaluate import evaluate
    from lungseg.lesion.lidc import nodules_in, read_nodules
    from lungseg.lesion.segment import DEFAULT_LESION_MODEL, LesionPredictor

    nodules = read_nodules(args.dir)
    if args.split != "all":
        nodules = nodules_in(nodules, args.split)
    if args.crops:
        wanted = [c.strip() for c in args.crops.split(",") if c.strip()]
        known = {n.crop: n for n in nodules}
        missing = [c for c in wanted if c not in known]
        if missing:
            raise InputError(f"crops not in {args.dir} ({args.split} split): {', '.join(missing[:5])}")
        nodules = [known[c] for c in wanted]
    if args.limit:
        nodules = nodules[: args.limit]
    if not nodules:
        raise InputError("no crops to evaluate")
    predictor = LesionPredictor(args.model or DEFAULT_LESION_MODEL, threads=args.threads)
    scores, summary = evaluate(nodules, predictor, baseline=args.baseline,
                               progress=None if args.json else (lambda s: print(s, flush=True)))
    summary["split"] = args.split
    from lungseg.lesion.lidc import UNSEEN, read_split, side_of

    split = read_split()
    summary["unseen_patients"] = len({s.patient_id for s in scores if side_of(s.patient_id, split) == UNSEEN})
    summary["model"] = Path(predictor.path).name
    if args.json:
        summary["crops"] = [s.__dict__ for s in scores] if args.per_crop else None
        print(json.dumps(summary))
        return 0
    for s in scores:
        base = f"  baseline {s.baseline_dice:.3f}" if s.baseline_dice is not None else ""
        print(f"{s.crop:24s} {s.diameter_mm:5.1f} mm {s.texture:12s} Dice {s.dice:.3f}{base}")
    base = f" (baseline -500 HU component: {summary['baseline_median_dice']})" if args.baseline else ""
    unseen = f", {summary['unseen_patients']} of them not in models/lidc_split.csv (unseen)" if summary["unseen_patients"] else ""
    print(f"{summary['n']} crops of {summary['patients']} patients ({args.split}{unseen}): median Dice {summary['median_dice']}{base}")
    for title, groups in (("diameter", summary["bands"]), ("texture", summary["textures"]), ("subtlety", summary["subtlety"])):
        for name, g in groups.items():
            b = f", baseline {g['baseline_median_dice']}" if args.baseline else ""
            print(f"  {title} {name:12s} n={g['n']:4d}  median Dice {g['median_dice']}{b}")
    print(f"  median time per click {summary['median_seconds_per_click']} s")
    return 0


def cmd_train_lesion(args) -> int:
    from lungseg.cli.common import check_output
    from lungseg.lesion.train import main

    check_output(args.out, suffixes=(".pt",))

    return main(args)


def register(sub: argparse._SubParsersAction) -> None:
    from lungseg.cli.common import add_reading_arguments

    p = sub.add_parser("segment-lesion", help="click-to-segment: the lesion under one point, as a mask")
    p.add_argument("input", help="DICOM folder, DICOM .zip, or NIfTI/NRRD/MHA file (a full CT or a small crop)")
    p.add_argument("--at", required=True, help="the click X,Y,Z in mm (patient LPS, SimpleITK physical point); write --at=-45,30,-120 when X is negative")
    p.add_argument("--out", required=True, help="lesion mask (uint8, on the input's grid)")
    add_reading_arguments(p)
    p.add_argument("--model", help="click-to-segment weights (default: models/lesion_click.pt)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: one small patch gains little from more, and a busy machine loses)")
    p.set_defaults(func=cmd_segment_lesion)

    p = sub.add_parser("evaluate-lesions", help="click-to-segment Dice on an LIDC crop folder")
    p.add_argument("dir", help="LIDC crop folder (nodules.csv, image/, nodule_mask/)")
    p.add_argument("--split", choices=("validation", "train", "all"), default="validation",
                   help="which patients of models/lidc_split.csv (default: validation, with every patient the file does not "
                   "list: those were never trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-crop", action="store_true", help="with --json: include every crop's scores")
    p.add_argument("--baseline", action="store_true", help="also score the -500 HU threshold-and-component baseline")
    p.add_argument("--crops", help="comma-separated crop names to evaluate (within the split)")
    p.add_argument("--limit", type=int, help="evaluate only the first N crops")
    p.add_argument("--model", help="click-to-segment weights (default: models/lesion_click.pt)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=cmd_evaluate_lesions)

    p = sub.add_parser("train-lesion", help="train the click-to-segment model on LIDC train patients")
    p.add_argument("data", help="LIDC crop folder")
    p.add_argument("--out", required=True, help="weights file to write")
    p.add_argument("--large-lesions", help="shared data folder holding LUNG1-002/003 zips and reference/ masks")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--z-kernel", type=int, choices=(1, 3), default=3, help="3: 3D network; 1: slice-wise 2D")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", help="a local .npz to keep the loaded cases in between runs (outside the repo)")
    p.set_defaults(func=cmd_train_lesion)
