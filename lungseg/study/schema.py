"""The study database's schema and its migrations, and where the database lives.

The schema carries its own version (``meta.schema_version``); :func:`migrate` brings a database
up to :data:`SCHEMA_VERSION` by running the steps of :data:`MIGRATIONS` after its version, all in
one ``BEGIN IMMEDIATE`` transaction (so a failed step leaves the database as it was, and two
processes opening an old database at once migrate it once).  Plain SQL steps: sqlite-utils'
``transform`` cannot rebuild a table inside a caller's transaction with composite foreign keys
intact, and the ``sqlite-migrate`` plugin keeps its own bookkeeping table that older lungseg
databases do not have.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from lungseg.study.design import StudyError

DEFAULT_DB = Path("data") / "lungseg.db"


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

# v4: clinical reviews of any opened case (the viewer's accept/reject, in or outside a study):
# one row per decision, never replaced, so the newest row is the current verdict and older ones
# are the history.  ``decisions_json`` holds the per-contour decisions (see
# :class:`lungseg.study.reviews.ContourDecision`), ``source_json`` the case's
# ``CaseSource.as_dict()`` and ``source_key`` a digest of it for lookups.  A review of a study
# case (``study_id``/``study_case_id``) also sets the study's ``reviews`` row, which points back
# to it through ``reviews.case_review_id`` (so export knows which lesions were accepted).
_V4 = [
    """CREATE TABLE case_reviews (
        id INTEGER PRIMARY KEY,
        case_key TEXT NOT NULL,
        case_label TEXT NOT NULL DEFAULT '',
        reviewer TEXT NOT NULL,
        reviewer_kind TEXT NOT NULL CHECK (reviewer_kind IN ('admin', 'rater', 'local')),
        admin_username TEXT REFERENCES admins(username),
        rater_id INTEGER REFERENCES raters(id),
        decided_at TEXT NOT NULL,
        decisions_json TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        source_json TEXT NOT NULL DEFAULT '{}',
        source_key TEXT NOT NULL,
        study_id INTEGER REFERENCES studies(id),
        study_case_id INTEGER,
        CHECK ((reviewer_kind = 'admin') = (admin_username IS NOT NULL)),
        CHECK ((reviewer_kind = 'rater') = (rater_id IS NOT NULL)),
        CHECK ((study_id IS NULL) = (study_case_id IS NULL)),
        CHECK (reviewer_kind <> 'local' OR study_id IS NULL),
        FOREIGN KEY (study_case_id, study_id) REFERENCES cases(id, study_id))""",
    "CREATE INDEX case_reviews_by_case ON case_reviews (case_key, decided_at)",
    "CREATE INDEX case_reviews_by_source ON case_reviews (source_key, decided_at)",
    "ALTER TABLE reviews ADD COLUMN case_review_id INTEGER REFERENCES case_reviews(id)",
]

# v5: lesions added to a case's automatic contour by a click in the viewer.  A case review lists the
# added lesions current at that review in ``added_json`` (number, click point, who and when added,
# measurements, and the digest of its mask); the masks themselves live once each in ``lesion_masks``,
# keyed by that digest: the mask's bounding box on the case grid and its packed bits, zlib-compressed
# (see :mod:`lungseg.maskcodec`), so carrying an added lesion over to the next review costs no copy.
_V5 = [
    "ALTER TABLE case_reviews ADD COLUMN added_json TEXT NOT NULL DEFAULT '[]'",
    """CREATE TABLE lesion_masks (
        digest TEXT PRIMARY KEY,
        shape_json TEXT NOT NULL,
        box_json TEXT NOT NULL,
        voxels INTEGER NOT NULL CHECK (voxels > 0),
        data BLOB NOT NULL)""",
]

# v6: structures, their versions, per-structure decisions and editing activity (issue 22).
# ``structure_versions``: every version of a structure of a case (a structure created in the viewer, or
# an edit of a manual ROI / the automatic contour: the original itself is never stored or overwritten,
# it is "version 0"); who made it, when, from which version (``parent``), how (``provenance``: the DICOM
# ROIGenerationAlgorithm / SegmentAlgorithmType, ``origin`` in words, the algorithm's name and version) and
# its mask (a ``lesion_masks`` digest; NULL for an empty structure).  ``structure_decisions``: accept /
# reject per structure, or per lesion of the automatic contour (``lesion``), of one version; every decision
# is kept, the newest counts.  ``activity``: the viewer's interaction events, for the editing effort.
_V6 = [
    """CREATE TABLE structure_versions (
        id INTEGER PRIMARY KEY,
        case_key TEXT NOT NULL,
        case_label TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        parent INTEGER CHECK (parent IS NULL OR (parent >= 0 AND parent < version)),
        provenance TEXT NOT NULL CHECK (provenance IN ('AUTOMATIC', 'SEMIAUTOMATIC', 'MANUAL')),
        origin TEXT NOT NULL,
        algorithm TEXT NOT NULL DEFAULT '',
        algorithm_version TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL,
        created_at TEXT NOT NULL,
        shape_json TEXT NOT NULL,
        mask_digest TEXT REFERENCES lesion_masks(digest),
        operations INTEGER NOT NULL DEFAULT 0 CHECK (operations >= 0),
        UNIQUE (case_key, name, version))""",
    """CREATE TABLE structure_decisions (
        id INTEGER PRIMARY KEY,
        case_key TEXT NOT NULL,
        case_label TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        lesion INTEGER CHECK (lesion IS NULL OR lesion >= 1),
        version INTEGER NOT NULL CHECK (version >= 0),
        basis TEXT NOT NULL DEFAULT '',
        accepted INTEGER NOT NULL CHECK (accepted IN (0, 1)),
        reviewer TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX structure_decisions_by_case ON structure_decisions (case_key, name, id)",
    """CREATE TABLE activity (
        id INTEGER PRIMARY KEY,
        case_key TEXT NOT NULL,
        user TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL)""",
    "CREATE INDEX activity_by_case_user ON activity (case_key, user, at)",
]

