"""The contouring study in the store: its cases, each reader's readings, sessions, drafts and submissions.

A contouring study (``studies.kind = 'contouring'``) has cases but no items.  Inviting a reader (the same
:meth:`~lungseg.study.raters.RaterAccess.invite_rater`, the same personal links, revocation and audit) plans
their readings (:func:`lungseg.study.contouring.plan_readings`).  A reader then works through sessions::

    progress = store.begin_session(session)            # opens the next session when the rules allow it
    view = store.next_reading(session)                 # None when this session (or everything) is done
    start = store.reading_start_mask(session, view.reading_id)   # empty (scratch), the draft, or automatic
    store.save_draft(session, view.reading_id, mask, active_s=41.5)   # resumable: the next visit starts here
    store.submit_reading(session, view.reading_id, mask, active_s=97.0)

Every reader call re-checks the signed-in session and that the reading is theirs, so no reader can see or
change another reader's contour, time or progress.  A scratch reading never reads the automatic contour:
its start is empty (or the reader's own draft).  Masks live on the case's canonical grid, packed
(:mod:`lungseg.maskcodec`) in ``lesion_masks``; the report reads them with :meth:`Contouring.readings_table`
and :meth:`Contouring.reading_masks`.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

import numpy as np

from lungseg.maskcodec import PackedMask, pack, unpack
from lungseg.study.access import AccessDenied, AdminSession, RaterSession
from lungseg.study.contouring import ARMS, ContouringParams, plan_readings
from lungseg.study.core import clean_name
from lungseg.study.design import StudyError
from lungseg.study.reviews import Reviewing
from lungseg.study.studies import Study


@dataclass(frozen=True)
class ContouringCase:
    """A case of a contouring study: its grid (canonical [z, y, x] shape, spacing in mm), the automatic
    contour the assisted arm starts from (packed; None when there is none), and the model's own time on it."""

    case_id: str
    grid_shape: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    automatic: PackedMask | None = None
    model_seconds: float | None = None
    model_version: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ReadingView:
    """What the contouring page needs for one of the signed-in reader's readings (nothing of anyone else's).

    ``arm``: ``scratch`` (start empty, no automatic contour anywhere) or ``assisted`` (start from the
    automatic draft; this arm cannot be blinded).  ``session``: the ordinal of its session among the reader's
    sessions; ``position``/``total``: where it is in the reader's whole sequence."""

    reading_id: int
    case_id: str
    arm: str
    session: int
    sessions: int
    position: int
    total: int
    started: bool
    has_draft: bool
    draft_active_s: float
    submitted: bool

    @property
    def shows_automatic(self) -> bool:
        return self.arm == "assisted"


@dataclass(frozen=True)
class ContouringProgress:
    """The signed-in reader's own progress: readings submitted of all, and of the open session."""

    done: int
    total: int
    session: int | None  # ordinal of the open session (None before the first is begun)
    sessions: int
    session_done: int
    session_total: int
    next_session_at: str | None  # the earliest time the next session may begin (None: now, or no next one)

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def session_finished(self) -> bool:
        return self.session is not None and self.session_done >= self.session_total


@dataclass(frozen=True)
class SubmittedReading:
    reading_id: int
    active_s: float
    mask_voxels: int
    submitted_at: str
    created: bool  # False when the reading had already been submitted: the first submission stands


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise StudyError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


_READING_COLUMNS = ("id", "rater_id", "study_id", "case_key", "arm", "reading", "session", "position", "started_at",
                    "draft_digest", "draft_active_s", "submitted_at", "active_s", "mask_digest", "mask_voxels")


