"""Votes as CSV: import votes collected elsewhere, export a study's votes (optionally pseudonymised).

The file layout (header names, any order; extra columns are ignored)::

    rater_id,rater_group,item_id,case_id,left_source,choice,comment,response_ms

``left_source`` is the contour shown on the left (``automatic``/``manual``), ``choice`` the side
the rater picked (``left``/``right``); ``response_ms`` may be empty.  Optional columns:
``rater_name, slice_index, repeat_of, turing, cast_at, slice_thickness_mm, tumour_volume_ml,
location``.  Exports use the same layout (plus ``chosen`` and ``position``), so an export
imports again unchanged and the report on imported votes equals the report on in-app votes.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

from lungseg.study.access import AdminSession
from lungseg.study.design import SIDES, SOURCES, StudyError, canonical_specialty
from lungseg.study.store import StudyStore, iso

REQUIRED_COLUMNS = (
    "rater_id",
    "rater_group",
    "item_id",
    "case_id",
    "left_source",
    "choice",
    "comment",
    "response_ms",
)
CASE_COLUMNS = ("slice_thickness_mm", "tumour_volume_ml", "location")
OPTIONAL_COLUMNS = ("rater_name", "slice_index", "repeat_of", "turing", "cast_at") + CASE_COLUMNS
EXPORT_COLUMNS = REQUIRED_COLUMNS + ("chosen", "position") + OPTIONAL_COLUMNS

Fail = Callable[[str], StudyError]  # builds the error for one line of the file


@dataclass(frozen=True)
class ImportResult:
    study_id: int
    rows: int
    imported: int  # new votes
    already_present: int  # identical votes that were in the database already (a re-import)
    raters: int
    items: int


def _fail(source: str, line: int, problem: str) -> StudyError:
    return StudyError(f"{source}, line {line}: {problem}")


def _text(value: Any) -> str:
    return " ".join(str(value if value is not None else "").split())


def _optional_int(value: str, column: str, fail: Fail) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise fail(f"{column} must be a whole number, got {value!r}") from None
    if number < 0:
        raise fail(f"{column} must not be negative, got {value!r}")
    return number


def _optional_float(value: str, column: str, fail: Fail) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise fail(f"{column} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise fail(f"{column} must be a finite non-negative number, got {value!r}")
    return number


def _parse_row(raw: Mapping[str, str | None], fail: Fail) -> dict[str, Any]:
    def get(column: str) -> str:
        value = raw.get(column)
        return "" if value is None else str(value)

    row: dict[str, Any] = {}
    for column in ("rater_id", "rater_group", "item_id", "case_id"):
        row[column] = _text(get(column))
        if not row[column]:
            raise fail(f"{column} is empty")
    try:
        row["rater_group"] = canonical_specialty(row["rater_group"])
    except StudyError as exc:
        raise fail(str(exc)) from None
    left_source = get("left_source").strip().lower()
    if left_source not in SOURCES:
        raise fail(f"left_source must be 'automatic' or 'manual', got {get('left_source')!r}")
    choice = get("choice").strip().lower()
    if choice not in SIDES:
        raise fail(f"choice must be 'left' or 'right', got {get('choice')!r}")
    row["left_source"], row["choice"] = left_source, choice
    row["chosen"] = left_source if choice == "left" else ("manual" if left_source == "automatic" else "automatic")
    row["comment"] = get("comment").strip()
    row["response_ms"] = _optional_int(get("response_ms"), "response_ms", fail)
    row["rater_name"] = _text(get("rater_name")) or None
    row["slice_index"] = _optional_int(get("slice_index"), "slice_index", fail)
    row["repeat_of"] = _text(get("repeat_of")) or None
    turing = get("turing").strip().lower()
    if turing and turing not in SIDES:
        raise fail(f"turing must be 'left', 'right' or empty, got {get('turing')!r}")
    row["turing"] = turing or None
    cast_at = get("cast_at").strip()
    if cast_at:
        try:
            moment = datetime.fromisoformat(cast_at)
        except ValueError:
            raise fail(f"cast_at must be an ISO 8601 time, got {cast_at!r}") from None
        row["cast_at"] = iso(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    else:
        row["cast_at"] = None
    row["slice_thickness_mm"] = _optional_float(get("slice_thickness_mm"), "slice_thickness_mm", fail)
    row["tumour_volume_ml"] = _optional_float(get("tumour_volume_ml"), "tumour_volume_ml", fail)
    row["location"] = _text(get("location")) or None
    return row


def parse_votes_csv(stream: IO[str], source: str = "votes file") -> list[dict[str, Any]]:
    """Read and validate a votes CSV; returns report-ready rows, each with its ``line`` number.

    Raises :class:`StudyError` naming the first bad line and what is wrong with it: a missing
    column, an unknown ``left_source``/``choice``, a non-integer ``response_ms``, the same item
    under two cases, a rater in two groups, or a rater voting twice on one item.
    """
    reader = csv.DictReader(stream)
    if reader.fieldnames is None:
        raise StudyError(f"{source} is empty: expected a header line with {', '.join(REQUIRED_COLUMNS)}")
    header = [(name or "").strip().lower() for name in reader.fieldnames]
    if len(set(header)) != len(header):
        raise StudyError(f"{source}, line 1: a column name appears twice")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise StudyError(f"{source}, line 1: missing column(s) {', '.join(missing)}")
    reader.fieldnames = header
    rows: list[dict[str, Any]] = []
    item_facts: dict[str, tuple[tuple[Any, ...], int]] = {}
    case_facts: dict[str, dict[str, tuple[Any, int]]] = {}
    rater_group: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for raw in reader:
        line = reader.line_num
        fail = lambda problem, line=line: _fail(source, line, problem)  # noqa: E731
        if None in raw:
            raise fail(f"{len(raw[None]) + len(header)} fields, but the header has {len(header)}")
        if all(not (v or "").strip() for v in raw.values()):
            continue  # a blank line
        row = _parse_row(raw, fail)
        row["line"] = line
        facts = (row["case_id"], row["slice_index"], row["repeat_of"])
        if row["item_id"] in item_facts and item_facts[row["item_id"]][0] != facts:
            first = item_facts[row["item_id"]][1]
            said = item_facts[row["item_id"]][0]
            raise fail(f"item {row['item_id']} has case/slice/repeat_of {facts}, but line {first} says {said}")
        item_facts.setdefault(row["item_id"], (facts, line))
        for column in CASE_COLUMNS:
            if row[column] is None:
                continue
            known = case_facts.setdefault(row["case_id"], {})
            if column in known and known[column][0] != row[column]:
                said, first = known[column]
                raise fail(f"case {row['case_id']} has {column} {row[column]}, but line {first} says {said}")
            known.setdefault(column, (row[column], line))
        group = rater_group.setdefault(row["rater_id"], (row["rater_group"], line))
        if group[0] != row["rater_group"]:
            raise fail(
                f"rater {row['rater_id']} is in group {row['rater_group']!r}, but line {group[1]} says {group[0]!r}"
            )
        key = (row["rater_id"], row["item_id"])
        if key in seen:
            raise fail(f"rater {row['rater_id']} votes on item {row['item_id']} twice (first on line {seen[key]})")
        seen[key] = line
        rows.append(row)
    if not rows:
        raise StudyError(f"{source} has a header but no votes")
    for row in rows:
        if row["repeat_of"] is not None:
            original = item_facts.get(row["repeat_of"])
            if original is None:
                problem = f"repeat_of names item {row['repeat_of']}, which has no votes in the file"
                raise _fail(source, row["line"], problem)
            if original[0][0] != row["case_id"]:
                raise _fail(source, row["line"], f"item {row['item_id']} repeats {row['repeat_of']} of another case")
    # Case metadata given on any line applies to every vote of that case.
    for row in rows:
        for column, (value, _) in case_facts.get(row["case_id"], {}).items():
            row[column] = value
    return rows


def read_votes_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """:func:`parse_votes_csv` on a file (UTF-8, a byte-order mark from Excel is fine)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return parse_votes_csv(handle, path.name)
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise StudyError(f"{path}: not a readable CSV file ({exc})") from None


