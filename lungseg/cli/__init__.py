"""Command line: ``python -m lungseg <command> ...``. Each command wraps one library call."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lungseg.errors import LungsegError


def _write_mask(loaded, mask, path: str) -> None:
    import SimpleITK as sitk

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(loaded.mask_to_source(mask), str(out), useCompression=True)


def cmd_lungs(args: argparse.Namespace) -> int:
    from lungseg.imaging.io import load_ct
    from lungseg.lungs import isolate

    t0 = time.perf_counter()
    loaded = load_ct(args.input, series_uid=args.series)
    t1 = time.perf_counter()
    result = isolate(loaded.volume)
    t2 = time.perf_counter()
    _write_mask(loaded, result.lungs, args.out)
    if args.region_out:
        _write_mask(loaded, result.lung_region, args.region_out)
    print(f"{loaded.label}: {result.summary()}; load {t1 - t0:.2f} s, isolation {t2 - t1:.2f} s; wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lungseg", description="Lung-tumour segmentation on chest CT.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lungs", help="lung isolation: tight lungs mask and lung region")
    p.add_argument("input", help="DICOM folder, DICOM .zip, or NIfTI/NRRD/MHA file")
    p.add_argument("--out", required=True, help="tight lungs mask (uint8, on the input's grid)")
    p.add_argument("--region-out", help="lung region mask (mirrored and dilated)")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several CT series")
    p.set_defaults(func=cmd_lungs)

    from lungseg.cli import export, lesion, segment, study

    for group in (segment, study, export, lesion):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LungsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
