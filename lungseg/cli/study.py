"""Command line for the preference study: ``python -m lungseg study|admin|db ...``.

The project's main parser calls :func:`register`; every leaf command sets ``func`` to a
callable ``func(args) -> int`` (the exit status) that prints ``error: ...`` on one line and
returns 2 instead of raising on bad input.  :func:`main` runs the same commands standalone
(``python -m lungseg.cli.study ...``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from lungseg.errors import LungsegError

from lungseg.study.access import backup, set_admin_password
from lungseg.study.csvio import export_votes, import_votes
from lungseg.study.design import CaseSpec, DesignParams, StudyError
from lungseg.study.report import format_report, study_report
from lungseg.study.store import StudyStore, default_db_path

Handler = Callable[[argparse.Namespace], int]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in a bare container
        return "cli"


def _guarded(handler: Handler) -> Handler:
    """Run ``handler``, turning expected failures into one ``error:`` line and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (LungsegError, OSError, sqlite3.Error, json.JSONDecodeError) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _open(args: argparse.Namespace) -> StudyStore:
    return StudyStore(args.db)


def _pick_study(store: StudyStore, name: str | None) -> str:
    if name:
        return store.study(name).name
    studies = store.studies()
    if len(studies) == 1:
        return studies[0].name
    if not studies:
        raise StudyError(f"{store.path} has no studies")
    raise StudyError(f"several studies, choose one with --study: {', '.join(s.name for s in studies)}")


# ----------------------------------------------------------------------------- handlers


def _study_create(args: argparse.Namespace) -> int:
    """Validate every case record first (nothing is opened or written on a bad entry), then open
    each case, then create the study in one transaction."""
    from lungseg.study.cases import entry_name, one_line, read_case_records, study_case

    name = _study_name(args)
    path = Path(args.cases)
    records = read_case_records(path)
    if args.kind == "contouring":
        return _contouring_create(args, name, path, records)
    specs: list[CaseSpec] = []
    for n, record in enumerate(records, start=1):
        try:
            spec, case = study_case(record.case_id, record.source, metadata=record.metadata)
        except (LungsegError, OSError, ValueError) as exc:
            raise StudyError(f"{entry_name(path, n, {'case_id': record.case_id})}: {one_line(exc)}") from None
        meta = spec.metadata.extra
        version = f", model {meta['model_version']}" if meta.get("model_version") else ""
        print(f"{record.case_id}: {len(spec.slices)} contoured slices; manual {meta['manual_name']}; "
              f"automatic: {meta['automatic_description']}{version}")
        specs.append(spec)
    stand_ins = [r.case_id for r in records if r.source.automatic.kind == "stand-in"]
    if stand_ins:
        print(f"note: {len(stand_ins)} case(s) use the stand-in automatic contour (the manual contour dilated and "
              f"shifted; demo/test only, not a model): {', '.join(stand_ins)}", file=sys.stderr)
    params = DesignParams(
        slices_per_case=args.slices_per_case, repeats=args.repeats, turing=args.turing, seed=args.seed
    )
    with _open(args) as store:
        study = store.create_study(name, specs, params, actor=_actor())
        n_items = len(store.item_specs(study.id))
    print(f"created study {study.name!r} (id {study.id}): {len(specs)} cases, {n_items} items")
    return 0


def _contouring_create(args: argparse.Namespace, name: str, path: Path, records: list) -> int:
    """A contouring study: each case opened once (its grid, the automatic contour the assisted arm starts
    from, and the model's own time on it), then the study in one transaction."""
    from lungseg.study.cases import contouring_case, entry_name, one_line
    from lungseg.study.contouring import ContouringParams

    if args.turing:
        raise StudyError("--turing is a preference-study option")
    params = ContouringParams(repeats=args.repeats, repeat_arm=args.repeat_arm,
                              min_gap_sessions=args.min_gap_sessions, min_gap_days=args.min_gap_days, seed=args.seed)
    cases = []
    for n, record in enumerate(records, start=1):
        try:
            case = contouring_case(record.case_id, record.source, metadata=record.metadata)
        except (LungsegError, OSError, ValueError) as exc:
            raise StudyError(f"{entry_name(path, n, {'case_id': record.case_id})}: {one_line(exc)}") from None
        model = f"; model {case.model_seconds:.1f} s" if case.model_seconds is not None else ""
        print(f"{record.case_id}: grid {'x'.join(map(str, case.grid_shape))}; automatic: "
              f"{case.metadata['automatic_description']}{model}")
        cases.append(case)
    with _open(args) as store:
        study = store.create_contouring_study(name, cases, params, actor=_actor())
    print(f"created contouring study {study.name!r} (id {study.id}): {len(cases)} cases; each reader contours each "
          f"case in both arms" + (f", {params.repeats} case(s) twice" if params.repeats else ""))
    return 0


