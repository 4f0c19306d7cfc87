"""Concurrent writers and crashes: 8 processes voting at once, and a voter killed with SIGKILL."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from lungseg.study import CaseSpec, DesignParams, StudyStore, authenticate_rater

# fork where available: the children then need not import numpy/sqlite-utils (pandas) again,
# which on 2 busy cores costs more than the voting itself.  No connection is open at fork time.
CONTEXT = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
N_PROCESSES = 8
VOTES_EACH = 500
KILL_ITEMS = 2000  # far more than the voter gets through before it is killed


def _make_study(path: Path, n_raters: int, n_items: int) -> list[str]:
    """A study with ``n_items`` items (10 per case) and ``n_raters`` invited raters; their tokens."""
    cases = [CaseSpec(f"C{c:03d}", tuple(range(100))) for c in range(n_items // 10)]
    with StudyStore(path) as store:
        store.create_study("load", cases, DesignParams(slices_per_case=10), actor="test")
        return [store.invite_rater("load", f"Dr {i}", "Radiologist", actor="test").token for i in range(n_raters)]


def _voter(path: str, token: str, n_votes: int, start, results) -> None:
    """Cast ``n_votes`` votes through a session (every 7th twice); report how many were new."""
    store = StudyStore(path)
    session = authenticate_rater(store, token)
    start.wait()  # all processes vote at the same time
    created = 0
    for i in range(n_votes):
        item = store.next_item_for(session)
        vote = store.cast_vote(session, item.item_id, "left" if i % 3 else "right", response_ms=i)
        created += vote.created
        if i % 7 == 0:
            created += store.cast_vote(session, item.item_id, "right").created  # a double click
    store.close()
    results.put(created)


def test_eight_processes_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "load.db"
    tokens = _make_study(path, N_PROCESSES, VOTES_EACH)
    ctx = CONTEXT
    start, results = ctx.Barrier(N_PROCESSES), ctx.Queue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_voter, args=(str(path), t, VOTES_EACH, start, results)) for t in tokens]
    for p in procs:
        p.start()
    created = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    elapsed = time.perf_counter() - t0
    assert [p.exitcode for p in procs] == [0] * N_PROCESSES
    assert created == [VOTES_EACH] * N_PROCESSES
    with StudyStore(path) as store:
        assert store.integrity_check() == "ok"
        rows = store.conn.execute(
            "SELECT rater_id, COUNT(*), COUNT(DISTINCT item_id) FROM votes GROUP BY rater_id"
        ).fetchall()
        assert [(n, d) for _, n, d in rows] == [(VOTES_EACH, VOTES_EACH)] * N_PROCESSES
        assert store.vote_count() == N_PROCESSES * VOTES_EACH
    assert elapsed < 60


def _killable_voter(path: str, token: str, log: str, hold_open_after: int | None) -> None:
    """Vote, appending each committed item id to ``log``; optionally stop inside a transaction."""
    store = StudyStore(path)
    session = authenticate_rater(store, token)
    with open(log, "a", buffering=1) as out:
        for i in range(10**6):
            item = store.next_item_for(session)
            if item is None:
                return
            if hold_open_after is not None and i == hold_open_after:
                store.conn.execute("BEGIN IMMEDIATE")
                store.conn.execute(
                    "INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, cast_at) "
                    "VALUES (?, ?, ?, 'left', 'left', 'automatic', 'uncommitted')",
                    (session.study_id, session.rater_id, item.item_id),
                )
                out.write("OPEN\n")
                time.sleep(600)
            store.cast_vote(session, item.item_id, "left")
            out.write(f"{item.item_id}\n")


def _wait_for_lines(log: Path, n: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= n:
            return
        assert proc.is_alive(), "the voter ended before it could be killed"
        time.sleep(0.005)
    raise AssertionError("the voter did not get going")


@pytest.mark.parametrize("mode", ["while voting", "inside a transaction"])
def test_sigkill_keeps_every_committed_vote(tmp_path, mode):
    path = tmp_path / "kill.db"
    (token,) = _make_study(path, 1, KILL_ITEMS)
    log = tmp_path / "committed.log"
    ctx = CONTEXT
    hold = 120 if mode == "inside a transaction" else None
    proc = ctx.Process(target=_killable_voter, args=(str(path), token, str(log), hold))
    proc.start()
    _wait_for_lines(log, 121 if hold else 100, proc)
    if hold:
        while not log.read_text().endswith("OPEN\n"):
            time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL

    reported = [int(x) for x in log.read_text().split() if x != "OPEN"]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in raw.execute("SELECT item_id FROM votes")}
    uncommitted = raw.execute("SELECT COUNT(*) FROM votes WHERE cast_at = 'uncommitted'").fetchone()[0]
    raw.close()
    assert set(reported) <= stored  # nothing the voter saw committed is lost
    if hold:
        assert len(stored) == len(reported) == hold and uncommitted == 0
    else:
        # at most the one vote committed between its COMMIT and the log line
        assert len(stored) - len(reported) in (0, 1)
        assert len(stored) < KILL_ITEMS
    with StudyStore(path) as store:  # and the database goes on working
        session = authenticate_rater(store, token)
        item = store.next_item_for(session)
        assert store.cast_vote(session, item.item_id, "left").created
        assert store.vote_count() == len(stored) + 1


def test_one_store_shared_by_threads(tmp_path):
    """The Streamlit pattern: one cached store, many script threads."""
    import threading

    path = tmp_path / "threads.db"
    tokens = _make_study(path, 4, 50)
    store = StudyStore(path)
    errors: list[BaseException] = []

    def vote(token: str) -> None:
        try:
            session = authenticate_rater(store, token)
            while (item := store.next_item_for(session)) is not None:
                store.cast_vote(session, item.item_id, "left")
                store.cast_vote(session, item.item_id, "right")  # a double click from another rerun
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=vote, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.vote_count() == 4 * 50
    assert {r["choice"] for r in store.votes_table("load")} == {"left"}
    store.close()