def import_votes(
    store: StudyStore,
    path: str | os.PathLike,
    study_name: str,
    *,
    actor: "str | AdminSession" = "import",
) -> ImportResult:
    """Import a votes CSV into study ``study_name`` (created if missing), all or nothing.

    The file is validated completely first; then cases, items, raters (matched by
    ``rater_id``), their assignments and votes are written in one transaction.  Re-importing
    the same file adds nothing; a vote that contradicts one already stored is an error.
    """
    rows = read_votes_csv(path)
    source = Path(path).name
    imported = present = 0
    with store.transaction() as conn:
        study = conn.execute("SELECT id FROM studies WHERE name = ?", (_text(study_name),)).fetchone()
        if study is None:
            turing = any(r["turing"] for r in rows)
            study_id = store.create_study(study_name, actor=actor, imported=True, turing=turing).id
        else:
            study_id = study[0]
        case_ids = _import_cases(conn, study_id, rows, source)
        item_ids = _import_items(conn, study_id, rows, case_ids, source)
        rater_ids = _import_raters(conn, store, study_id, rows, source)
        positions: dict[int, int] = {}
        for row in rows:
            rater_id, item_id = rater_ids[row["rater_id"]], item_ids[row["item_id"]]
            auto_side = "left" if row["left_source"] == "automatic" else "right"
            fail = lambda problem, line=row["line"]: _fail(source, line, problem)  # noqa: E731
            existing = conn.execute(
                "SELECT auto_side FROM assignments WHERE rater_id = ? AND item_id = ?", (rater_id, item_id)
            ).fetchone()
            if existing is None:
                if rater_id not in positions:
                    positions[rater_id] = conn.execute(
                        "SELECT COALESCE(MAX(position), 0) FROM assignments WHERE rater_id = ?", (rater_id,)
                    ).fetchone()[0]
                positions[rater_id] += 1
                conn.execute(
                    "INSERT INTO assignments (rater_id, study_id, item_id, position, auto_side) VALUES (?, ?, ?, ?, ?)",
                    (rater_id, study_id, item_id, positions[rater_id], auto_side),
                )
            elif existing[0] != auto_side:
                raise fail(
                    f"rater {row['rater_id']} saw item {row['item_id']} with the automatic contour "
                    f"on the {existing[0]} in the database"
                )
            vote = conn.execute(
                "SELECT side FROM votes WHERE study_id = ? AND rater_id = ? AND item_id = ?",
                (study_id, rater_id, item_id),
            ).fetchone()
            if vote is not None:
                if vote[0] != row["choice"]:
                    raise fail(
                        f"rater {row['rater_id']} already has a different vote on item {row['item_id']} in the database"
                    )
                present += 1
                continue
            conn.execute(
                "INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, response_ms, comment, "
                "turing, origin, cast_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'import', ?)",
                (study_id, rater_id, item_id, row["choice"], auto_side, row["chosen"], row["response_ms"],
                 row["comment"], row["turing"], row["cast_at"] or store.now_iso()),
            )
            imported += 1
        store.audit(actor, "votes.import", study_id=study_id, file=source, rows=len(rows), imported=imported,
                    already_present=present)
    return ImportResult(study_id, len(rows), imported, present, len(rater_ids), len(item_ids))