def _study_name(args: argparse.Namespace) -> str:
    if args.name and args.name_option and args.name != args.name_option:
        raise StudyError("give the study name once: NAME or --name")
    name = args.name or args.name_option
    if not name:
        raise StudyError("give the study name: python -m lungseg study create NAME --cases cases.json")
    return name


def _study_invite(args: argparse.Namespace) -> int:
    with _open(args) as store:
        inv = store.invite_rater(args.study, args.name, args.group, actor=_actor(), expires_in_days=args.expires_days)
    print(f"invited {inv.display_name} ({inv.specialty}) as rater {inv.rater_id}, token id {inv.token_id}"
          + (f", expires {inv.expires_at:%Y-%m-%d %H:%M} UTC" if inv.expires_at else ""))
    print("personal link (shown only this once; send it to the rater privately):")
    print(inv.link(args.base_url))
    return 0


def _study_revoke(args: argparse.Namespace) -> int:
    with _open(args) as store:
        rater_id = store.revoke_rater(args.rater, token_id=args.token_id, actor=_actor())
    print(f"revoked the link of rater {rater_id}")
    return 0


def _study_raters(args: argparse.Namespace) -> int:
    with _open(args) as store:
        raters = store.raters(_pick_study(store, args.study))
    for r in raters:
        state = "revoked" if r.revoked else (f"expires {r.expires_at[:16]}" if r.expires_at else "active")
        print(f"{r.id:>4}  {r.display_name:<24} {r.specialty:<22} token {r.token_id or '-':<12} "
              f"{r.done:>4}/{r.total:<4} {state}")
    return 0


def _study_report(args: argparse.Namespace) -> int:
    with _open(args) as store:
        name = _pick_study(store, args.study)
        if store.study(name).kind == "contouring":
            return _contouring_report(args, store, name)
        report = study_report(store, name, pseudonymise=args.pseudonymise)
        if args.csv:
            count = export_votes(store, name, args.csv, pseudonymise=args.pseudonymise, actor=_actor())
            print(f"wrote {count} votes to {args.csv}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def _contouring_report(args: argparse.Namespace, store: StudyStore, name: str) -> int:
    from lungseg.study.contouring_report import (agreement_csv_text, contouring_report, format_contouring_report,
                                                 times_csv_text)

    report = contouring_report(store, name, pseudonymise=args.pseudonymise)
    if args.csv:
        Path(args.csv).write_text(times_csv_text(report), encoding="utf-8")
        print(f"wrote the times to {args.csv}", file=sys.stderr)
    if args.agreement_csv:
        Path(args.agreement_csv).write_text(agreement_csv_text(report), encoding="utf-8")
        print(f"wrote the agreement pairs to {args.agreement_csv}", file=sys.stderr)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_contouring_report(report))
    return 0


def _import_readings(what: str) -> Handler:
    """The ``import-times`` (``what="times"``) or ``import-contours`` (``"contours"``) command."""

    def run(args: argparse.Namespace) -> int:
        from lungseg.study import contouring_import

        load = contouring_import.import_times if what == "times" else contouring_import.import_contours
        with _open(args) as store:
            result = load(store, args.source, args.study, actor=_actor())
        print(f"imported {result.imported} {what} into {args.study!r} ({result.already_present} already present; "
              f"{result.readers} readers, {result.cases} cases)")
        return 0

    run.__name__ = f"_import_{what}"
    return run


def _study_import(args: argparse.Namespace) -> int:
    with _open(args) as store:
        result = import_votes(store, args.votes, args.study, actor=_actor())
    print(f"imported {result.imported} votes into {args.study!r} ({result.already_present} already present; "
          f"{result.raters} raters, {result.items} items)")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise StudyError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass(f"new password for {args.user}: ")
    if getpass.getpass("again: ") != first:
        raise StudyError("the two passwords differ")
    return first


def _admin_set_password(args: argparse.Namespace) -> int:
    password = _read_password(args)
    with _open(args) as store:
        set_admin_password(store, args.user, password, actor=_actor())
    print(f"password set for admin {args.user.strip().lower()}")
    return 0


def _db_backup(args: argparse.Namespace) -> int:
    with _open(args) as store:
        out = backup(store, args.out, actor=_actor())
    print(f"backed up {store.path} to {out}")
    return 0