# v8: contouring studies (readers contour cases in arms ``scratch`` and ``assisted``; see
# :mod:`lungseg.study.readings`).  ``studies.kind`` tells a contouring study from a preference study.  Each
# reader's planned readings are rows of ``contouring_readings`` (case, arm, first reading or repeat, session and
# position in the reader's sequence), with the draft while it is being contoured (resumable) and, once submitted,
# its active time and mask (in ``lesion_masks`` by digest; an empty mask has no digest and ``mask_voxels`` 0).
# ``contouring_sessions`` records when a reader opened each session (two readings of a case are kept sessions
# and days apart); ``contouring_model_times`` the automatic model's own time per case (the ``model`` arm).
_V8 = [
    "ALTER TABLE studies ADD COLUMN kind TEXT NOT NULL DEFAULT 'preference' "
    "CHECK (kind IN ('preference', 'contouring'))",
    """CREATE TABLE contouring_readings (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL,
        rater_id INTEGER NOT NULL,
        case_id INTEGER NOT NULL,
        arm TEXT NOT NULL CHECK (arm IN ('scratch', 'assisted')),
        reading INTEGER NOT NULL DEFAULT 1 CHECK (reading IN (1, 2)),
        session INTEGER NOT NULL CHECK (session >= 1),
        position INTEGER NOT NULL CHECK (position >= 1),
        started_at TEXT,
        draft_digest TEXT REFERENCES lesion_masks(digest),
        draft_active_s REAL CHECK (draft_active_s IS NULL OR draft_active_s >= 0),
        submitted_at TEXT,
        active_s REAL CHECK (active_s IS NULL OR active_s >= 0),
        mask_digest TEXT REFERENCES lesion_masks(digest),
        mask_voxels INTEGER CHECK (mask_voxels IS NULL OR mask_voxels >= 0),
        origin TEXT NOT NULL DEFAULT 'app' CHECK (origin IN ('app', 'import')),
        UNIQUE (rater_id, case_id, arm, reading),
        UNIQUE (rater_id, position),
        CHECK ((mask_digest IS NULL) OR (mask_voxels > 0)),
        FOREIGN KEY (rater_id, study_id) REFERENCES raters(id, study_id),
        FOREIGN KEY (case_id, study_id) REFERENCES cases(id, study_id))""",
    "CREATE INDEX contouring_readings_by_study ON contouring_readings (study_id, rater_id, position)",
    """CREATE TABLE contouring_sessions (
        rater_id INTEGER NOT NULL REFERENCES raters(id),
        session INTEGER NOT NULL CHECK (session >= 1),
        opened_at TEXT NOT NULL,
        PRIMARY KEY (rater_id, session))""",
    """CREATE TABLE contouring_model_times (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL,
        case_id INTEGER NOT NULL,
        seconds REAL NOT NULL CHECK (seconds >= 0),
        model_version TEXT,
        origin TEXT NOT NULL DEFAULT 'app' CHECK (origin IN ('app', 'import')),
        recorded_at TEXT NOT NULL,
        UNIQUE (case_id, origin),
        FOREIGN KEY (case_id, study_id) REFERENCES cases(id, study_id))""",
]

#: ``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``.  (``_V7`` comes from another
#: branch; the steps are ordered when the branches are merged.)
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4, _V5, _V6, _V8]
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
