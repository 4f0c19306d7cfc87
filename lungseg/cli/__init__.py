"""Command line: ``python -m lungseg <command> ...``. Each command wraps one library call."""

from __future__ import annotations

import argparse
import sys
import time

from lungseg.errors import LungsegError


def cmd_lungs(args: argparse.Namespace) -> int:
    from lungseg.case import NoCache, ResultCache, open_case_progressively
    from lungseg.cli.common import case_source, write_mask

    t0 = time.perf_counter()
    source = case_source(args, default_manual=False)
    stages = open_case_progressively(source, cache=NoCache() if args.no_cache else ResultCache())
    case = next(stages)  # the CT
    t1 = time.perf_counter()
    case = next(stages)  # lung isolation; the tumour stage is never run
    t2 = time.perf_counter()
    stages.close()
    write_mask(case.ct, case.lungs.lungs, args.out)
    if args.region_out:
        write_mask(case.ct, case.lungs.lung_region, args.region_out)
    how = " (cached)" if case.from_cache else ""
    print(f"{case.label}: {case.lungs.summary()}; load {t1 - t0:.2f} s, isolation {t2 - t1:.2f} s{how}; wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lungseg", description="Lung-tumour segmentation on chest CT.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lungs", help="lung isolation: tight lungs mask and lung region")
    p.add_argument("input", help="DICOM folder, DICOM .zip, NIfTI/NRRD/MHA file, or 'demo'")
    p.add_argument("--out", required=True, help="tight lungs mask (uint8, on the input's grid)")
    p.add_argument("--region-out", help="lung region mask (mirrored and dilated)")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several CT series")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    p.set_defaults(func=cmd_lungs)

    from lungseg.cli import export, review, segment, study

    for group in (segment, review, study, export):
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