# ----------------------------------------------------------------------------- parser


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None,
                        help=f"database file (default: $LUNGSEG_DB or {default_db_path()})")


def _leaf(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    _db_option(parser)
    parser.set_defaults(func=_guarded(handler))
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``study``, ``admin`` and ``db`` commands to a parser's subparsers.

    Each leaf command sets ``func``; call ``sys.exit(args.func(args))`` after parsing.
    """
    study = subparsers.add_parser("study", help="preference study: create, invite, report, import")
    s = study.add_subparsers(dest="study_command", metavar="COMMAND", required=True)

    p = _leaf(s, "create", _study_create, "create a study from a JSON file of case records")
    p.add_argument("name", nargs="?", metavar="NAME", help="study name")
    p.add_argument("--name", dest="name_option", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cases", required=True,
                   help='JSON list of {"case_id", "ct": PATH|"demo", "manual": {...}, "automatic": {"kind": '
                        '"model"|"file"|"stand-in", ...}} (paths relative to the file; see the README)')
    p.add_argument("--kind", choices=("preference", "contouring"), default="preference",
                   help="preference (blinded choice between two contours) or contouring (readers contour each "
                        "case from scratch and from the automatic draft)")
    p.add_argument("--slices-per-case", type=_positive_int, default=DesignParams.slices_per_case)
    p.add_argument("--repeats", type=_positive_int, default=0,
                   help="items shown twice (preference) / cases contoured a second time (contouring)")
    p.add_argument("--repeat-arm", choices=("scratch", "assisted"), default="scratch",
                   help="contouring: the arm of the repeated reading")
    p.add_argument("--min-gap-sessions", type=_positive_int, default=1,
                   help="contouring: sessions between a reader's readings of one case (0: may share a session)")
    p.add_argument("--min-gap-days", type=float, default=0.0,
                   help="contouring: days between a reader's readings of one case")
    p.add_argument("--turing", action="store_true", help="also ask which contour the computer drew")
    p.add_argument("--seed", type=int, default=0, help="randomisation seed")

    p = _leaf(s, "invite", _study_invite, "invite a rater and print their personal link once")
    p.add_argument("--study", required=True)
    p.add_argument("--name", required=True, help='display name, e.g. "Dr X"')
    p.add_argument("--group", required=True, help='specialty, e.g. "Radiologist"')
    p.add_argument("--expires-days", type=float, default=None)
    p.add_argument("--base-url", default="", help="app URL to put before ?token=...")

    p = _leaf(s, "revoke", _study_revoke, "revoke a rater's link")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--rater", type=int, help="rater id")
    who.add_argument("--token-id", help="public token id printed at invitation")

    p = _leaf(s, "raters", _study_raters, "list raters and their progress")
    p.add_argument("--study", default=None)

    p = _leaf(s, "report", _study_report, "print the study statistics")
    p.add_argument("--study", default=None)
    p.add_argument("--json", action="store_true", help="the full report as JSON")
    p.add_argument("--pseudonymise", action="store_true", help="raters as R001, R002, ...")
    p.add_argument("--csv", default=None, metavar="OUT",
                   help="also export every vote (contouring: every time, in the import-times layout) to this CSV file")
    p.add_argument("--agreement-csv", default=None, metavar="OUT",
                   help="contouring: also write every agreement pair (Dice, HD95, surface Dice) to this CSV file")

    p = _leaf(s, "import", _study_import, "import votes from a CSV file")
    p.add_argument("votes", metavar="VOTES.csv")
    p.add_argument("--study", required=True)

    for what, metavar, help_text in (
            ("times", "TIMES.csv", "import a contouring study's times from a CSV file (reader,case,seconds,arm[,reading])"),
            ("contours", "DIR", "import a contouring study's contours from DIR/CASE/{ct.nii.gz,READER[__ARM][__2].nii.gz}")):
        p = _leaf(s, f"import-{what}", _import_readings(what), help_text)
        p.add_argument("source", metavar=metavar)
        p.add_argument("--study", required=True)

    admin = subparsers.add_parser("admin", help="admin accounts")
    a = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    p = _leaf(a, "set-password", _admin_set_password, "create an admin or change their password")
    p.add_argument("--user", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")

    db = subparsers.add_parser("db", help="database maintenance")
    d = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    p = _leaf(d, "backup", _db_backup, "copy the database while it is in use")
    p.add_argument("out", metavar="OUT")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lungseg.cli.study", description="lungseg preference study")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
