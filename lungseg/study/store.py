"""The preference-study database: one SQLite file in WAL mode, opened through sqlite-utils.

Every write is one ``BEGIN IMMEDIATE`` transaction (taking the write lock up front, so
concurrent writers queue on ``busy_timeout`` instead of failing half-way), foreign keys are on,
and the schema carries its own version, brought up to date on open by :data:`MIGRATIONS`.

Integrity is also enforced by the schema, not only by this code: a vote's rater, item and
study must agree (composite foreign keys), the item must be in that rater's assignment, the
chosen source must follow from the chosen side, and ``UNIQUE(study_id, rater_id, item_id)``
makes a second vote on an item impossible (:meth:`StudyStore.cast_vote` returns the first).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sqlite_utils import Database

from lungseg.study.access import (
    AccessDenied,
    AdminSession,
    Invitation,
    RaterSession,
    actor_name,
    check_rater_row,
    hash_token,
    new_token,
)
from lungseg.study.design import (
    SIDES,
    CaseSpec,
    DesignParams,
    ItemSpec,
    StudyError,
    assign,
    canonical_specialty,
    plan_items,
)

Clock = Callable[[], datetime]
DEFAULT_DB = Path("data") / "lungseg.db"
MAX_COMMENT = 4000


def default_db_path() -> Path:
    """``$LUNGSEG_DB`` if set, else ``data/lungseg.db`` relative to the working directory."""
    return Path(os.environ.get("LUNGSEG_DB") or DEFAULT_DB)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """A UTC timestamp as stored in the database (ISO 8601, microseconds, ``+00:00``)."""
    if moment.tzinfo is None:
        raise StudyError("timestamps must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


# ----------------------------------------------------------------------------- schema

_V1 = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        instructions TEXT NOT NULL DEFAULT '',
        design_json TEXT,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE cases (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        case_key TEXT NOT NULL,
        slice_thickness_mm REAL,
        tumour_volume_ml REAL,
        location TEXT,
        metadata_json TEXT NOT NULL DEFAULT '{}',
        UNIQUE (study_id, case_key),
        UNIQUE (id, study_id))""",
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL,
        case_id INTEGER NOT NULL,
        item_key TEXT NOT NULL,
        slice_index INTEGER,
        repeat_of INTEGER,
        UNIQUE (study_id, item_key),
        UNIQUE (id, study_id),
        FOREIGN KEY (case_id, study_id) REFERENCES cases(id, study_id),
        FOREIGN KEY (repeat_of, study_id) REFERENCES items(id, study_id))""",
    """CREATE TABLE raters (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        display_name TEXT NOT NULL,
        specialty TEXT NOT NULL,
        external_id TEXT,
        token_id TEXT UNIQUE,
        token_hash TEXT UNIQUE,
        revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        revoked_at TEXT,
        expires_at TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (study_id, external_id),
        UNIQUE (id, study_id))""",
    """CREATE TABLE assignments (
        rater_id INTEGER NOT NULL,
        study_id INTEGER NOT NULL,
        item_id INTEGER NOT NULL,
        position INTEGER NOT NULL CHECK (position >= 1),
        auto_side TEXT NOT NULL CHECK (auto_side IN ('left', 'right')),
        PRIMARY KEY (rater_id, item_id),
        UNIQUE (rater_id, position),
        FOREIGN KEY (rater_id, study_id) REFERENCES raters(id, study_id),
        FOREIGN KEY (item_id, study_id) REFERENCES items(id, study_id))""",
    """CREATE TABLE votes (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL,
        rater_id INTEGER NOT NULL,
        item_id INTEGER NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('left', 'right')),
        auto_side TEXT NOT NULL CHECK (auto_side IN ('left', 'right')),
        source TEXT NOT NULL CHECK (source IN ('automatic', 'manual')),
        response_ms INTEGER CHECK (response_ms IS NULL OR response_ms >= 0),
        comment TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL DEFAULT 'app' CHECK (origin IN ('app', 'import')),
        cast_at TEXT NOT NULL,
        UNIQUE (study_id, rater_id, item_id),
        CHECK ((side = auto_side) = (source = 'automatic')),
        FOREIGN KEY (rater_id, study_id) REFERENCES raters(id, study_id),
        FOREIGN KEY (item_id, study_id) REFERENCES items(id, study_id),
        FOREIGN KEY (rater_id, item_id) REFERENCES assignments(rater_id, item_id))""",
    """CREATE TABLE admins (
        username TEXT PRIMARY KEY,
        pw_hash BLOB NOT NULL,
        salt BLOB NOT NULL,
        scrypt_n INTEGER NOT NULL,
        scrypt_r INTEGER NOT NULL,
        scrypt_p INTEGER NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}')""",
]

