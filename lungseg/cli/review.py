"""CLI command ``review``: accept or reject a case's automatic and manual contours, stored with who and when.

    python -m lungseg review INPUT --db DB --accept automatic|manual|automatic,manual|none
                             [--lesions 1,3] [--roi NAME] [--user NAME] [--comment TEXT]
                             [--name GTVp [--kind GTVp|GTVn|GTV|CTV|other] [--edited EDITED.nii.gz]]

Lesions are numbered as in the lesion table (largest first).  ``--name`` accepts the one accepted contour
(the automatic one or its ``--lesions``, or the manual ROI) as a structure of that name; with ``--edited``
the contour as corrected elsewhere (a label image on the CT's grid, any voxel > 0 inside) is stored as a new
SEMIAUTOMATIC version of that structure (the original is kept as version 1) and that version is accepted.
``export INPUT --db DB --accepted`` then writes what was accepted onto the CT, each structure under its name.

    python -m lungseg effort INPUT --db DB [--user NAME] [--csv OUT.csv]

prints (or writes) the editing effort on the case per user and structure (:func:`lungseg.structures.effort_csv`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lungseg.errors import InputError


def parse_lesions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        numbers = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise InputError(f"--lesions {text!r}: expected lesion numbers such as 1,3") from None
    if not numbers or min(numbers) < 1:
        raise InputError(f"--lesions {text!r}: lesion numbers start at 1")
    return numbers


def parse_accept(text: str) -> set[str]:
    parts = {t.strip() for t in text.split(",") if t.strip()}
    if parts == {"none"}:
        return set()
    bad = parts - {"automatic", "manual"}
    if bad or not parts:
        raise InputError(f"--accept {text!r}: expected automatic, manual, automatic,manual or none")
    return parts


def cmd_review(args: argparse.Namespace) -> int:
    from lungseg import review
    from lungseg.case import open_case
    from lungseg.cli.common import case_source
    from lungseg.study import StudyStore

    accept, lesions = parse_accept(args.accept), parse_lesions(args.lesions)
    if args.edited and not args.name:
        raise InputError("--edited needs --name: the name the corrected structure is stored and exported under")
    if args.name and len(accept) != 1:
        raise InputError("--name names one accepted contour: use it with --accept automatic or --accept manual")
    if args.edited and not Path(args.edited).is_file():
        raise InputError(f"--edited {args.edited}: no such file")
    case = open_case(case_source(args))
    user = args.user or review.LOCAL_USER
    edited = None
    if args.edited:
        from lungseg.imaging.io import load_label

        edited = load_label(args.edited, case.ct)
        if not edited.any():
            raise InputError(f"--edited {Path(args.edited).name}: the label image is empty (no voxel above 0)")
    with StudyStore(args.db) as store:
        review.decisions_for(case, accept, lesions)  # every check before anything is stored
        named = None
        if args.name:
            named = review.accept_as(store, case, user, args.name, next(iter(accept)), lesions, edited,
                                     f"imported {Path(args.edited).name}" if args.edited else "", args.kind,
                                     args.comment or "")
        saved = review.record(store, case, user, accept, lesions, comment=args.comment or "", name=args.name)
    parts = []
    for d in saved.decisions:
        what = d.contour + (f" lesion(s) {','.join(map(str, d.lesions))}" if d.lesions else "")
        parts.append(f"{what} {'accepted' if d.accepted else 'rejected'}")
    if named is not None:
        parts.append(f"accepted as {named.name} version {named.version} ({named.provenance}, {named.origin})")
    print(f"{case.label}: {'; '.join(parts)} by {saved.reviewer} at {saved.decided_at}")
    return 0


def cmd_effort(args: argparse.Namespace) -> int:
    from lungseg import structures
    from lungseg.case import open_case
    from lungseg.cli.common import case_source
    from lungseg.study import StudyStore

    case = open_case(case_source(args))
    with StudyStore(args.db) as store:
        efforts = (structures.editing_efforts(store, case, args.user) if args.user
                   else structures.case_efforts(store, case))
    text = structures.effort_csv(efforts, args.csv)
    if args.csv:
        print(f"{case.label}: wrote {len(efforts)} row(s) to {args.csv}")
    else:
        print(text, end="")
    return 0


def register(sub) -> None:
    from lungseg.cli.common import add_case_arguments

    e = sub.add_parser("effort", help="editing effort on a case: active time, edit operations, change (CSV)")
    add_case_arguments(e)
    e.add_argument("--db", required=True, help="the database the viewer recorded the edits in")
    e.add_argument("--user", help="only this user (default: everyone who edited or interacted)")
    e.add_argument("--csv", help="write the CSV here instead of printing it")
    e.set_defaults(func=cmd_effort)

    p = sub.add_parser("review", help="accept or reject the automatic and manual contours of a case")
    add_case_arguments(p)
    p.add_argument("--db", required=True, help="the database the decision is stored in")
    p.add_argument("--accept", required=True, help="automatic, manual, automatic,manual or none (the others are rejected)")
    p.add_argument("--lesions", help="with --accept automatic: only these lesions (numbers of the lesion table, e.g. 1,3)")
    p.add_argument("--name", help="accept the contour as a structure of this name (e.g. GTVp), exported under it")
    p.add_argument("--kind", choices=("GTVp", "GTVn", "GTV", "CTV", "other"),
                   help="with --name: the structure's kind (default: from the name)")
    p.add_argument("--edited", help="with --name: the contour as corrected elsewhere (label image on the CT's grid); "
                   "stored as a new SEMIAUTOMATIC version")
    p.add_argument("--user", help=f"who decides (default: {'local user'!r})")
    p.add_argument("--comment", help="a comment stored with the decision")
    p.set_defaults(func=cmd_review)
