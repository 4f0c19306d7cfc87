"""CLI command ``export``: a mask written onto its source CT as NIfTI, NRRD, DICOM SEG or RTSTRUCT.

    python -m lungseg export INPUT --mask MASK.nii.gz --format nifti|nrrd|seg|rtstruct --out PATH
                             [--name GTV-auto] [--source automatic|manual] [--ct-out DIR] [--series UID]
    python -m lungseg export INPUT --mask M1 --name GTV-1 --mask M2 --name GTV-2 --format rtstruct --out PATH
    python -m lungseg export --db DB --case ID [--study NAME] --format ... --out PATH [--ct-out DIR]
    python -m lungseg export INPUT --db DB --accepted [--roi NAME] --format ... --out PATH [--structure NAME ...]
                             [--send [URL]]

With ``INPUT --db DB --accepted`` every structure the newest decisions on that case accept (``review``, or
the viewer) is written, each under its own name with its provenance (AUTOMATIC, SEMIAUTOMATIC, MANUAL):
one SEG segment / RTSTRUCT ROI each, NIfTI/NRRD one label value each (``--structure`` picks some).
``--send [URL]`` also stores the SEG or RTSTRUCT on a PACS over DICOMweb (STOW-RS; default
``LUNGSEG_PACS_URL``), with the series description ``lungseg accepted <names>``.  INPUT may be a DICOMweb
series URL.

With ``--db --case`` the structures are those the latest study verdict on the case accepts, recomputed from
the case's source recorded in the study database.  Both go through
:func:`lungseg.structures.export_structures`, as the viewer and the Export page do.

MASK is a label image on the input's grid (any voxel > 0 is inside), read with
:func:`lungseg.imaging.io.load_label`.  Several ``--mask`` (each with its own ``--name``, in the same
order) are written as one object: one SEG with a segment each, one structure set with an ROI each.
For SEG/RTSTRUCT of a non-DICOM input, ``--ct-out DIR`` first writes the CT as a new DICOM series
there and the export references it (a later export with the same DIR reuses that series).  Nothing
printed names the patient.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lungseg.errors import InputError


def _mask_from_args(args: argparse.Namespace, loaded) -> dict[str, np.ndarray]:
    """The masks to export by name, on ``loaded.volume``'s canonical grid (``--mask`` / ``--name`` pairs).

    Hook for the study database: the ``--db DB --case ID`` form (the accepted mask of a case) is
    handled in :func:`cmd_export`.
    """
    from lungseg.imaging.io import load_label

    files = args.mask or []
    if not files:
        raise InputError("give the mask to export with --mask FILE, or --db DB --case ID")
    names = args.name or (["GTV-auto"] if len(files) == 1 else [])
    if len(names) != len(files):
        raise InputError(f"{len(files)} --mask but {len(args.name or [])} --name: give one --name per --mask, in order")
    return {name: load_label(f, loaded) for name, f in zip(names, files)}


def _accepted_from_db(args: argparse.Namespace):
    """``--db DB --case ID [--study NAME]``: (case, accepted structures) of the latest verdict on the case.

    The latest verdict (by a rater or an admin) decides which contour, and, when it came from a
    lesion-by-lesion review, which lesions.  The case is opened from its record in the study
    (:mod:`lungseg.study.cases`), so the CLI needs no app state.
    """
    from lungseg.structures import accepted_from_verdict
    from lungseg.study import StudyStore
    from lungseg.study.cases import open_study_case

    store = StudyStore(args.db)
    try:
        studies = [store.study(args.study)] if args.study else store.studies()
        hits = [(st, row) for st in studies for row in store.cases(st.id) if row["case_id"] == args.case]
        if not hits:
            raise InputError(f"case {args.case} is in no study of {args.db}")
        if len(hits) > 1:
            raise InputError(f"case {args.case} is in several studies: name one with --study")
        st, row = hits[0]
        rev = store.latest_review(st.id, args.case)  # rater or admin verdict
        review = store.case_review(rev["case_review_id"]) if rev and rev.get("case_review_id") else None
    finally:
        store.close()
    if rev is None or rev["accepted_source"] not in ("automatic", "manual"):
        raise InputError(f"case {args.case} has no accepted contour (review it first)")
    case = open_study_case(args.case, row["metadata"])
    return case, accepted_from_verdict(case, rev, review), f"verdict by {rev['rater_name']} at {rev['reviewed_at']}"


def _accepted_of_input(args: argparse.Namespace):
    """``INPUT --db DB --accepted``: (case, accepted structures) by the newest decisions on the case."""
    from lungseg.case import open_case
    from lungseg.cli.common import case_source
    from lungseg.structures import accepted_structures
    from lungseg.study import StudyStore

    case = open_case(case_source(args))
    with StudyStore(args.db) as store:
        accepted = accepted_structures(store, case)
        decided = bool(store.structure_decisions(case.key)) or store.latest_case_review(
            case.key, source=case.source.as_dict()) is not None
    if not decided:
        raise InputError(f"{case.label}: no review of this case in {args.db} (review it first)")
    return case, accepted, "newest decisions"


def _export_accepted(args: argparse.Namespace, case, accepted, said: str) -> int:
    from lungseg.structures import export_structures

    t0 = time.perf_counter()
    names = list(args.structure) if args.structure else None
    if args.contour:
        names = ["GTV-auto" if args.contour == "automatic" else case.manual.name if case.manual else "manual"]
    chosen = [n for n in (names or accepted)]
    description = args.description
    if args.send is not None and not description:
        from lungseg.dicomweb import accepted_description

        description = accepted_description(chosen)
    paths = export_structures(case, accepted, args.format, args.out, names=names, ct_out=args.ct_out,
                              description=description)
    what = ", ".join(f"{n} {accepted[n].provenance}" for n in chosen if n in accepted)
    print(f"{case.label}: wrote {args.format} {', '.join(map(str, paths))} ({what}; {said}) "
          f"in {time.perf_counter() - t0:.2f} s")
    _send(args, paths)
    return 0


def _send(args: argparse.Namespace, paths) -> None:
    """``--send [URL]``: store the written SEG/RTSTRUCT on the PACS (default LUNGSEG_PACS_URL)."""
    if args.send is None:
        return
    from lungseg.dicomweb import send_files

    stored = send_files(paths, args.send or None)
    for s in stored:
        print(f"sent {s.modality} \"{s.series_description}\" to the PACS: series {s.series_uid}")


def _ct_of(args: argparse.Namespace):
    """The CT of INPUT through the case cache (only its first stage: no lungs, no model)."""
    from lungseg.case import open_case_progressively, with_dicom_headers
    from lungseg.cli.common import case_source

    stages = open_case_progressively(case_source(args, default_manual=False))
    case = next(stages)
    stages.close()
    return with_dicom_headers(case.ct)


def cmd_export(args: argparse.Namespace) -> int:
    from lungseg.export import export_masks, with_dicom_series

    if args.send is not None and args.format not in ("seg", "rtstruct"):
        raise InputError("--send stores DICOM on the PACS: use --format seg or rtstruct")
    from lungseg.cli.common import check_output

    out = Path(args.out)
    check_output(out, suffixes=None, folder=out.is_dir() or not out.suffix)
    check_output(args.ct_out, "--ct-out", folder=True)

    if args.accepted:
        if not (args.db and args.input):
            raise InputError("--accepted needs INPUT and --db DB")
        return _export_accepted(args, *_accepted_of_input(args))
    if getattr(args, "db", None):
        if not args.case:
            raise InputError("--db needs --case ID")
        return _export_accepted(args, *_accepted_from_db(args))
    t0 = time.perf_counter()
    if not args.input:
        raise InputError("give the CT to export onto")
    loaded = _ct_of(args)
    masks = _mask_from_args(args, loaded)
    if args.format in ("seg", "rtstruct") and loaded.dicom is None and args.ct_out:
        loaded = with_dicom_series(loaded, args.ct_out)
        print(f"{loaded.label}: wrote the CT as a DICOM series in {args.ct_out}")
    path = export_masks(loaded, masks, args.format, Path(args.out), description=args.description, source=args.source)
    sizes = ", ".join(f"{name} {int(m.sum())} voxels, {int(m.sum()) * loaded.volume.voxel_volume_ml:.1f} ml"
                      for name, m in masks.items())
    print(f"{loaded.label}: wrote {args.format} {path} ({sizes}) in {time.perf_counter() - t0:.2f} s")
    _send(args, [path])
    return 0


def register(sub) -> None:
    from lungseg.cli.common import add_reading_arguments

    p = sub.add_parser("export", help="write a mask onto its CT as NIfTI, NRRD, DICOM SEG or RTSTRUCT")
    p.add_argument("input", nargs="?", help="the CT: DICOM folder, DICOM .zip, or NIfTI/NRRD/MHA file "
                   "(not with --db: the study records the case's CT)")
    p.add_argument("--mask", action="append", help="label image on the input's grid (voxels > 0 are inside); "
                   "repeat for several masks in one object, each with its --name")
    p.add_argument("--db", help="database: with --accepted, the reviews of INPUT; with --case, a study's case")
    p.add_argument("--accepted", action="store_true", help="export what the latest review of INPUT accepted")
    p.add_argument("--roi", help="with --accepted: the manual contour's ROI (default GTV-1, else the first GTV*)")
    p.add_argument("--manual", help="with --accepted: the manual contour file, as given to review")
    p.add_argument("--automatic", help="with --accepted: the automatic contour file, as given to review")
    p.add_argument("--automatic-roi", help="with --accepted: ROI/segment of --automatic")
    p.add_argument("--model", help="with --accepted: the model weights, as given to review")
    p.add_argument("--structure", action="append", help="with --accepted or --case: only this accepted structure "
                   "(repeat for several)")
    p.add_argument("--contour", choices=("automatic", "manual"), help="with --accepted: only the accepted automatic "
                   "contour (GTV-auto) or manual ROI")
    p.add_argument("--case", help="with --db: the case id")
    p.add_argument("--study", help="with --db: the study name when the case is in several")
    p.add_argument("--format", required=True, choices=("nifti", "nrrd", "seg", "rtstruct"))
    p.add_argument("--out", required=True, help="output file (or folder: named after --name)")
    p.add_argument("--name", action="append", help="segment / ROI name, one per --mask in order (default GTV-auto)")
    p.add_argument("--description", help="series / structure set description")
    p.add_argument("--source", default="automatic", choices=("automatic", "manual"),
                   help="whether the mask is the automatic U-Net result or a manual contour")
    p.add_argument("--ct-out", help="for SEG/RTSTRUCT of a non-DICOM input: write the CT as a DICOM series here first")
    add_reading_arguments(p)
    p.add_argument("--send", nargs="?", const="", metavar="URL", help="also store the SEG/RTSTRUCT on the PACS "
                   "(DICOMweb STOW-RS) at URL (default: LUNGSEG_PACS_URL)")
    p.set_defaults(func=cmd_export)