Rows = Sequence[dict[str, Any]]


def _import_cases(conn: sqlite3.Connection, study_id: int, rows: Rows, source: str) -> dict[str, int]:
    ids: dict[str, int] = {}
    for row in rows:
        key = row["case_id"]
        if key in ids:
            continue
        found = conn.execute(
            "SELECT id, slice_thickness_mm, tumour_volume_ml, location FROM cases WHERE study_id = ? AND case_key = ?",
            (study_id, key),
        ).fetchone()
        given = [row[c] for c in CASE_COLUMNS]
        if found is None:
            ids[key] = conn.execute(
                "INSERT INTO cases (study_id, case_key, slice_thickness_mm, tumour_volume_ml, location) "
                "VALUES (?, ?, ?, ?, ?)",
                (study_id, key, *given),
            ).lastrowid
            continue
        ids[key] = found[0]
        for column, stored, new in zip(CASE_COLUMNS, found[1:], given):
            if new is None:
                continue
            if stored is None:
                conn.execute(f"UPDATE cases SET {column} = ? WHERE id = ?", (new, found[0]))
            elif stored != new:
                raise _fail(source, row["line"], f"case {key} has {column} {stored} in the database, not {new}")
    return ids


def _import_items(
    conn: sqlite3.Connection, study_id: int, rows: Rows, case_ids: Mapping[str, int], source: str
) -> dict[str, int]:
    ids: dict[str, int] = {}
    # Originals first, so that a repeat can point at its original's id.
    for row in sorted(rows, key=lambda r: r["repeat_of"] is not None):
        key = row["item_id"]
        if key in ids:
            continue
        found = conn.execute(
            "SELECT id, case_id FROM items WHERE study_id = ? AND item_key = ?", (study_id, key)
        ).fetchone()
        if found is not None:
            if found[1] != case_ids[row["case_id"]]:
                raise _fail(source, row["line"], f"item {key} belongs to another case in the database")
            ids[key] = found[0]
            continue
        repeat_of = None
        if row["repeat_of"] is not None:
            repeat_of = ids.get(row["repeat_of"])
            if repeat_of is None:
                hit = conn.execute(
                    "SELECT id FROM items WHERE study_id = ? AND item_key = ?", (study_id, row["repeat_of"])
                ).fetchone()
                if hit is None:
                    raise _fail(source, row["line"], f"repeat_of names unknown item {row['repeat_of']}")
                repeat_of = hit[0]
        ids[key] = conn.execute(
            "INSERT INTO items (study_id, case_id, item_key, slice_index, repeat_of) VALUES (?, ?, ?, ?, ?)",
            (study_id, case_ids[row["case_id"]], key, row["slice_index"], repeat_of),
        ).lastrowid
    return ids


