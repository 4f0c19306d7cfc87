"""Votes: the rater's next item, casting a vote, progress, and the votes table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lungseg.study.access import AccessDenied, RaterSession
from lungseg.study.core import MAX_COMMENT
from lungseg.study.design import SIDES, StudyError
from lungseg.study.raters import RaterAccess
from lungseg.study.studies import Study


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


class Voting(RaterAccess):
    """The rating task: next item, votes, progress."""

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
        if not 0 < item_id < 2**63:  # SQLite's integers are 64-bit
            raise StudyError(f"item id {str(item_id)[:30]} is out of range: no such item")
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

    def vote_count(self, study: "str | int | Study | None" = None) -> int:
        with self.locked() as conn:
            if study is None:
                return conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM votes WHERE study_id = ?", (self.study(study).id,)).fetchone()[0]