_V2 = [
    # Turing question ("which one did the computer draw?") and clinical accept/reject reviews.
    "ALTER TABLE studies ADD COLUMN turing INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE votes ADD COLUMN turing TEXT CHECK (turing IS NULL OR turing IN ('left', 'right'))",
    """CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL,
        case_id INTEGER NOT NULL,
        rater_id INTEGER NOT NULL,
        accepted_source TEXT NOT NULL CHECK (accepted_source IN ('automatic', 'manual', 'none')),
        reason TEXT NOT NULL DEFAULT '',
        reviewed_at TEXT NOT NULL,
        UNIQUE (case_id, rater_id),
        FOREIGN KEY (case_id, study_id) REFERENCES cases(id, study_id),
        FOREIGN KEY (rater_id, study_id) REFERENCES raters(id, study_id))""",
    """CREATE TABLE login_attempts (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'bad', 'locked')))""",
    "CREATE INDEX login_attempts_by_user ON login_attempts (username, id)",
    "CREATE INDEX audit_by_time ON audit (at)",
]

# v3: a clinical review is recorded per *reviewer*, who is either a rater of the study or an
# admin (by username).  SQLite cannot drop NOT NULL from ``reviews.rater_id`` with ALTER TABLE, so
# the table is rebuilt (create, copy, drop, rename: nothing references ``reviews``), inside the
# one transaction :func:`migrate` runs every step in.  Existing reviews keep their ids.
#
# Until v3 the review page stood admins in as hidden raters named ``reviewer:<username>`` (with
# item assignments, which inflated progress totals).  Such a rater (the name matches an existing
# admin and it never voted) is folded into its admin: its reviews become that admin's, its
# specialty is kept on the review, and the rater and its assignments are removed, with an audit
# row (``rater.reviewer_converted``) for each.
_HIDDEN_REVIEWERS = (
    "SELECT r.id, r.specialty, a.username FROM raters r JOIN admins a ON r.display_name = 'reviewer:' || a.username "
    "WHERE NOT EXISTS (SELECT 1 FROM votes v WHERE v.rater_id = r.id)"
)
_V3 = [
    f"CREATE TEMP TABLE _hidden_reviewers AS {_HIDDEN_REVIEWERS}",
    """CREATE TABLE reviews_v3 (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL,
        case_id INTEGER NOT NULL,
        rater_id INTEGER,
        admin_username TEXT REFERENCES admins(username),
        specialty TEXT,
        accepted_source TEXT NOT NULL CHECK (accepted_source IN ('automatic', 'manual', 'none')),
        reason TEXT NOT NULL DEFAULT '',
        reviewed_at TEXT NOT NULL,
        CHECK ((rater_id IS NULL) <> (admin_username IS NULL)),
        CHECK (rater_id IS NULL OR specialty IS NULL),
        UNIQUE (case_id, rater_id),
        UNIQUE (case_id, admin_username),
        FOREIGN KEY (case_id, study_id) REFERENCES cases(id, study_id),
        FOREIGN KEY (rater_id, study_id) REFERENCES raters(id, study_id))""",
    """INSERT INTO reviews_v3 (id, study_id, case_id, rater_id, admin_username, specialty, accepted_source, reason,
                               reviewed_at)
       SELECT v.id, v.study_id, v.case_id, CASE WHEN h.id IS NULL THEN v.rater_id END, h.username, h.specialty,
              v.accepted_source, v.reason, v.reviewed_at
       FROM reviews v LEFT JOIN _hidden_reviewers h ON h.id = v.rater_id""",
    "DROP TABLE reviews",
    "ALTER TABLE reviews_v3 RENAME TO reviews",
    "CREATE INDEX reviews_by_study ON reviews (study_id, reviewed_at)",
    "DELETE FROM assignments WHERE rater_id IN (SELECT id FROM _hidden_reviewers)",
    "DELETE FROM raters WHERE id IN (SELECT id FROM _hidden_reviewers)",
    """INSERT INTO audit (at, actor, action, detail)
       SELECT strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'), 'schema-migration', 'rater.reviewer_converted',
              json_object('rater_id', id, 'admin', username)
       FROM _hidden_reviewers ORDER BY id""",
    "DROP TABLE _hidden_reviewers",
]

#: ``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``.
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in ``meta`` (0 for an empty database)."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations after the database's version, up to ``target``, in one transaction.

    ``conn`` must be in autocommit mode (``isolation_level=None``).  Returns the new version.
    """
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StudyError(
            f"the database has schema v{current}, newer than this lungseg (v{SCHEMA_VERSION}): upgrade lungseg"
        )
    if current >= target:
        return current
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)  # again, under the write lock: another process may have won
        for version in range(current, target):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version + 1),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return schema_version(conn)


def _create_private(path: Path) -> None:
    """Create ``path`` as an empty owner-only (0600) file unless it exists; tighten it if loose.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's permissions, so this also
    covers them, without touching the process umask (which other threads share).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = candidate.stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.chmod(candidate, 0o600)
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    instructions: str
    params: DesignParams | None  # None for a study made by importing votes
    turing: bool
    created_at: str