def _import_raters(
    conn: sqlite3.Connection, store: StudyStore, study_id: int, rows: Rows, source: str
) -> dict[str, int]:
    ids: dict[str, int] = {}
    for row in rows:
        key = row["rater_id"]
        if key in ids:
            continue
        # An in-app rater appears in exports under its numeric id (see StudyStore.votes_table).
        found = conn.execute(
            "SELECT id, specialty FROM raters WHERE study_id = ? AND (external_id = ? OR "
            "(external_id IS NULL AND CAST(id AS TEXT) = ?))",
            (study_id, key, key),
        ).fetchone()
        if found is not None:
            if found[1] != row["rater_group"]:
                problem = f"rater {key} is a {found[1]} in the database, not a {row['rater_group']}"
                raise _fail(source, row["line"], problem)
            ids[key] = found[0]
            continue
        ids[key] = conn.execute(
            "INSERT INTO raters (study_id, display_name, specialty, external_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (study_id, row["rater_name"] or key, row["rater_group"], key, store.now_iso()),
        ).lastrowid
    return ids


# ----------------------------------------------------------------------------- export


def pseudonym_map(rater_ids: Iterable[Any]) -> dict[str, str]:
    """``R001``, ``R002``, ... for raters in the order they first appear.

    ``votes_table`` lists raters in the order they were invited, so the pseudonyms are stable
    from one export to the next (raters are revoked, never deleted).
    """
    order = list(dict.fromkeys(str(r) for r in rater_ids))
    width = max(3, len(str(len(order))))
    return {rater: f"R{i:0{width}d}" for i, rater in enumerate(order, start=1)}


def pseudonymise_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``rater_id`` replaced by its pseudonym (:func:`pseudonym_map`) and no ``rater_name``."""
    rows = [dict(r) for r in rows]
    names = pseudonym_map(row["rater_id"] for row in rows)
    for row in rows:
        row["rater_id"] = names[str(row["rater_id"])]
        row.pop("rater_name", None)
    return rows


def write_votes_csv(
    rows: Iterable[Mapping[str, Any]], out: str | os.PathLike | IO[str], *, pseudonymise: bool = False
) -> int:
    """Write votes in the import layout (:data:`EXPORT_COLUMNS`); returns the number of rows."""
    rows = pseudonymise_rows(rows) if pseudonymise else [dict(r) for r in rows]
    columns = [c for c in EXPORT_COLUMNS if not (pseudonymise and c == "rater_name")]
    if isinstance(out, (str, os.PathLike)):
        # Owner-only, like the database: the file holds every rater's votes.
        fd = os.open(out, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with open(fd, "w", newline="", encoding="utf-8") as handle:
            return _write(rows, handle, columns)
    return _write(rows, out, columns)


def _write(rows: Sequence[Mapping[str, Any]], handle: IO[str], columns: Sequence[str]) -> int:
    writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return len(rows)


def export_votes(
    store: StudyStore,
    study: "str | int",
    out: str | os.PathLike | IO[str],
    *,
    pseudonymise: bool = False,
    actor: "str | AdminSession",
) -> int:
    """Write every vote of a study as CSV (audited as ``votes.export``); returns the row count.

    The export never contains tokens or their hashes.  With ``pseudonymise=True`` raters are
    ``R001``... and names are left out; free-text comments are kept as written.
    """
    st = store.study(study)
    count = write_votes_csv(store.votes_table(st.id), out, pseudonymise=pseudonymise)
    target = str(out) if isinstance(out, (str, os.PathLike)) else "stream"
    store.audit(actor, "votes.export", study=st.name, rows=count, pseudonymised=pseudonymise, target=target)
    return count


def votes_csv_text(rows: Iterable[Mapping[str, Any]], *, pseudonymise: bool = False) -> str:
    """The CSV as a string (for a download button)."""
    buffer = io.StringIO()
    write_votes_csv(rows, buffer, pseudonymise=pseudonymise)
    return buffer.getvalue()
