"""Raters, their invitations and personal links, and the checks of rater and admin sessions."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lungseg.study.access import AccessDenied, AdminSession, Invitation, RaterSession, check_rater_row, hash_token, new_token
from lungseg.study.core import clean_name
from lungseg.study.design import DesignParams, StudyError, assign, canonical_specialty
from lungseg.study.schema import iso
from lungseg.study.studies import Study, StudyTables


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


class RaterAccess(StudyTables):
    """Inviting, revoking and re-issuing raters; checking a rater's or an admin's session."""

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
        display_name = clean_name(display_name, "rater name")
        specialty = canonical_specialty(specialty)
        expires = self._expiry(expires_at, expires_in_days)
        token, token_id = new_token(), secrets.token_hex(6)
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO raters (study_id, display_name, specialty, token_id, token_hash, expires_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (st.id, display_name, specialty, token_id, hash_token(token), expires and iso(expires), self.now_iso()),
            )
            rater_id = int(cur.lastrowid)
            self._assign_rater(conn, st, rater_id)
            self.audit(actor, "rater.invite", study=st.name, rater_id=rater_id, name=display_name,
                       specialty=specialty, token_id=token_id, expires_at=expires and iso(expires))
        return Invitation(rater_id, st.id, display_name, specialty, token_id, expires, token)

    def _assign_rater(self, conn: sqlite3.Connection, st: Study, rater_id: int) -> None:
        """Give a new rater of a preference study their randomised, balanced item sequence."""
        items = self.item_specs(st.id)
        if not items:
            raise StudyError(f"study {st.name!r} has no items to rate")
        params = st.params if isinstance(st.params, DesignParams) else DesignParams()
        ids = dict(conn.execute("SELECT item_key, id FROM items WHERE study_id = ?", (st.id,)).fetchall())
        self.db.table("assignments").insert_all(
            (
                {"rater_id": rater_id, "study_id": st.id, "item_id": ids[p.item_key], "position": p.position,
                 "auto_side": p.auto_side}
                for p in assign(items, params, rater_id)
            ),
            batch_size=500,
        )

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
            "SELECT r.*, (SELECT COUNT(*) FROM votes v WHERE v.rater_id = r.id) "
            "+ (SELECT COUNT(*) FROM contouring_readings c WHERE c.rater_id = r.id AND c.submitted_at IS NOT NULL) "
            "AS done, (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id) "
            "+ (SELECT COUNT(*) FROM contouring_readings c WHERE c.rater_id = r.id) AS total "
            "FROM raters r WHERE r.study_id = ? ORDER BY r.id",
            (self.study(study).id,),
        )
        return [
            RaterInfo(r["id"], r["study_id"], r["display_name"], r["specialty"], r["external_id"], r["token_id"],
                      bool(r["revoked"]), r["expires_at"], r["created_at"], r["done"], r["total"])
            for r in rows
        ]

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

    def _check_admin(self, conn: sqlite3.Connection, admin: AdminSession) -> None:
        """Re-check an admin session (inside the caller's transaction): unexpired, admin still exists."""
        if not isinstance(admin, AdminSession):
            raise AccessDenied("an admin review must be recorded through a signed-in admin session")
        now = self.now()
        if not admin.valid(now) or admin.logged_in_at > now:
            raise AccessDenied("the admin session has expired: sign in again")
        if conn.execute("SELECT 1 FROM admins WHERE username = ?", (admin.username,)).fetchone() is None:
            raise AccessDenied(f"{admin.username!r} is not an admin of this database")