@dataclass(frozen=True)
class ItemView:
    """What the rating page needs to show one item.

    Load slice ``slice_index`` of case ``case_id``; draw the automatic contour on ``auto_side``
    and the manual one on the other side, both in the same style.  Show the rater neither
    which is which nor ``item_key`` (a repeated item's key ends in ``#r``).
    """

    item_id: int
    item_key: str
    case_id: str
    slice_index: int | None
    position: int
    total: int
    auto_side: str
    ask_turing: bool

    @property
    def left_source(self) -> str:
        return "automatic" if self.auto_side == "left" else "manual"

    @property
    def right_source(self) -> str:
        return "manual" if self.auto_side == "left" else "automatic"


@dataclass(frozen=True)
class Vote:
    id: int
    rater_id: int
    item_id: int
    side: str
    source: str
    response_ms: int | None
    comment: str
    turing: str | None
    cast_at: str
    created: bool  # False when this item had already been voted on: the first vote stands


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def finished(self) -> bool:
        return self.done >= self.total


@dataclass(frozen=True)
class RaterInfo:
    """An admin's view of one rater (never the token, only its public ``token_id``)."""

    id: int
    study_id: int
    display_name: str
    specialty: str
    external_id: str | None
    token_id: str | None
    revoked: bool
    expires_at: str | None
    created_at: str
    done: int
    total: int


@dataclass(frozen=True)
class Review:
    """One clinical verdict on a case, by a rater (``rater_id``) or by an admin (``admin``)."""

    case_id: str
    rater_id: int | None
    accepted_source: str
    reason: str
    reviewed_at: str
    admin: str | None = None


def _side(value: Any, what: str) -> str:
    side = str(value).strip().lower() if value is not None else ""
    if side not in SIDES:
        raise StudyError(f"{what} must be 'left' or 'right', got {value!r}")
    return side


def _response_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StudyError(f"response_ms must be a non-negative integer, got {value!r}")
    return value


def _clean_name(value: Any, what: str, limit: int = 200) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise StudyError(f"{what} must not be empty")
    if len(text) > limit:
        raise StudyError(f"{what} must be at most {limit} characters")
    return text


# ----------------------------------------------------------------------------- the store


