"""CLI command ``train``: the shipped recipe (:func:`lungseg.training.train_model`) on any training source.

    python -m lungseg train --data SOURCE... --out MODEL.pt [--steps N] [--time-budget MIN]
                            [--device auto|cpu|cuda] [--resume] [--folds loo|none|auto]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_train(args) -> int:
    from lungseg.cli.common import check_output

    check_output(args.out, suffixes=(".pt",))  # before hours of training, not after
    import torch

    from lungseg.training import TrainSpec, train_model

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = TrainSpec(data=tuple(args.data), out=Path(args.out), steps=args.steps, time_budget_min=args.time_budget,
                     device=args.device, resume=args.resume, folds=args.folds, roi=args.roi, seed=args.seed,
                     batch_size=args.batch_size, crop=args.crop, workers=args.workers,
                     tumour_free=tuple(args.tumour_free or ()), mine_nodules=args.mine_nodules,
                     classifier_seeds=tuple(args.classifier_seeds), classifier_epochs=args.classifier_epochs,
                     eval_nodules=args.eval_nodules)
    record = train_model(spec, log=lambda m: print(m, flush=True))
    loo = record.get("loo")
    extra = f"; leave-one-out median Dice {loo['median_dice']:.3f}" if loo else ""
    print(f"trained on {len(record['hosts'])} case(s) ({', '.join(record['hosts'])}){extra}; wrote {args.out} and "
          f"{Path(args.out).with_suffix('.md')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the automatic model (the shipped recipe)")
    p.add_argument("--data", nargs="+", required=True,
                   help="training sources: a DICOM folder or zip with its RTSTRUCT, an MSD task folder (imagesTr/, labelsTr/), "
                   "a folder of image/label pairs, patient folders (NSCLC-Radiomics from TCIA: LUNG1-xxx/STUDY/SERIES/), "
                   "LIDC crops (nodules.csv, image/, nodule_mask/), a training pack .npz, reviews:DB, "
                   "pacs:patient-id=ID[,study-date=D]")
    p.add_argument("--out", required=True, help="weights to write (MODEL.pt; the card goes to MODEL.md, the run to MODEL.run/)")
    p.add_argument("--steps", type=int, default=3500, help="optimiser steps per U-Net fit (default 3500)")
    p.add_argument("--time-budget", type=float, help="minutes for the whole run: the fits' steps are cut to fit it")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", action="store_true", help="continue the run in MODEL.run/ from its last checkpoint")
    p.add_argument("--folds", default="auto", choices=["loo", "none", "auto"],
                   help="loo: leave-one-patient-out fold models, second stage and calibrated filter; none: the final model "
                   "only; auto (default): loo on a GPU, none on a CPU")
    p.add_argument("--roi", default="GTV*", help="the tumour's RTSTRUCT ROI name or pattern (default GTV*)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, help="samples per step (default 32 on a GPU, 8 on a CPU)")
    p.add_argument("--crop", type=int, default=160, help="sample size in 1.5 mm pixels (default 160: 240 mm)")
    p.add_argument("--workers", type=int, help="data-loader processes per fit (default 3 on a GPU, 0 on a CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--tumour-free", nargs="*", help="scans without tumour to count the fold models' false lesions on")
    p.add_argument("--mine-nodules", type=int, default=150, help="train-side nodules placed per fold for the second stage")
    p.add_argument("--classifier-seeds", type=int, nargs="*", default=[1, 2, 3],
                   help="seeds of the second stage's classifiers, averaged (none: no second stage, the filter's rules only)")
    p.add_argument("--classifier-epochs", type=int, default=25)
    p.add_argument("--eval-nodules", type=int, help="validation-side nodules placed per held-out patient (default: all >= 10 mm)")
    p.set_defaults(func=cmd_train)
