"""The plumbing every part of the study store shares: the connection, transactions, the audit log."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sqlite_utils import Database

from lungseg.study.access import AdminSession, actor_name
from lungseg.study.design import StudyError
from lungseg.study.schema import _create_private, default_db_path, iso, migrate, schema_version, utc_now

Clock = Callable[[], datetime]
MAX_COMMENT = 4000


def clean_name(value: Any, what: str, limit: int = 200) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise StudyError(f"{what} must not be empty")
    if len(text) > limit:
        raise StudyError(f"{what} must be at most {limit} characters")
    return text


class StoreCore:
    """The database connection of a :class:`~lungseg.study.store.StudyStore` and what every
    part of it builds on: one lock, ``BEGIN IMMEDIATE`` transactions, queries, the audit log."""

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

    def __enter__(self):
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
