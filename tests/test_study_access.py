"""Access control: tokens, sessions, admin passwords and lock-out, audit, backup."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lungseg.study import (
    AccessDenied,
    AccountLocked,
    AuthError,
    CaseSpec,
    DesignParams,
    StudyError,
    StudyStore,
    TokenExpired,
    TokenRevoked,
    UnknownToken,
    admin_login,
    authenticate_rater,
    backup,
    export_votes,
    import_votes,
    set_admin_password,
)
from lungseg.study import access

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = StudyStore(tmp_path / "study.db", clock=clock)
    s.create_study("main", [CaseSpec(f"C{i}", tuple(range(30))) for i in range(3)],
                   DesignParams(slices_per_case=5), actor="admin")
    s.create_study("other", [CaseSpec("X1", (1, 2, 3))], DesignParams(slices_per_case=3), actor="admin")
    yield s
    s.close()


def _all_text(store: StudyStore) -> str:
    parts = []
    for (table,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in store.conn.execute(f'SELECT * FROM "{table}"'):
            parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_token_is_never_stored_in_clear(store, tmp_path):
    invitations = [store.invite_rater("main", f"Dr {i}", "Radiologist", actor="admin") for i in range(5)]
    for inv in invitations:
        assert len(inv.token) >= 43  # 32 random bytes
        assert inv.token not in repr(inv)
        session = authenticate_rater(store, inv.token)
        assert inv.token not in repr(session) and session.credential not in repr(session)
        item = store.next_item_for(session)
        store.cast_vote(session, item.item_id, "left")
    export_votes(store, "main", tmp_path / "votes.csv", actor="admin")
    backup(store, tmp_path / "backup.db", actor="admin")
    blobs = b""
    for path in [store.path, Path(f"{store.path}-wal"), tmp_path / "votes.csv", tmp_path / "backup.db"]:
        if path.exists():
            blobs += path.read_bytes()
    text = _all_text(store)
    for inv in invitations:
        assert inv.token.encode() not in blobs
        assert inv.token not in text
        assert access.hash_token(inv.token) in text  # what is stored is the hash


def test_unknown_revoked_expired_tokens(store, clock):
    with pytest.raises(UnknownToken, match="not valid"):
        authenticate_rater(store, "not-a-token")
    with pytest.raises(UnknownToken):
        authenticate_rater(store, "")
    revoked = store.invite_rater("main", "Dr R", "Student", actor="admin")
    store.revoke_rater(revoked.rater_id, actor="admin")
    with pytest.raises(TokenRevoked, match="revoked"):
        authenticate_rater(store, revoked.token)
    expiring = store.invite_rater("main", "Dr E", "Student", actor="admin", expires_in_days=2)
    authenticate_rater(store, expiring.token)
    clock.advance(days=2)
    with pytest.raises(TokenExpired, match="expired on 2025-03-03"):
        authenticate_rater(store, expiring.token)


def test_revocation_applies_to_an_open_session(store):
    inv = store.invite_rater("main", "Dr S", "Radiologist", actor="admin")
    session = authenticate_rater(store, inv.token)
    item = store.next_item_for(session)
    store.revoke_rater(token_id=inv.token_id, actor="admin")
    with pytest.raises(TokenRevoked):
        store.cast_vote(session, item.item_id, "left")
    with pytest.raises(TokenRevoked):
        store.next_item_for(session)
    new = store.reissue_token(inv.rater_id, actor="admin")
    with pytest.raises(UnknownToken):
        authenticate_rater(store, inv.token)
    session = authenticate_rater(store, new.token)
    assert store.cast_vote(session, item.item_id, "left").created


def test_cannot_vote_as_another_rater_or_in_another_study(store):
    me = authenticate_rater(store, store.invite_rater("main", "Dr Me", "Radiologist", actor="admin").token)
    you = authenticate_rater(store, store.invite_rater("main", "Dr You", "Radiologist", actor="admin").token)
    them = authenticate_rater(store, store.invite_rater("other", "Dr Them", "Student", actor="admin").token)
    my_item = store.next_item_for(me)
    their_item = store.next_item_for(them)

    with pytest.raises(AccessDenied, match="does not belong"):
        store.cast_vote(dataclasses.replace(me, rater_id=you.rater_id), my_item.item_id, "left")
    with pytest.raises(AccessDenied, match="does not belong"):
        store.cast_vote(dataclasses.replace(me, study_id=them.study_id), their_item.item_id, "left")
    with pytest.raises(AccessDenied, match="not one of the items assigned"):
        store.cast_vote(me, their_item.item_id, "left")
    with pytest.raises(AccessDenied, match="not one of the items assigned"):
        store.cast_vote(me, 10**6, "left")
    with pytest.raises(AccessDenied):
        store.cast_vote({"rater_id": me.rater_id}, my_item.item_id, "left")  # type: ignore[arg-type]
    with pytest.raises(UnknownToken):
        store.cast_vote(dataclasses.replace(me, credential="0" * 64), my_item.item_id, "left")
    assert store.vote_count() == 0
    store.cast_vote(me, my_item.item_id, "left")
    assert [r["rater_name"] for r in store.votes_table("main")] == ["Dr Me"]


def test_admin_password_is_scrypt_hashed(store):
    set_admin_password(store, "Alice", PASSWORD)
    row = store.conn.execute("SELECT * FROM admins").fetchone()
    assert row[0] == "alice" and len(row[1]) == 32 and len(row[2]) == 16
    assert PASSWORD.encode() not in b"".join(v for v in row if isinstance(v, bytes))
    session = admin_login(store, " ALICE ", PASSWORD)
    assert session.username == "alice" and session.valid(store.now())
    with pytest.raises(StudyError, match="at least"):
        set_admin_password(store, "bob", "short")


@pytest.fixture
def fast_scrypt(monkeypatch):
    monkeypatch.setattr(access, "SCRYPT_N", 2**10)  # keep the many-attempt tests quick


def test_twenty_wrong_passwords_then_locked(store, clock, fast_scrypt):
    set_admin_password(store, "alice", PASSWORD)
    pauses: list[float] = []
    errors = []
    for _ in range(20):
        clock.advance(seconds=1)
        with pytest.raises(AuthError) as info:
            admin_login(store, "alice", "wrong password!", sleep=pauses.append)
        errors.append(info.value)
    assert [type(e) for e in errors[:4]] == [AuthError] * 4
    assert all(isinstance(e, AccountLocked) for e in errors[4:])
    assert "locked" in str(errors[-1])
    assert pauses == [0.5, 1.0, 2.0, 4.0]  # slower after each wrong password, none while locked
    with pytest.raises(AccountLocked):
        admin_login(store, "alice", PASSWORD, sleep=pauses.append)
    clock.advance(minutes=14)
    with pytest.raises(AccountLocked):
        admin_login(store, "alice", PASSWORD, sleep=pauses.append)
    clock.advance(minutes=1, seconds=1)
    assert admin_login(store, "alice", PASSWORD, sleep=pauses.append).username == "alice"
    # success resets the count
    with pytest.raises(AuthError) as info:
        admin_login(store, "alice", "wrong again!!", sleep=pauses.append)
    assert not isinstance(info.value, AccountLocked)
    outcomes = [r[0] for r in store.conn.execute("SELECT outcome FROM login_attempts ORDER BY id")]
    assert outcomes[:5] == ["bad"] * 5 and outcomes[5:17] == ["locked"] * 12 and "ok" in outcomes


def test_unknown_admin_is_locked_the_same_way(store, clock, fast_scrypt):
    for _ in range(5):
        with pytest.raises(AuthError, match="wrong username or password|locked"):
            admin_login(store, "mallory", PASSWORD, sleep=lambda s: None)
    with pytest.raises(AccountLocked):
        admin_login(store, "mallory", PASSWORD, sleep=lambda s: None)
    with pytest.raises(AuthError, match="wrong username or password"):
        admin_login(store, "bad name with spaces", PASSWORD)


def test_every_admin_action_is_audited(store, tmp_path, clock):
    set_admin_password(store, "alice", PASSWORD)
    admin = admin_login(store, "alice", PASSWORD)
    store.create_study("audited", [CaseSpec("A", (1, 2))], actor=admin)
    inv = store.invite_rater("audited", "Dr A", "Student", actor=admin)
    store.revoke_rater(inv.rater_id, actor=admin)
    store.reissue_token(inv.rater_id, actor=admin)
    export_votes(store, "audited", tmp_path / "e.csv", pseudonymise=True, actor=admin)
    (tmp_path / "in.csv").write_text(
        "rater_id,rater_group,item_id,case_id,left_source,choice,comment,response_ms\nr,Student,i,c,manual,left,,\n"
    )
    import_votes(store, tmp_path / "in.csv", "imported", actor=admin)
    backup(store, tmp_path / "b.db", actor=admin)
    log = [r for r in store.audit_log() if r["actor"] == "alice"]
    actions = [r["action"] for r in reversed(log)]
    assert actions == [
        "admin.set_password", "study.create", "rater.invite", "rater.revoke", "rater.reissue",
        "votes.export", "study.create", "votes.import", "db.backup",
    ]
    assert all(r["at"].startswith("2025-03-01T09:00") for r in log)
    assert log[-1]["detail"]["created"] is True
    invite = next(r for r in log if r["action"] == "rater.invite")
    assert invite["detail"]["token_id"] == inv.token_id and inv.token not in str(invite)


def test_backup_holds_every_vote(store, tmp_path):
    sessions = [authenticate_rater(store, store.invite_rater("main", f"Dr {i}", "Student", actor="a").token)
                for i in range(3)]
    for s in sessions:
        while (item := store.next_item_for(s)) is not None:
            store.cast_vote(s, item.item_id, "right")
    out = backup(store, tmp_path / "copy.db", actor="admin")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not Path(f"{out}-wal").exists()
    with StudyStore(out) as copy:
        assert copy.integrity_check() == "ok"
        assert copy.vote_count() == store.vote_count() == 45
        assert copy.votes_table("main") == store.votes_table("main")
    with pytest.raises(StudyError, match="already exists"):
        backup(store, out, actor="admin")
    raw = sqlite3.connect(out)
    assert raw.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 45
    raw.close()
