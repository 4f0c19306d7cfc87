"""Command line: ``python -m lungseg <command> ...``. Each command wraps one library call."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import sys
import time

from lungseg.errors import LungsegError


def cmd_lungs(args: argparse.Namespace) -> int:
    from lungseg.case import open_case_progressively
    from lungseg.cli.common import case_source, check_output, print_warnings
    from lungseg.imaging.io import write_mask

    check_output(args.out)
    check_output(args.region_out, "--region-out")
    t0 = time.perf_counter()
    source = case_source(args, default_manual=False)
    with cache_for(args) as cache:
        stages = open_case_progressively(source, cache=cache)
        case = next(stages)  # the CT
        t1 = time.perf_counter()
        case = next(stages)  # lung isolation; the tumour stage is never run
        t2 = time.perf_counter()
        stages.close()
    print_warnings(case.ct)
    write_mask(case.ct, case.lungs.lungs, args.out)
    if args.region_out:
        write_mask(case.ct, case.lungs.lung_region, args.region_out)
    how = " (cached)" if case.from_cache else ""
    print(f"{case.label}: {case.lungs.summary()}; load {t1 - t0:.2f} s, isolation {t2 - t1:.2f} s{how}; wrote {args.out}")
    return 0


@contextlib.contextmanager
def cache_for(args: argparse.Namespace):
    """The result cache of a command: the shared one, or with ``--no-cache`` one that leaves nothing behind."""
    from lungseg.case import NoCache, ResultCache

    if not getattr(args, "no_cache", False):
        yield ResultCache()
        return
    cache = NoCache()
    try:
        yield cache
    finally:
        cache.close()


# Every command and the module whose ``register(sub)`` adds it, with its one-line help.  A module
# is imported only when one of its commands runs (a lazy registry): ``python -m lungseg --help``
# then answers without importing torch, SimpleITK, pydicom, scipy or the study database.
# A new command group: one line per command here, and ``register(sub)`` in its module.
COMMANDS: dict[str, tuple[str, str]] = {
    "lungs": (__name__, "lung isolation: tight lungs mask and lung region"),
    "segment": ("lungseg.cli.segment", "tumour segmentation with the 2D U-Net"),
    "train": ("lungseg.cli.train", "train the automatic model (the shipped recipe)"),
    "evaluate": ("lungseg.cli.segment", "Dice, HD95, surface Dice, volumes, lesion detection"),
    "review": ("lungseg.cli.review", "accept or reject the automatic and manual contours of a case"),
    "effort": ("lungseg.cli.review", "editing effort on a case: active time, edit operations, change (CSV)"),
    "study": ("lungseg.cli.study", "preference study: create, invite, report, import"),
    "admin": ("lungseg.cli.study", "admin accounts"),
    "db": ("lungseg.cli.study", "database maintenance"),
    "export": ("lungseg.cli.export", "write a mask onto its CT as NIfTI, NRRD, DICOM SEG or RTSTRUCT"),
    "pacs": ("lungseg.cli.pacs", "find series on a PACS (DICOMweb)"),
    "batch": ("lungseg.cli.batch", "run a cohort (files, folders, PACS series) on Dask; resumable"),
    "cache": ("lungseg.cli.cache", "patient data kept on disk: info, clear"),
    "segment-lesion": ("lungseg.cli.lesion", "click-to-segment: the lesion under one point, as a mask"),
    "evaluate-lesions": ("lungseg.cli.lesion", "click-to-segment Dice on an LIDC crop folder"),
    "train-lesion": ("lungseg.cli.lesion", "train the click-to-segment model on LIDC train patients"),
}


def register(sub: argparse._SubParsersAction) -> None:
    from lungseg.cli.common import add_reading_arguments

    p = sub.add_parser("lungs", help=COMMANDS["lungs"][1])
    p.add_argument("input", help="DICOM folder, DICOM .zip, NIfTI/NRRD/MHA file, DICOMweb series URL, or 'demo'")
    p.add_argument("--out", required=True, help="tight lungs mask (uint8, on the input's grid)")
    p.add_argument("--region-out", help="lung region mask (mirrored and dilated)")
    add_reading_arguments(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache; leave "
                   "nothing on disk")
    p.set_defaults(func=cmd_lungs)


def _chosen_command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (``error: … (see --help)``), exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {self.prog.removeprefix('python -m ')}: {message} (see --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser.  Given ``argv``, only the module of the command it names is
    imported and the other commands are listed by name and help; without, every module is."""
    parser = OneLineParser(prog="python -m lungseg", description="Lung-tumour segmentation on chest CT.")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = None if argv is None else _chosen_command(argv)
    wanted = {module for name, (module, _) in COMMANDS.items() if argv is None or name == chosen}
    registered: set[str] = set()
    for name, (module, help_line) in COMMANDS.items():
        if name in sub.choices:
            continue
        if module in wanted:
            if module not in registered:
                (sys.modules[__name__] if module == __name__ else importlib.import_module(module)).register(sub)
                registered.add(module)
            if name in sub.choices:
                continue
        sub.add_parser(name, help=help_line)  # listed only; its own options come with its module
    return parser


def keep_freed_memory() -> None:
    """Tell glibc to keep freed memory in the process for reuse.

    A run makes and drops dozens of full-volume arrays.  By default glibc hands each one back to the
    kernel (munmap) and the next is page-faulted in afresh, 4 KiB at a time: on a 512² × 134 scan that
    is ~160,000 page faults and about half a second of system time.  A command is short-lived, so
    keeping the memory costs nothing; peak RSS stays the same.  Called by
    ``python -m lungseg`` only, never inside a long-lived process that imports the library."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: large blocks from the heap, not from fresh mappings
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never shrink the heap
    except (OSError, AttributeError):
        pass  # not glibc (musl, …): the defaults stand


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
    except Exception as exc:  # noqa: BLE001 - never a traceback on the command line (LUNGSEG_DEBUG=1 shows it)
        if os.environ.get("LUNGSEG_DEBUG"):
            raise
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        print(f"error: {type(exc).__name__}: {(lines[-1] if lines else 'failed')[:200]}", file=sys.stderr)
        return 2
