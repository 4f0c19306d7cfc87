"""What every case command shares: INPUT and its contour options → one :class:`~lungseg.case.CaseSource`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_case_arguments(p: argparse.ArgumentParser, *, manual: bool = True) -> None:
    p.add_argument("input", help="the CT: DICOM folder, DICOM .zip, NIfTI/NRRD/MHA file, DICOMweb series URL "
                   "(http(s)://…/studies/STUDY/series/SERIES), or 'demo'")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several CT series")
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
                            series_uid=getattr(args, "series", None), default_manual=default_manual)


def write_mask(loaded, mask, path: str | Path) -> Path:
    """A canonical-grid mask written onto the input's own grid (uint8, compressed)."""
    import SimpleITK as sitk

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(loaded.mask_to_source(mask), str(out), useCompression=True)
    return out
