"""CLI commands ``segment``, ``train`` and ``evaluate`` (each wraps library calls)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from lungseg.errors import LungsegError


def cmd_segment(args) -> int:
    from lungseg.cli.common import case_source, check_output, print_warnings, write_mask

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


def cmd_train(args) -> int:
    from lungseg.cli.common import check_output
    from lungseg.tumour.datasets import discover, load_case_slices, real_with_synthetic_tumours, synthetic_cases

    check_output(args.out, suffixes=(".pt",))  # before hours of training, not after
    from lungseg.tumour.train import TrainConfig, plot_history, train
    from lungseg.tumour.unet import UNetConfig

    cases, ids = [], []
    for root in args.data or []:
        for ref in discover(root, args.roi):
            if ref.case_id in (args.exclude or []):
                continue
            stack, ct, _ = load_case_slices(ref)
            cases.append((stack.images, stack.masks))
            ids.append(ref.case_id)
            for j, s in enumerate(real_with_synthetic_tumours(ct, args.synthetic_per_real, seed=len(ids))):
                cases.append((s.images, s.masks))
                ids.append(f"{ref.case_id}+synthetic-{j}")
    for cid, s in synthetic_cases(args.synthetic, seed=args.seed):
        cases.append((s.images, s.masks))
        ids.append(cid)
    if not cases:
        raise LungsegError("no training cases: give --data folders or --synthetic N")
    val_cases = [c for c, i in zip(cases, ids) if i.startswith("synthetic")][-1:] or cases[-1:]
    train_cases = cases if len(cases) == 1 else [c for c in cases if all(c is not v for v in val_cases)]
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, crop_size=args.crop, seed=args.seed,
                         negative_ratio=args.negative_ratio,
                         device=args.device, unet=UNetConfig(base_channels=args.base_channels, depth=4),
                         in_plane_spacing_mm=(1.0, 1.0))
    out = Path(args.out)
    run_dir = out.with_suffix(".run")
    history = train(config, train_cases, val_cases, run_dir, resume=True, progress=not args.quiet, case_ids=ids,
                    extra_meta={"in_plane_mm": 1.0, "version": time.strftime("%Y%m%d")})
    plot_history(history, run_dir)
    best = run_dir / "model_best.pt"
    shutil.copyfile(best if best.exists() else run_dir / "model.pt", out)
    print(f"trained on {len(train_cases)} cases ({sum(len(c[0]) for c in train_cases)} slices); wrote {out}; "
          f"figures in {run_dir}")
    return 0


def evaluate_cohort(cases, predictor, out_csv=None) -> list[dict]:
    """Segment every case and compare with its reference; rows of metrics per case."""
    import csv

    from lungseg.case import AutomaticSource, CaseSource, ManualSource, open_case
    from lungseg.metrics import evaluate_case

    rows = []
    for ref in cases:
        manual = ManualSource("label", str(ref.label)) if ref.label is not None else ManualSource("rtstruct", None, ref.roi)
        case = open_case(CaseSource(str(ref.image), AutomaticSource("model"), manual, label=ref.case_id), predictor)
        truth, spacing = case.manual.mask, case.volume.spacing_zyx
        m = evaluate_case(case.automatic.mask, truth, spacing)
        m.update(case_id=ref.case_id, slice_thickness_mm=case.volume.spacing[2],
                 reference_ml=round(float(truth.sum() * case.volume.voxel_volume_ml), 2),
                 reference_in_region=round(float((truth & case.lungs.lung_region).sum() / max(1, truth.sum())), 4))
        rows.append(m)
    if out_csv and rows:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        with open(out_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


def summarise(rows: list[dict]) -> dict:
    dice = [r["dice"] for r in rows]
    return {
        "cases": len(rows),
        "median_dice": float(np.median(dice)) if dice else None,
        "mean_dice": float(np.mean(dice)) if dice else None,
        "median_hd95_mm": float(np.median([r["hd95_mm"] for r in rows])) if rows else None,
        "median_surface_dice_2mm": float(np.median([r["surface_dice"] for r in rows])) if rows else None,
        "lesions_detected": int(sum(r["lesion_true_positives"] for r in rows)),
        "lesions_missed": int(sum(r["lesion_false_negatives"] for r in rows)),
        "false_positive_lesions": int(sum(r["lesion_false_positives"] for r in rows)),
    }


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
        from lungseg.tumour.datasets import discover
        from lungseg.tumour.segment import DEFAULT_MODEL, TumourPredictor

        refs = [r for r in discover(args.cases, args.roi) if not args.only or r.case_id in args.only]
        if not refs:
            raise LungsegError(f"{args.cases}: no labelled cases found")
        rows = evaluate_cohort(refs, TumourPredictor(args.model or DEFAULT_MODEL, args.device), args.csv)
        summary = summarise(rows)
        if args.json:
            print(json.dumps({"cases": rows, "summary": summary}, default=float))
        else:
            for r in rows:
                print(f"{r['case_id']}: Dice {r['dice']:.3f}, HD95 {r['hd95_mm']:.1f} mm, surface Dice@2mm {r['surface_dice']:.3f}, "
                      f"volume {r['volume_pred_ml']:.1f}/{r['volume_ref_ml']:.1f} ml, lesions TP {r['lesion_true_positives']} "
                      f"FP {r['lesion_false_positives']} FN {r['lesion_false_negatives']}")
            print("summary: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
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

    p = sub.add_parser("train", help="train the U-Net")
    p.add_argument("--data", nargs="*", help="case folders (DICOM/zip + RTSTRUCT, image + label) or MSD task folders")
    p.add_argument("--roi", default="GTV*", help="RTSTRUCT ROI name or pattern of the tumour")
    p.add_argument("--exclude", nargs="*", help="case ids to hold out")
    p.add_argument("--synthetic", type=int, default=0, help="synthetic phantom cases to add")
    p.add_argument("--synthetic-per-real", type=int, default=0, help="synthetic tumours inserted into each real case's lungs")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--negative-ratio", type=float, default=1.0, help="tumour-free slices per tumour slice, each epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="Dice, HD95, surface Dice, volumes, lesion detection")
    p.add_argument("--pred", help="predicted mask (image file)")
    p.add_argument("--ref", help="reference mask on the same grid")
    p.add_argument("--cases", help="cohort form: a folder of labelled cases (see datasets.discover)")
    p.add_argument("--only", nargs="*", help="cohort form: only these case ids")
    p.add_argument("--roi", default="GTV*")
    p.add_argument("--model")
    p.add_argument("--device", default="auto")
    p.add_argument("--csv", help="cohort form: write per-case metrics here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
