"""CLI command ``review``: accept or reject a case's automatic and manual contours, stored with who and when.

    python -m lungseg review INPUT --db DB --accept automatic|manual|automatic,manual|none
                             [--lesions 1,3] [--roi NAME] [--user NAME] [--comment TEXT]

Lesions are numbered as in the lesion table (largest first).  ``export INPUT --db DB --accepted`` then
writes what was accepted onto the CT.
"""

from __future__ import annotations

import argparse

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
    case = open_case(case_source(args))
    with StudyStore(args.db) as store:
        saved = review.record(store, case, args.user or review.LOCAL_USER, accept, lesions, comment=args.comment or "")
    parts = []
    for d in saved.decisions:
        what = d.contour + (f" lesion(s) {','.join(map(str, d.lesions))}" if d.lesions else "")
        parts.append(f"{what} {'accepted' if d.accepted else 'rejected'}")
    print(f"{case.label}: {'; '.join(parts)} by {saved.reviewer} at {saved.decided_at}")
    return 0


def register(sub) -> None:
    from lungseg.cli.common import add_case_arguments

    p = sub.add_parser("review", help="accept or reject the automatic and manual contours of a case")
    add_case_arguments(p)
    p.add_argument("--db", required=True, help="the database the decision is stored in")
    p.add_argument("--accept", required=True, help="automatic, manual, automatic,manual or none (the others are rejected)")
    p.add_argument("--lesions", help="with --accept automatic: only these lesions (numbers of the lesion table, e.g. 1,3)")
    p.add_argument("--user", help=f"who decides (default: {'local user'!r})")
    p.add_argument("--comment", help="a comment stored with the decision")
    p.set_defaults(func=cmd_review)
