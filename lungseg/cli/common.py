"""What every case command shares: INPUT and its contour options → one :class:`~lungseg.case.CaseSource`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


MASK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def add_reading_arguments(p: argparse.ArgumentParser) -> None:
    """Options every command that reads a CT shares: ``--series`` and ``--skip-unreadable``."""
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several CT series")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="go on without DICOM files that cannot be read (a warning) instead of refusing the series")


def add_case_arguments(p: argparse.ArgumentParser, *, manual: bool = True) -> None:
    p.add_argument("input", help="the CT: DICOM folder, DICOM .zip, NIfTI/NRRD/MHA file, DICOMweb series URL "
                   "(http(s)://…/studies/STUDY/series/SERIES), or 'demo'")
    add_reading_arguments(p)
    if manual:
        p.add_argument("--roi", help="manual contour: ROI of the structure set beside the CT (e.g. GTV-1), "
                       "or the ROI/segment/label of --manual")
        p.add_argument("--manual", help="manual contour file: RTSTRUCT, DICOM SEG or label image")
    p.add_argument("--automatic", help="automatic contour made by another tool (mask, SEG or RTSTRUCT); "
                   "default: the tumour model")
    p.add_argument("--automatic-roi", help="ROI/segment of --automatic")
    p.add_argument("--model", help="tumour model weights (default: the shipped model)")


def case_source(args: argparse.Namespace, default_manual: bool = True):
    from lungseg.case import source_for_input

    return source_for_input(args.input, roi=getattr(args, "roi", None), manual=getattr(args, "manual", None),
                            automatic=getattr(args, "automatic", None),
                            automatic_roi=getattr(args, "automatic_roi", None), model=getattr(args, "model", None),
                            series_uid=getattr(args, "series", None), default_manual=default_manual,
                            skip_unreadable=getattr(args, "skip_unreadable", False))


def check_output(path: str | Path | None, option: str = "--out", *, suffixes: tuple[str, ...] | None = MASK_SUFFIXES,
                 folder: bool = False) -> Path | None:
    """Refuse, before any work, an output path that cannot be written: a folder where a file is meant (or a
    file where a folder is), a missing or unwritable folder, a file name of an unknown format."""
    from lungseg.errors import InputError

    if path is None:
        return None
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise InputError(f"{option} {p}: is a file, not a folder")
        parent = p if p.exists() else p.parent
    else:
        if p.is_dir():
            raise InputError(f"{option} {p}: is a folder; give a file name"
                             + (f" such as {p / ('mask' + suffixes[1 if len(suffixes) > 1 else 0])}" if suffixes else ""))
        if suffixes and not p.name.lower().endswith(suffixes):
            raise InputError(f"{option} {p.name}: expected a file name ending in {', '.join(suffixes)}")
        parent = p.parent
    parent = parent if str(parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{option} {p}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{option} {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: cannot write in {parent} (permission denied)")
    return p


def print_warnings(loaded) -> None:
    """What reading the CT noted (series skipped, others in the folder, files skipped), one line each."""
    import sys

    for w in getattr(loaded, "warnings", ()):
        print(f"warning: {w}", file=sys.stderr)