class StudyStore:
    """The preference-study database.

    ``path`` defaults to :func:`default_db_path`; ``":memory:"`` gives a throw-away database.
    One store may be shared between threads (a lock serialises its use of the connection);
    each process opens its own.  ``clock`` returns the current aware UTC time (injectable for
    tests of expiry and login locks).
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        clock: Clock = utc_now,
        busy_timeout_s: float = 30.0,
        synchronous: str = "FULL",
    ):
        self.path = Path(path) if path is not None else default_db_path()
        self.clock = clock
        self._lock = threading.RLock()
        memory = str(self.path) == ":memory:"
        if not memory:
            _create_private(self.path)
        conn = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StudyError(f"{self.path}: cannot switch the database to WAL mode (got {mode})")
            # FULL fsyncs the WAL at every commit, so a vote survives even a power cut; NORMAL
            # (faster on slow disks) still survives a crash of the process, SIGKILL included.
            if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
                raise StudyError("synchronous must be NORMAL, FULL or EXTRA")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StudyError(f"{self.path}: not a usable lungseg database ({exc})") from None
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.db = Database(conn, execute_plugins=False, recursive_triggers=False)

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> "StudyStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return self.clock()

    def now_iso(self) -> str:
        return iso(self.clock())

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self.conn)

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, with this store's thread lock held."""
        with self._lock:
            yield self.conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested use becomes a savepoint."""
        with self._lock:
            if self.conn.in_transaction:
                with self.db.atomic():
                    yield self.conn
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: Sequence[Any] | dict = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    def _one(self, sql: str, params: Sequence[Any] | dict = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def audit(self, actor: "str | AdminSession", action: str, **detail: Any) -> None:
        """Record an admin action (joins the current transaction if one is open)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (self.now_iso(), actor_name(actor), action, json.dumps(detail, sort_keys=True, default=str)),
            )

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Admin actions, newest first, with ``detail`` decoded."""
        sql = "SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC"
        rows = self._rows(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def integrity_check(self) -> str:
        with self._lock:
            return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    # -- studies, cases, items ------------------------------------------------------------

    def _study_from_row(self, row: dict[str, Any]) -> Study:
        params = None
        if row["design_json"]:
            data = json.loads(row["design_json"])
            params = DesignParams(**data, instructions=row["instructions"])
        return Study(row["id"], row["name"], row["instructions"], params, bool(row["turing"]), row["created_at"])

    def studies(self) -> list[Study]:
        return [self._study_from_row(r) for r in self._rows("SELECT * FROM studies ORDER BY id")]

    def study(self, ref: "str | int | Study") -> Study:
        """A study by name or id; :class:`StudyError` if there is none."""
        if isinstance(ref, Study):
            return ref
        if isinstance(ref, int) and not isinstance(ref, bool):
            row = self._one("SELECT * FROM studies WHERE id = ?", (ref,))
        else:
            row = self._one("SELECT * FROM studies WHERE name = ?", (" ".join(str(ref).split()),))
        if row is None:
            raise StudyError(f"no study {ref!r} in {self.path}")
        return self._study_from_row(row)

    def create_study(
        self,
        name: str,
        cases: Sequence[CaseSpec] = (),
        params: DesignParams | None = None,
        *,
        actor: "str | AdminSession",
        imported: bool = False,
        turing: bool | None = None,
    ) -> Study:
        """Create a study and, if ``cases`` are given, its items per ``params`` (one transaction).

        ``params=None`` means the defaults for an in-app study; ``imported=True`` makes a study
        without a design, to hold votes collected elsewhere (see :mod:`.csvio`).  ``turing``
        overrides ``params.turing``.  Audited as ``study.create``.
        """
        name = _clean_name(name, "study name")
        params = params or DesignParams()
        items = plan_items(cases, params) if cases else []
        asks_turing = params.turing if turing is None else turing
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                raise StudyError(f"a study named {name!r} already exists")
            if imported:
                study_id = self._insert_study(conn, name, "", None, asks_turing)
            else:
                study_id = self._insert_study(conn, name, params.instructions, params, asks_turing)
            for case in cases:
                self._insert_case(conn, study_id, case)
            self._insert_items(conn, study_id, items)
            self.audit(actor, "study.create", study=name, study_id=study_id, cases=len(cases), items=len(items),
                       imported=imported)
        return self.study(study_id)

    def _insert_study(
        self, conn: sqlite3.Connection, name: str, instructions: str, params: DesignParams | None, turing: bool
    ) -> int:
        design = None
        if params is not None:
            design = json.dumps(params.as_dict(), sort_keys=True)
        cur = conn.execute(
            "INSERT INTO studies (name, instructions, design_json, turing, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, instructions, design, int(turing), self.now_iso()),
        )
        return int(cur.lastrowid)

    def _insert_case(self, conn: sqlite3.Connection, study_id: int, case: CaseSpec) -> int:
        meta = case.metadata
        try:
            cur = conn.execute(
                "INSERT INTO cases (study_id, case_key, slice_thickness_mm, tumour_volume_ml, location, metadata_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    study_id,
                    case.case_id,
                    meta.slice_thickness_mm,
                    meta.tumour_volume_ml,
                    meta.location,
                    json.dumps({"slices": list(case.slices), **dict(meta.extra)}, default=str),
                ),
            )
        except sqlite3.IntegrityError:
            raise StudyError(f"case {case.case_id} is already in this study") from None
        return int(cur.lastrowid)

    def _insert_items(self, conn: sqlite3.Connection, study_id: int, items: Sequence[ItemSpec]) -> list[int]:
        if not items:
            return []
        if conn.execute("SELECT 1 FROM raters WHERE study_id = ? LIMIT 1", (study_id,)).fetchone():
            raise StudyError("this study already has raters: its items can no longer change")
        cases = dict(conn.execute("SELECT case_key, id FROM cases WHERE study_id = ?", (study_id,)).fetchall())
        ids: dict[str, int] = dict(
            conn.execute("SELECT item_key, id FROM items WHERE study_id = ?", (study_id,)).fetchall()
        )
        out = []
        for item in items:
            if item.case_id not in cases:
                raise StudyError(f"item {item.key}: case {item.case_id} is not in this study")
            if item.key in ids:
                raise StudyError(f"item {item.key} is already in this study")
            repeat_of = None
            if item.repeat_of is not None:
                if item.repeat_of not in ids:
                    raise StudyError(f"item {item.key} repeats {item.repeat_of}, which is not in this study")
                repeat_of = ids[item.repeat_of]
            cur = conn.execute(
                "INSERT INTO items (study_id, case_id, item_key, slice_index, repeat_of) VALUES (?, ?, ?, ?, ?)",
                (study_id, cases[item.case_id], item.key, item.slice_index, repeat_of),
            )
            ids[item.key] = int(cur.lastrowid)
            out.append(ids[item.key])
        return out

    def add_case(self, study: "str | int | Study", case: CaseSpec) -> int:
        """Add a case (no items yet) to a study; returns its database id."""
        study_id = self.study(study).id
        with self.transaction() as conn:
            return self._insert_case(conn, study_id, case)

    def add_items(self, study: "str | int | Study", items: Sequence[ItemSpec]) -> list[int]:
        """Add items (slices of cases already in the study); refused once raters are invited."""
        study_id = self.study(study).id
        with self.transaction() as conn:
            return self._insert_items(conn, study_id, list(items))

    def item_specs(self, study: "str | int | Study") -> list[ItemSpec]:
        """The study's items in creation order."""
        rows = self._rows(
            "SELECT i.item_key, c.case_key, i.slice_index, r.item_key AS repeat_key FROM items i "
            "JOIN cases c ON c.id = i.case_id LEFT JOIN items r ON r.id = i.repeat_of "
            "WHERE i.study_id = ? ORDER BY i.id",
            (self.study(study).id,),
        )
        return [ItemSpec(r["item_key"], r["case_key"], r["slice_index"], r["repeat_key"]) for r in rows]

    def cases(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """The study's cases: ``case_id``, the three stratification fields, and free metadata."""
        rows = self._rows(
            "SELECT case_key AS case_id, slice_thickness_mm, tumour_volume_ml, location, metadata_json "
            "FROM cases WHERE study_id = ? ORDER BY id",
            (self.study(study).id,),
        )
        for row in rows:
            row["metadata"] = json.loads(row.pop("metadata_json"))
        return rows

    # -- raters ---------------------------------------------------------------------------

    def invite_rater(
        self,
        study: "str | int | Study",
        display_name: str,
        specialty: str,
        *,
        actor: "str | AdminSession",
        expires_at: datetime | None = None,
        expires_in_days: float | None = None,
    ) -> Invitation:
        """Add a rater with a personal token and a randomised, balanced item sequence.

        The returned :class:`Invitation` holds the token; it is not stored and cannot be shown
        again (only its hash is kept).  Audited as ``rater.invite``.
        """
        st = self.study(study)
        display_name = _clean_name(display_name, "rater name")
        specialty = canonical_specialty(specialty)
        expires = self._expiry(expires_at, expires_in_days)
        params = st.params or DesignParams()
        token, token_id = new_token(), secrets.token_hex(6)
        with self.transaction() as conn:
            items = self.item_specs(st.id)
            if not items:
                raise StudyError(f"study {st.name!r} has no items to rate")
            cur = conn.execute(
                "INSERT INTO raters (study_id, display_name, specialty, token_id, token_hash, expires_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (st.id, display_name, specialty, token_id, hash_token(token), expires and iso(expires), self.now_iso()),
            )
            rater_id = int(cur.lastrowid)
            ids = dict(conn.execute("SELECT item_key, id FROM items WHERE study_id = ?", (st.id,)).fetchall())
            self.db.table("assignments").insert_all(
                (
                    {"rater_id": rater_id, "study_id": st.id, "item_id": ids[p.item_key], "position": p.position,
                     "auto_side": p.auto_side}
                    for p in assign(items, params, rater_id)
                ),
                batch_size=500,
            )
            self.audit(actor, "rater.invite", study=st.name, rater_id=rater_id, name=display_name,
                       specialty=specialty, token_id=token_id, expires_at=expires and iso(expires))
        return Invitation(rater_id, st.id, display_name, specialty, token_id, expires, token)

    def _expiry(self, expires_at: datetime | None, expires_in_days: float | None) -> datetime | None:
        if expires_at is not None and expires_in_days is not None:
            raise StudyError("give either expires_at or expires_in_days, not both")
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise StudyError("expiry must be in the future")
            return self.now() + timedelta(days=expires_in_days)
        if expires_at is not None and expires_at.tzinfo is None:
            raise StudyError("expires_at must be timezone-aware")
        return expires_at

    def _rater_ref(self, conn: sqlite3.Connection, rater_id: int | None, token_id: str | None) -> dict[str, Any]:
        if (rater_id is None) == (token_id is None):
            raise StudyError("name the rater by id or by token id (one of them)")
        if rater_id is not None:
            row = conn.execute(
                "SELECT id, study_id, display_name, token_id FROM raters WHERE id = ?", (rater_id,)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT id, study_id, display_name, token_id FROM raters WHERE token_id = ?", (str(token_id).strip(),)
            ).fetchone()
        if row is None:
            which = f"id {rater_id}" if rater_id is not None else f"token id {token_id}"
            raise StudyError(f"no rater with {which}")
        return dict(zip(("id", "study_id", "display_name", "token_id"), row))

    def revoke_rater(
        self, rater_id: int | None = None, *, token_id: str | None = None, actor: "str | AdminSession"
    ) -> int:
        """Revoke a rater's link (by rater id or token id); their votes stay.  Audited."""
        with self.transaction() as conn:
            rater = self._rater_ref(conn, rater_id, token_id)
            conn.execute("UPDATE raters SET revoked = 1, revoked_at = ? WHERE id = ?", (self.now_iso(), rater["id"]))
            self.audit(actor, "rater.revoke", rater_id=rater["id"], token_id=rater["token_id"])
        return rater["id"]

    def reissue_token(
        self,
        rater_id: int,
        *,
        actor: "str | AdminSession",
        expires_at: datetime | None = None,
        expires_in_days: float | None = None,
    ) -> Invitation:
        """Give a rater a new link (old one stops working, revocation lifted); votes and order stay."""
        expires = self._expiry(expires_at, expires_in_days)
        token, token_id = new_token(), secrets.token_hex(6)
        with self.transaction() as conn:
            rater = self._rater_ref(conn, rater_id, None)
            row = conn.execute("SELECT specialty FROM raters WHERE id = ?", (rater_id,)).fetchone()
            conn.execute(
                "UPDATE raters SET token_hash = ?, token_id = ?, revoked = 0, revoked_at = NULL, expires_at = ? "
                "WHERE id = ?",
                (hash_token(token), token_id, expires and iso(expires), rater_id),
            )
            self.audit(actor, "rater.reissue", rater_id=rater_id, token_id=token_id)
        return Invitation(rater_id, rater["study_id"], rater["display_name"], row[0], token_id, expires, token)

    def rater_by_credential(self, credential: str) -> dict[str, Any] | None:
        """The rater row whose token hash is ``credential`` (used by sign-in)."""
        return self._one(
            "SELECT id, study_id, display_name, specialty, revoked, expires_at FROM raters WHERE token_hash = ?",
            (credential,),
        )

    def raters(self, study: "str | int | Study") -> list[RaterInfo]:
        """Every rater of a study with progress, for the admin page."""
        rows = self._rows(
            "SELECT r.*, (SELECT COUNT(*) FROM votes v WHERE v.rater_id = r.id) AS done, "
            "(SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id) AS total "
            "FROM raters r WHERE r.study_id = ? ORDER BY r.id",
            (self.study(study).id,),
        )
        return [
            RaterInfo(r["id"], r["study_id"], r["display_name"], r["specialty"], r["external_id"], r["token_id"],
                      bool(r["revoked"]), r["expires_at"], r["created_at"], r["done"], r["total"])
            for r in rows
        ]

    # -- rating ---------------------------------------------------------------------------

    def _check_session(self, conn: sqlite3.Connection, session: RaterSession) -> None:
        """Re-check a session against the database (inside the caller's transaction/lock)."""
        if not isinstance(session, RaterSession):
            raise AccessDenied("a vote must be cast through a signed-in rater session")
        row = conn.execute(
            "SELECT id, study_id, revoked, expires_at FROM raters WHERE token_hash = ?", (session.credential,)
        ).fetchone()
        record = None if row is None else dict(zip(("id", "study_id", "revoked", "expires_at"), row))
        check_rater_row(record, self.now())
        assert record is not None
        if record["id"] != session.rater_id or record["study_id"] != session.study_id:
            raise AccessDenied("this session does not belong to that rater or study")

    def study_for(self, session: RaterSession) -> Study:
        """The study the signed-in rater was invited to (for its instructions and Turing flag)."""
        with self.locked() as conn:
            self._check_session(conn, session)
        return self.study(session.study_id)

    def next_item_for(self, session: RaterSession) -> ItemView | None:
        """The rater's first item without a vote, in their randomised order; ``None`` when done."""
        with self.locked() as conn:
            self._check_session(conn, session)
            row = conn.execute(
                "SELECT a.item_id, i.item_key, c.case_key, i.slice_index, a.position, a.auto_side, s.turing, "
                "(SELECT COUNT(*) FROM assignments WHERE rater_id = a.rater_id) "
                "FROM assignments a JOIN items i ON i.id = a.item_id JOIN cases c ON c.id = i.case_id "
                "JOIN studies s ON s.id = a.study_id "
                "WHERE a.rater_id = ? AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.study_id = a.study_id "
                "AND v.rater_id = a.rater_id AND v.item_id = a.item_id) ORDER BY a.position LIMIT 1",
                (session.rater_id,),
            ).fetchone()
        if row is None:
            return None
        return ItemView(row[0], row[1], row[2], row[3], row[4], row[7], row[5], bool(row[6]))

    def cast_vote(
        self,
        session: RaterSession,
        item_id: int,
        choice: str,
        *,
        response_ms: int | None = None,
        comment: str = "",
        turing: str | None = None,
    ) -> Vote:
        """Record the signed-in rater's choice (``"left"``/``"right"``) for one of their items.

        One transaction.  A second call for the same item (a rerun, a double click) changes
        nothing and returns the first vote with ``created=False``.  Raises
        :class:`AccessDenied` for an item outside the rater's assignment and the sign-in errors
        of :mod:`.access` for a revoked or expired link.  ``turing`` is the side the rater
        thinks the computer drew (studies that ask the Turing question only).
        """
        side = _side(choice, "choice")
        guess = None if turing is None else _side(turing, "turing answer")
        response_ms = _response_ms(response_ms)
        comment = str(comment or "").strip()
        if len(comment) > MAX_COMMENT:
            raise StudyError(f"comment must be at most {MAX_COMMENT} characters")
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            raise StudyError(f"item id must be an integer, got {item_id!r}")
        with self.transaction() as conn:
            self._check_session(conn, session)
            row = conn.execute(
                "SELECT a.auto_side, s.turing FROM assignments a JOIN studies s ON s.id = a.study_id "
                "WHERE a.rater_id = ? AND a.item_id = ? AND a.study_id = ?",
                (session.rater_id, item_id, session.study_id),
            ).fetchone()
            if row is None:
                raise AccessDenied(f"item {item_id} is not one of the items assigned to you")
            auto_side, asks_turing = row
            if guess is not None and not asks_turing:
                raise StudyError("this study does not ask which contour the computer drew")
            conn.execute(
                "INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, response_ms, comment, "
                "turing, origin, cast_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'app', ?) "
                "ON CONFLICT (study_id, rater_id, item_id) DO NOTHING",
                (session.study_id, session.rater_id, item_id, side, auto_side,
                 "automatic" if side == auto_side else "manual", response_ms, comment, guess, self.now_iso()),
            )
            created = conn.execute("SELECT changes()").fetchone()[0] == 1
            vote = conn.execute(
                "SELECT id, rater_id, item_id, side, source, response_ms, comment, turing, cast_at FROM votes "
                "WHERE study_id = ? AND rater_id = ? AND item_id = ?",
                (session.study_id, session.rater_id, item_id),
            ).fetchone()
        return Vote(*vote, created=created)

    def progress(self, session: RaterSession) -> Progress:
        """How many of the signed-in rater's items have a vote."""
        with self.locked() as conn:
            self._check_session(conn, session)
            done = conn.execute("SELECT COUNT(*) FROM votes WHERE rater_id = ?", (session.rater_id,)).fetchone()[0]
            total = conn.execute(
                "SELECT COUNT(*) FROM assignments WHERE rater_id = ?", (session.rater_id,)
            ).fetchone()[0]
        return Progress(done, total)

    def study_progress(self, study: "str | int | Study") -> Progress:
        """Votes cast so far over all assigned items of a study (all raters)."""
        study_id = self.study(study).id
        with self.locked() as conn:
            done = conn.execute("SELECT COUNT(*) FROM votes WHERE study_id = ?", (study_id,)).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM assignments WHERE study_id = ?", (study_id,)).fetchone()[0]
        return Progress(done, total)

    @staticmethod
    def _verdict(accepted_source: Any, reason: Any) -> tuple[str, str]:
        source = str(accepted_source or "").strip().lower()
        if source not in ("automatic", "manual", "none"):
            raise StudyError(f"accepted source must be automatic, manual or none, got {accepted_source!r}")
        reason = str(reason or "").strip()
        if len(reason) > MAX_COMMENT:
            raise StudyError(f"reason must be at most {MAX_COMMENT} characters")
        return source, reason

    def record_review(self, session: RaterSession, case_id: str, accepted_source: str, reason: str = "") -> Review:
        """The clinical verdict of the signed-in rater on a whole case of their study.

        ``accepted_source``: ``"automatic"``, ``"manual"`` or ``"none"`` (neither is clinically
        acceptable); ``reason`` is free text.  Recording again replaces the earlier verdict.
        """
        source, reason = self._verdict(accepted_source, reason)
        now = self.now_iso()
        with self.transaction() as conn:
            self._check_session(conn, session)
            row = self._case_row(conn, session.study_id, case_id)
            if row is None:
                raise AccessDenied(f"case {case_id} is not part of your study")
            conn.execute(
                "INSERT INTO reviews (study_id, case_id, rater_id, accepted_source, reason, reviewed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, rater_id) DO UPDATE SET "
                "accepted_source = excluded.accepted_source, reason = excluded.reason, "
                "reviewed_at = excluded.reviewed_at",
                (session.study_id, row[0], session.rater_id, source, reason, now),
            )
        return Review(str(case_id), session.rater_id, source, reason, now)

    @staticmethod
    def _case_row(conn: sqlite3.Connection, study_id: int, case_id: str):
        """The ``cases`` row id of ``case_id`` in a study, or None."""
        return conn.execute("SELECT id FROM cases WHERE study_id = ? AND case_key = ?", (study_id, str(case_id))).fetchone()

    def _check_admin(self, conn: sqlite3.Connection, admin: AdminSession) -> None:
        """Re-check an admin session (inside the caller's transaction): unexpired, admin still exists."""
        if not isinstance(admin, AdminSession):
            raise AccessDenied("an admin review must be recorded through a signed-in admin session")
        now = self.now()
        if not admin.valid(now) or admin.logged_in_at > now:
            raise AccessDenied("the admin session has expired: sign in again")
        if conn.execute("SELECT 1 FROM admins WHERE username = ?", (admin.username,)).fetchone() is None:
            raise AccessDenied(f"{admin.username!r} is not an admin of this database")

    def record_admin_review(
        self,
        admin: AdminSession,
        study: "str | int | Study",
        case_id: str,
        accepted_source: str,
        reason: str = "",
        *,
        specialty: str | None = None,
    ) -> Review:
        """The clinical verdict of a signed-in admin on a case of ``study`` (not blinded).

        As :meth:`record_review`, but the reviewer is the admin (no rater record, no items):
        recording again replaces the same admin's earlier verdict on that case.  ``specialty``
        (optional) is kept with the verdict.  Raises :class:`AccessDenied` for an expired or
        forged session.  Audited as ``review.recorded``.
        """
        source, reason = self._verdict(accepted_source, reason)
        spec = None if specialty is None else canonical_specialty(specialty)
        st = self.study(study)
        now = self.now_iso()
        with self.transaction() as conn:
            self._check_admin(conn, admin)
            row = self._case_row(conn, st.id, case_id)
            if row is None:
                raise StudyError(f"case {case_id} is not in study {st.name!r}")
            previous = conn.execute(
                "SELECT accepted_source FROM reviews WHERE case_id = ? AND admin_username = ?",
                (row[0], admin.username),
            ).fetchone()
            conn.execute(
                "INSERT INTO reviews (study_id, case_id, admin_username, specialty, accepted_source, reason, "
                "reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, admin_username) DO UPDATE SET "
                "specialty = excluded.specialty, accepted_source = excluded.accepted_source, "
                "reason = excluded.reason, reviewed_at = excluded.reviewed_at",
                (st.id, row[0], admin.username, spec, source, reason, now),
            )
            self.audit(admin, "review.recorded", study=st.name, case=str(case_id), accepted=source,
                       replaced=previous[0] if previous else None)
        return Review(str(case_id), None, source, reason, now, admin=admin.username)

    # -- tables for reports and export ----------------------------------------------------

    def votes_table(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """Every vote of a study as plain rows, in the column layout :mod:`.report` and the CSV
        files use (``rater_id, rater_group, item_id, case_id, left_source, choice, comment,
        response_ms`` and extra columns), ordered by rater and the rater's sequence."""
        return self._rows(
            """SELECT COALESCE(r.external_id, CAST(r.id AS TEXT)) AS rater_id, r.specialty AS rater_group,
                      i.item_key AS item_id, c.case_key AS case_id,
                      CASE v.auto_side WHEN 'left' THEN 'automatic' ELSE 'manual' END AS left_source,
                      v.side AS choice, v.comment, v.response_ms,
                      v.source AS chosen, r.display_name AS rater_name, i.slice_index, o.item_key AS repeat_of,
                      v.turing, v.cast_at, v.origin, c.slice_thickness_mm, c.tumour_volume_ml, c.location,
                      a.position
               FROM votes v
               JOIN raters r ON r.id = v.rater_id
               JOIN items i ON i.id = v.item_id
               JOIN cases c ON c.id = i.case_id
               LEFT JOIN items o ON o.id = i.repeat_of
               LEFT JOIN assignments a ON a.rater_id = v.rater_id AND a.item_id = v.item_id
               WHERE v.study_id = ?
               ORDER BY r.id, a.position, v.id""",
            (self.study(study).id,),
        )

    def reviews_table(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """Every clinical review of a study as plain rows, newest first.

        Rater and admin reviews alike: ``reviewer_kind`` is ``"rater"`` or ``"admin"``;
        ``rater_id`` is the rater's id (as in :meth:`votes_table`) or ``admin:<username>``,
        ``rater_name`` the rater's display name or the admin's username, ``rater_group`` the
        specialty (for an admin, the one given with the verdict, if any).  The first row of a
        case is its latest verdict (see :meth:`latest_review`).
        """
        return self._rows(
            "SELECT CASE WHEN v.rater_id IS NULL THEN 'admin:' || v.admin_username "
            "ELSE COALESCE(r.external_id, CAST(r.id AS TEXT)) END AS rater_id, "
            "COALESCE(r.display_name, v.admin_username) AS rater_name, "
            "COALESCE(r.specialty, v.specialty) AS rater_group, "
            "CASE WHEN v.rater_id IS NULL THEN 'admin' ELSE 'rater' END AS reviewer_kind, "
            "c.case_key AS case_id, v.accepted_source, v.reason, v.reviewed_at "
            "FROM reviews v LEFT JOIN raters r ON r.id = v.rater_id JOIN cases c ON c.id = v.case_id "
            "WHERE v.study_id = ? ORDER BY v.reviewed_at DESC, v.id DESC",
            (self.study(study).id,),
        )

    def latest_review(self, study: "str | int | Study", case_id: str) -> dict[str, Any] | None:
        """The newest verdict on a case (by a rater or an admin), a :meth:`reviews_table` row."""
        return next((r for r in self.reviews_table(study) if r["case_id"] == str(case_id)), None)

    def vote_count(self, study: "str | int | Study | None" = None) -> int:
        with self.locked() as conn:
            if study is None:
                return conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM votes WHERE study_id = ?", (self.study(study).id,)).fetchone()[0]
