"""Who may do what: rater sign-in by personal token, admin passwords with throttling, backups.

Two roles.  A *rater* never types an id: an admin invites them and hands over a personal link
``?token=...``; :func:`authenticate_rater` turns the token into a :class:`RaterSession`, and every
vote goes through that session (``StudyStore.cast_vote(session, ...)``), which is re-checked
against the database on each call, so a revoked link stops working at once and a session cannot
be edited into another rater's.  Only a SHA-256 of each token is stored.

An *admin* signs in with a username and password (salted scrypt in the ``admins`` table).
Wrong passwords slow the next try down and, after :data:`MAX_FAILURES` in a row, lock the
username for :data:`LOCK_SECONDS`; attempts are recorded per username, known or not, so the
lock does not reveal which usernames exist.  Admin actions are written to the ``audit`` table.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from lungseg.study.design import StudyError

if TYPE_CHECKING:  # pragma: no cover
    from lungseg.study.store import StudyStore

TOKEN_BYTES = 32  # 256 bits of entropy in every rater token
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 4.0
ADMIN_SESSION_HOURS = 8
MIN_PASSWORD_LENGTH = 10
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_USERNAME = re.compile(r"^[a-z0-9_.@-]{1,64}$")


class AccessDenied(StudyError):
    """The signed-in user may not do this (another rater's vote, another study, ...)."""


class AuthError(AccessDenied):
    """Sign-in failed; the message says why in words a user can act on."""


class UnknownToken(AuthError):
    pass


class TokenRevoked(AuthError):
    pass


class TokenExpired(AuthError):
    pass


class AccountLocked(AuthError):
    """Too many wrong passwords in a row; ``retry_after_s`` says how long the lock lasts."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RaterSession:
    """A signed-in rater.  ``credential`` (the token's hash) is re-checked on every use."""

    rater_id: int
    study_id: int
    display_name: str
    specialty: str
    credential: str = field(repr=False)


@dataclass(frozen=True)
class AdminSession:
    """A signed-in admin; pass it (or its ``username``) as ``actor`` to audited store methods."""

    username: str
    logged_in_at: datetime
    expires_at: datetime

    def valid(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(timezone.utc)) < self.expires_at


@dataclass(frozen=True)
class Invitation:
    """What an admin gets back from inviting a rater; the token is shown this once only."""

    rater_id: int
    study_id: int
    display_name: str
    specialty: str
    token_id: str
    expires_at: datetime | None
    token: str = field(repr=False)

    def link(self, base_url: str = "") -> str:
        """The personal sign-in link, ``base_url?token=...`` (just the query when no base)."""
        return f"{base_url}?token={self.token}"


def actor_name(actor: "str | AdminSession") -> str:
    """The audit name of ``actor`` (an :class:`AdminSession` or a plain name such as ``cli:alice``)."""
    name = actor.username if isinstance(actor, AdminSession) else " ".join(str(actor).split())
    if not name:
        raise StudyError("an audited action needs an actor name")
    return name


def new_token() -> str:
    """A fresh rater token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The stored form of a token.  Tokens carry 256 random bits, so a plain (domain-separated)
    SHA-256 cannot be brute-forced and needs no salt or secret key."""
    return hashlib.sha256(b"lungseg-rater-token\x00" + token.encode("utf-8")).hexdigest()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def check_rater_row(row: Mapping[str, Any] | None, now: datetime) -> None:
    """Raise the right :class:`AuthError` for a rater row that was looked up by token hash."""
    if row is None:
        raise UnknownToken("this sign-in link is not valid: ask the study coordinator for your personal link")
    if row["revoked"]:
        raise TokenRevoked("this sign-in link has been revoked: ask the study coordinator for a new one")
    expires = _parse_time(row["expires_at"])
    if expires is not None and now >= expires:
        raise TokenExpired(
            f"this sign-in link expired on {expires:%Y-%m-%d %H:%M} UTC: ask the study coordinator for a new one"
        )


def authenticate_rater(store: "StudyStore", token: str) -> RaterSession:
    """Sign a rater in from the token in their link (``?token=...``).

    Raises :class:`UnknownToken`, :class:`TokenRevoked` or :class:`TokenExpired` with a message
    that can be shown to the rater as is.
    """
    token = (token or "").strip()
    if not token or len(token) > 256:
        raise UnknownToken("this sign-in link is not valid: ask the study coordinator for your personal link")
    credential = hash_token(token)
    row = store.rater_by_credential(credential)
    check_rater_row(row, store.now())
    assert row is not None
    return RaterSession(row["id"], row["study_id"], row["display_name"], row["specialty"], credential)


# ----------------------------------------------------------------------------- admin passwords


def _normal_username(username: str) -> str:
    name = (username or "").strip().lower()
    if not _USERNAME.match(name):
        raise StudyError("admin username must be 1-64 characters: letters, digits, _ . @ -")
    return name


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)


# Verified against when the username is unknown, so both cases cost one scrypt.
_DUMMY_SALT = b"\x00" * 16


def set_admin_password(
    store: "StudyStore", username: str, password: str, *, actor: "str | AdminSession | None" = None
) -> None:
    """Create admin ``username`` or change their password (salted scrypt; audited)."""
    name = _normal_username(username)
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise StudyError(f"admin password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise StudyError("admin password must be at most 1024 characters")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    now = store.now_iso()
    with store.transaction() as conn:
        existed = conn.execute("SELECT 1 FROM admins WHERE username = ?", (name,)).fetchone() is not None
        conn.execute(
            "INSERT INTO admins (username, pw_hash, salt, scrypt_n, scrypt_r, scrypt_p, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET pw_hash = excluded.pw_hash, "
            "salt = excluded.salt, scrypt_n = excluded.scrypt_n, scrypt_r = excluded.scrypt_r, "
            "scrypt_p = excluded.scrypt_p, updated_at = excluded.updated_at",
            (name, digest, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, now),
        )
        store.audit(actor_name(actor or name), "admin.set_password", username=name, created=not existed)


def _failure_state(conn: sqlite3.Connection, username: str) -> tuple[int, datetime | None]:
    """Wrong passwords since the last successful login, and when the latest one was."""
    row = conn.execute(
        "SELECT COUNT(*), MAX(at) FROM login_attempts WHERE username = ? AND outcome = 'bad' AND id > "
        "(SELECT COALESCE(MAX(id), 0) FROM login_attempts WHERE username = ? AND outcome = 'ok')",
        (username, username),
    ).fetchone()
    return int(row[0]), _parse_time(row[1])


def _is_locked(failures: int, last_bad: datetime | None, now: datetime) -> datetime | None:
    """The end of the lock when ``failures`` wrong passwords in a row lock the account now."""
    if failures >= MAX_FAILURES and last_bad is not None:
        until = last_bad + timedelta(seconds=LOCK_SECONDS)
        if now < until:
            return until
    return None


def _delay_seconds(failures: int) -> float:
    """The pause before checking a password after ``failures`` wrong ones in a row."""
    if failures == 0:
        return 0.0
    return min(BACKOFF_BASE_SECONDS * 2 ** (failures - 1), BACKOFF_MAX_SECONDS)


def _password_ok(store: "StudyStore", username: str, password: str) -> bool:
    with store.locked() as conn:
        row = conn.execute(
            "SELECT pw_hash, salt, scrypt_n, scrypt_r, scrypt_p FROM admins WHERE username = ?", (username,)
        ).fetchone()
    if row is None:
        _scrypt(password, _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)  # same cost as a known name
        return False
    return hmac.compare_digest(_scrypt(password, row[1], row[2], row[3], row[4]), row[0])


def admin_login(
    store: "StudyStore", username: str, password: str, *, sleep: Callable[[float], None] = time.sleep
) -> AdminSession:
    """Check an admin password and return an :class:`AdminSession`.

    Each wrong password in a row doubles a pause before the next check (0.5 s, 1 s, 2 s, 4 s;
    ``sleep`` is injectable for tests).  After :data:`MAX_FAILURES` wrong passwords in a row
    the username is locked for :data:`LOCK_SECONDS`: every try, even with the right password,
    raises :class:`AccountLocked` until then; after it, one more wrong password locks again.
    Otherwise a wrong username or password raises :class:`AuthError`.

    The pause and the (slow) scrypt run outside any transaction so voters are never held up;
    the verdict is then decided and recorded in one transaction against the attempts recorded
    so far, so parallel guesses cannot slip past the lock (a guess that lands while locked is
    refused and not even told whether it was right).
    """
    try:
        name = _normal_username(username)
    except StudyError:
        raise AuthError("wrong username or password") from None
    password = password if isinstance(password, str) else ""
    failures, last_bad = _failure_state_of(store, name)
    delay = _delay_seconds(failures)
    if delay and _is_locked(failures, last_bad, store.now()) is None:
        sleep(delay)
    ok = _password_ok(store, name, password)
    with store.transaction() as conn:
        now = store.now()
        failures, last_bad = _failure_state(conn, name)
        locked_until = _is_locked(failures, last_bad, now)
        if locked_until is not None:
            outcome = "locked"
        elif ok:
            outcome = "ok"
        else:
            outcome = "bad"
            locked_until = _is_locked(failures + 1, now, now)
        conn.execute("INSERT INTO login_attempts (username, at, outcome) VALUES (?, ?, ?)", (name, _iso(now), outcome))
    if locked_until is not None:
        raise AccountLocked(
            f"too many wrong passwords: sign-in as {name} is locked until {locked_until:%Y-%m-%d %H:%M:%S} UTC",
            (locked_until - now).total_seconds(),
        )
    if not ok:
        raise AuthError("wrong username or password")
    return AdminSession(name, now, now + timedelta(hours=ADMIN_SESSION_HOURS))


def _failure_state_of(store: "StudyStore", username: str) -> tuple[int, datetime | None]:
    with store.locked() as conn:
        return _failure_state(conn, username)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


# ----------------------------------------------------------------------------- backup


def backup(store: "StudyStore", out_path: str | os.PathLike, *, actor: "str | AdminSession") -> Path:
    """Copy the live database to ``out_path`` with SQLite's online backup API (audited).

    Safe while raters vote.  The copy is written next to ``out_path`` and renamed into place,
    created owner-only (0600), and checked with ``PRAGMA integrity_check``.  An existing
    ``out_path`` is not overwritten.
    """
    out = Path(out_path)
    if out.exists():
        raise StudyError(f"{out} already exists: choose a new backup file name")
    if not out.parent.is_dir():
        raise StudyError(f"{out.parent} is not a directory")
    part = out.with_name(out.name + ".part")
    fd = os.open(part, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    os.close(fd)
    try:
        dest = sqlite3.connect(str(part))
        try:
            with store.locked() as conn:
                conn.backup(dest)
            check = dest.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise StudyError(f"backup failed its integrity check: {check}")
            # A self-contained single file: the copy inherits WAL mode from page 1.
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    store.audit(actor_name(actor), "db.backup", path=str(out.resolve()))
    return out