class Contouring(Reviewing):
    """Contouring studies: cases with their grids, readers' readings, sessions, drafts and submissions."""

    # -- setting up ------------------------------------------------------------------------

    def create_contouring_study(
        self,
        name: str,
        cases: Sequence[ContouringCase],
        params: ContouringParams | None = None,
        *,
        actor: "str | AdminSession",
        imported: bool = False,
    ) -> Study:
        """Create a contouring study with its cases (one transaction; audited as ``study.create``).
        ``imported=True`` makes one without a design, to hold readings made elsewhere (see
        :mod:`lungseg.study.contouring_import`)."""
        name = clean_name(name, "study name")
        params = params or ContouringParams()
        if not imported:  # a design that cannot be planned is refused now, not at the first invitation
            plan_readings([c.case_id for c in cases], params, 0, "check")
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                raise StudyError(f"a study named {name!r} already exists")
            study_id = self._insert_study(conn, name, "" if imported else params.instructions,
                                          None if imported else params, False, kind="contouring")
            for case in cases:
                self._insert_contouring_case(conn, study_id, case)
            self.audit(actor, "study.create", study=name, study_id=study_id, cases=len(cases), kind="contouring",
                       imported=imported)
        return self.study(study_id)

    def _insert_contouring_case(self, conn: sqlite3.Connection, study_id: int, case: ContouringCase) -> int:
        shape = tuple(int(s) for s in case.grid_shape)
        spacing = tuple(float(s) for s in case.spacing_zyx)
        if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
            raise StudyError(f"case {case.case_id}: a grid needs three sizes >= 1 and three spacings > 0")
        meta = dict(case.metadata or {})
        meta.update(grid_shape=list(shape), spacing_zyx=list(spacing))
        if case.automatic is not None:
            if tuple(case.automatic.shape) != shape:
                raise StudyError(f"case {case.case_id}: the automatic contour is not on the case's grid")
            self._store_mask(conn, case.automatic)
            meta["automatic_digest"] = case.automatic.digest
        try:
            cur = conn.execute(
                "INSERT INTO cases (study_id, case_key, slice_thickness_mm, tumour_volume_ml, location, metadata_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (study_id, case.case_id, meta.get("slice_thickness_mm"), meta.get("tumour_volume_ml"),
                 meta.get("location"), json.dumps(meta, default=str)),
            )
        except sqlite3.IntegrityError:
            raise StudyError(f"case {case.case_id} is already in this study") from None
        case_row = int(cur.lastrowid)
        if case.model_seconds is not None:
            self._put_model_time(conn, study_id, case_row, case.model_seconds, case.model_version, "app")
        return case_row

    @staticmethod
    def _store_mask(conn: sqlite3.Connection, m: PackedMask) -> str:
        conn.execute(
            "INSERT INTO lesion_masks (digest, shape_json, box_json, voxels, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (digest) DO NOTHING",
            (m.digest, json.dumps(list(m.shape)), json.dumps(list(m.box)), m.voxels, m.data),
        )
        return m.digest

    def _put_model_time(self, conn: sqlite3.Connection, study_id: int, case_row: int, seconds: float,
                        version: str | None, origin: str) -> None:
        conn.execute(
            "INSERT INTO contouring_model_times (study_id, case_id, seconds, model_version, origin, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, origin) DO UPDATE SET seconds = excluded.seconds, "
            "model_version = excluded.model_version, recorded_at = excluded.recorded_at",
            (study_id, case_row, _seconds(seconds, "the model's time"), version, origin, self.now_iso()),
        )

    def record_model_time(self, study: "str | int | Study", case_id: str, seconds: float,
                          model_version: str | None = None) -> None:
        """Record the automatic model's own time on a case of a contouring study (the ``model`` arm);
        a later measurement replaces the earlier one."""
        st = self._contouring_study(study)
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM cases WHERE study_id = ? AND case_key = ?", (st.id, case_id)).fetchone()
            if row is None:
                raise StudyError(f"case {case_id} is not in study {st.name!r}")
            self._put_model_time(conn, st.id, row[0], seconds, model_version, "app")

    def _contouring_study(self, study: "str | int | Study") -> Study:
        st = self.study(study)
        if st.kind != "contouring":
            raise StudyError(f"study {st.name!r} is a {st.kind} study, not a contouring study")
        return st

    def _assign_rater(self, conn: sqlite3.Connection, st: Study, rater_id: int) -> None:
        if st.kind != "contouring":
            super()._assign_rater(conn, st, rater_id)
            return
        if not isinstance(st.params, ContouringParams):
            raise StudyError(f"study {st.name!r} holds imported readings: it has no design to invite readers to")
        cases = dict(conn.execute("SELECT case_key, id FROM cases WHERE study_id = ?", (st.id,)).fetchall())
        if not cases:
            raise StudyError(f"study {st.name!r} has no cases to contour")
        ordinal = conn.execute("SELECT COUNT(*) FROM raters WHERE study_id = ? AND id < ?",
                               (st.id, rater_id)).fetchone()[0]
        plan = plan_readings(sorted(cases), st.params, ordinal, rater_id)
        conn.executemany(
            "INSERT INTO contouring_readings (study_id, rater_id, case_id, arm, reading, session, position) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(st.id, rater_id, cases[p.case_id], p.arm, p.reading, p.session, p.position) for p in plan],
        )

    # -- the reader's side -------------------------------------------------------------------

    def _reader_rows(self, conn: sqlite3.Connection, session: RaterSession) -> list[dict[str, Any]]:
        """The signed-in reader's readings (after checking the session), in their order."""
        self._check_session(conn, session)
        rows = conn.execute(
            "SELECT r.id, r.rater_id, r.study_id, c.case_key, r.arm, r.reading, r.session, r.position, r.started_at, "
            "r.draft_digest, r.draft_active_s, r.submitted_at, r.active_s, r.mask_digest, r.mask_voxels "
            "FROM contouring_readings r JOIN cases c ON c.id = r.case_id "
            "WHERE r.rater_id = ? AND r.study_id = ? ORDER BY r.position",
            (session.rater_id, session.study_id),
        ).fetchall()
        return [dict(zip(_READING_COLUMNS, row)) for row in rows]

    @staticmethod
    def _session_numbers(rows: Sequence[Mapping[str, Any]]) -> list[int]:
        return sorted({r["session"] for r in rows})

    def _open_session(self, conn: sqlite3.Connection, rater_id: int) -> int | None:
        row = conn.execute("SELECT MAX(session) FROM contouring_sessions WHERE rater_id = ?", (rater_id,)).fetchone()
        return row[0]

    def _next_session_at(self, rows: Sequence[Mapping[str, Any]], session: int, gap_days: float) -> datetime | None:
        """When ``session`` may begin: ``gap_days`` after the reader's latest submitted reading of any of its
        cases (None when nothing holds it back)."""
        if gap_days <= 0:
            return None
        cases = {r["case_key"] for r in rows if r["session"] == session}
        done = [_parse(r["submitted_at"]) for r in rows
                if r["case_key"] in cases and r["session"] < session and r["submitted_at"]]
        return max(done) + timedelta(days=gap_days) if done else None

    def _progress(self, conn: sqlite3.Connection, session: RaterSession,
                  rows: Sequence[Mapping[str, Any]]) -> ContouringProgress:
        numbers = self._session_numbers(rows)
        current = self._open_session(conn, session.rater_id)
        in_session = [r for r in rows if r["session"] == current]
        later = [s for s in numbers if current is None or s > current]
        next_at = None
        if later:
            params = self.study(session.study_id).params
            gap = params.min_gap_days if isinstance(params, ContouringParams) else 0.0
            when = self._next_session_at(rows, later[0], gap)
            next_at = when.isoformat() if when is not None and when > self.now() else None
        return ContouringProgress(
            done=sum(1 for r in rows if r["submitted_at"]),
            total=len(rows),
            session=None if current is None else numbers.index(current) + 1,
            sessions=len(numbers),
            session_done=sum(1 for r in in_session if r["submitted_at"]),
            session_total=len(in_session),
            next_session_at=next_at,
        )

    def contouring_progress(self, session: RaterSession) -> ContouringProgress:
        """The signed-in reader's own progress (never anyone else's)."""
        with self.locked() as conn:
            return self._progress(conn, session, self._reader_rows(conn, session))

    def begin_session(self, session: RaterSession) -> ContouringProgress:
        """Open the reader's next session, if the open one is finished and no reading of it is held back by
        the minimum gap in days; otherwise the progress as it is (resuming the open session).  Audited."""
        with self.transaction() as conn:
            rows = self._reader_rows(conn, session)
            if not rows:
                raise StudyError("you have no readings in this study")
            current = self._open_session(conn, session.rater_id)
            pending = [r for r in rows if r["session"] == current and not r["submitted_at"]]
            later = [s for s in self._session_numbers(rows) if current is None or s > current]
            if current is not None and pending or not later:
                return self._progress(conn, session, rows)
            params = self.study(session.study_id).params
            gap = params.min_gap_days if isinstance(params, ContouringParams) else 0.0
            when = self._next_session_at(rows, later[0], gap)
            if when is not None and self.now() < when:
                raise StudyError(f"your next session can begin on {when:%Y-%m-%d %H:%M} UTC (readings of one case "
                                 f"are kept at least {gap:g} days apart)")
            conn.execute("INSERT INTO contouring_sessions (rater_id, session, opened_at) VALUES (?, ?, ?)",
                         (session.rater_id, later[0], self.now_iso()))
            self.audit(f"rater:{session.rater_id}", "contouring.session_begin", rater_id=session.rater_id,
                       session=later[0])
            return self._progress(conn, session, rows)

    def _view(self, rows: Sequence[Mapping[str, Any]], r: Mapping[str, Any]) -> ReadingView:
        numbers = self._session_numbers(rows)
        return ReadingView(
            reading_id=r["id"], case_id=r["case_key"], arm=r["arm"], session=numbers.index(r["session"]) + 1,
            sessions=len(numbers), position=r["position"], total=len(rows), started=r["started_at"] is not None,
            has_draft=r["draft_digest"] is not None, draft_active_s=float(r["draft_active_s"] or 0.0),
            submitted=r["submitted_at"] is not None,
        )

    def next_reading(self, session: RaterSession) -> ReadingView | None:
        """The reader's first unsubmitted reading of their open session; None when it is finished (then
        :meth:`begin_session` opens the next) or no session is open yet."""
        with self.locked() as conn:
            rows = self._reader_rows(conn, session)
            current = self._open_session(conn, session.rater_id)
            for r in rows:
                if r["session"] == current and not r["submitted_at"]:
                    return self._view(rows, r)
        return None

    def _own_reading(self, conn: sqlite3.Connection, session: RaterSession, reading_id: Any,
                     *, open_session: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if isinstance(reading_id, bool) or not isinstance(reading_id, int):
            raise StudyError(f"reading id must be an integer, got {reading_id!r}")
        rows = self._reader_rows(conn, session)
        mine = next((r for r in rows if r["id"] == reading_id), None)
        if mine is None:
            raise AccessDenied(f"reading {reading_id} is not one of your readings")
        if open_session and mine["session"] != self._open_session(conn, session.rater_id):
            raise AccessDenied(f"reading {reading_id} belongs to a session that is not open")
        return rows, mine

    def open_reading(self, session: RaterSession, reading_id: int) -> ReadingView:
        """One of the reader's readings in their open session; stamps when it was first opened."""
        with self.transaction() as conn:
            rows, r = self._own_reading(conn, session, reading_id)
            if r["started_at"] is None:
                r["started_at"] = self.now_iso()
                conn.execute("UPDATE contouring_readings SET started_at = ? WHERE id = ?", (r["started_at"], r["id"]))
            return self._view(rows, r)

    def _case_grid(self, conn: sqlite3.Connection, study_id: int, case_key: str) -> tuple[tuple[int, ...], dict]:
        row = conn.execute("SELECT metadata_json FROM cases WHERE study_id = ? AND case_key = ?",
                           (study_id, case_key)).fetchone()
        meta = json.loads(row[0])
        if "grid_shape" not in meta:
            raise StudyError(f"case {case_key}: its grid is not recorded (import its contours with the CT reference)")
        return tuple(int(s) for s in meta["grid_shape"]), meta

    def _packed(self, conn: sqlite3.Connection, digest: str) -> PackedMask:
        row = conn.execute("SELECT shape_json, box_json, voxels, data FROM lesion_masks WHERE digest = ?",
                           (digest,)).fetchone()
        if row is None:
            raise StudyError(f"a stored mask ({digest[:8]}) is missing from the database")
        return PackedMask(tuple(json.loads(row[0])), tuple(json.loads(row[1])), int(row[2]), bytes(row[3]))

    def reading_start_mask(self, session: RaterSession, reading_id: int) -> np.ndarray:
        """Where the reader starts: their own draft if they saved one, else an empty mask (``scratch``) or the
        automatic contour (``assisted``), on the case's canonical grid.  A scratch reading never reads the
        automatic contour."""
        with self.locked() as conn:
            _, r = self._own_reading(conn, session, reading_id)
            shape, meta = self._case_grid(conn, session.study_id, r["case_key"])
            if r["draft_digest"]:
                return unpack(self._packed(conn, r["draft_digest"]), shape)
            if r["arm"] == "assisted" and meta.get("automatic_digest"):
                return unpack(self._packed(conn, meta["automatic_digest"]), shape)
        return np.zeros(shape, bool)

    def _mask_for(self, conn: sqlite3.Connection, study_id: int, case_key: str, mask: Any) -> PackedMask | None:
        shape, _ = self._case_grid(conn, study_id, case_key)
        arr = np.asarray(mask)
        if arr.shape != shape:
            raise StudyError(f"the mask is {arr.shape}, case {case_key}'s grid is {shape}")
        arr = arr.astype(bool, copy=False)
        if not arr.any():
            return None
        packed = pack(arr)
        self._store_mask(conn, packed)
        return packed

    def save_draft(self, session: RaterSession, reading_id: int, mask: Any, active_s: float) -> None:
        """Keep the reader's work in progress (the mask so far and the active time so far): the next visit
        resumes from it.  Refused once the reading was submitted."""
        active = _seconds(active_s, "active time")
        with self.transaction() as conn:
            _, r = self._own_reading(conn, session, reading_id)
            if r["submitted_at"]:
                raise StudyError("this reading was already submitted")
            packed = self._mask_for(conn, session.study_id, r["case_key"], mask)
            conn.execute(
                "UPDATE contouring_readings SET draft_digest = ?, draft_active_s = ?, "
                "started_at = COALESCE(started_at, ?) WHERE id = ?",
                (packed.digest if packed else None, active, self.now_iso(), r["id"]),
            )

    def submit_reading(self, session: RaterSession, reading_id: int, mask: Any, active_s: float) -> SubmittedReading:
        """Record the reader's contour and active time for one of their readings in the open session.
        A second submission (a rerun, a double click) changes nothing and returns the first."""
        active = _seconds(active_s, "active time")
        with self.transaction() as conn:
            _, r = self._own_reading(conn, session, reading_id, open_session=False)
            if r["submitted_at"]:
                return SubmittedReading(r["id"], float(r["active_s"]), int(r["mask_voxels"]), r["submitted_at"], False)
            if r["session"] != self._open_session(conn, session.rater_id):
                raise AccessDenied(f"reading {reading_id} belongs to a session that is not open")
            packed = self._mask_for(conn, session.study_id, r["case_key"], mask)
            now = self.now_iso()
            voxels = packed.voxels if packed else 0
            conn.execute(
                "UPDATE contouring_readings SET submitted_at = ?, active_s = ?, mask_digest = ?, mask_voxels = ?, "
                "started_at = COALESCE(started_at, ?), draft_digest = NULL WHERE id = ?",
                (now, active, packed.digest if packed else None, voxels, now, r["id"]),
            )
        return SubmittedReading(r["id"], active, voxels, now, True)

    # -- the admin's side (report, export) ----------------------------------------------------

    def readings_table(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """Every submitted or imported reading of a contouring study: ``reader`` (external id, else the rater
        id), ``reader_name``, ``case_id``, ``arm``, ``reading`` (1, or 2 for a repeat), ``active_s`` (None when
        only a contour was imported), ``mask_digest``/``mask_voxels`` (None when only a time was imported;
        voxels 0 for an empty contour), ``session``, ``submitted_at``, ``origin``."""
        st = self._contouring_study(study)
        return self._rows(
            """SELECT COALESCE(r.external_id, CAST(r.id AS TEXT)) AS reader, r.display_name AS reader_name,
                      c.case_key AS case_id, x.arm, x.reading, x.active_s, x.mask_digest, x.mask_voxels,
                      x.session, x.position, x.submitted_at, x.origin
               FROM contouring_readings x JOIN raters r ON r.id = x.rater_id JOIN cases c ON c.id = x.case_id
               WHERE x.study_id = ? AND x.submitted_at IS NOT NULL
               ORDER BY r.id, x.position""",
            (st.id,),
        )

    def model_times(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """The automatic model's time per case (``case_id, seconds, model_version, origin``); a time measured
        here is preferred over an imported one for the same case."""
        st = self._contouring_study(study)
        rows = self._rows(
            "SELECT c.case_key AS case_id, m.seconds, m.model_version, m.origin FROM contouring_model_times m "
            "JOIN cases c ON c.id = m.case_id WHERE m.study_id = ? ORDER BY c.id, m.origin = 'app'",
            (st.id,),
        )
        return list({r["case_id"]: r for r in rows}.values())

    def contouring_cases(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """The study's cases with their grids: ``case_id, grid_shape, spacing_zyx, automatic_digest`` (or None)
        and the rest of the metadata."""
        rows = self.cases(self._contouring_study(study))
        return [{"case_id": r["case_id"], "grid_shape": r["metadata"].get("grid_shape"),
                 "spacing_zyx": r["metadata"].get("spacing_zyx"),
                 "automatic_digest": r["metadata"].get("automatic_digest"), "metadata": r["metadata"]} for r in rows]

    def packed_mask(self, digest: str) -> PackedMask:
        """A stored mask by digest (the report unpacks only the boxes it compares)."""
        with self.locked() as conn:
            return self._packed(conn, digest)


__all__ = ["ARMS", "ContouringCase", "ContouringProgress", "Contouring", "ReadingView", "SubmittedReading"]
