"""Study store, design and CSV import: schema, votes, migration, randomisation, file validation."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections import Counter
from pathlib import Path

import pytest

from lungseg.study import (
    AccessDenied,
    CaseMetadata,
    CaseSpec,
    DesignParams,
    SCHEMA_VERSION,
    StudyError,
    StudyStore,
    authenticate_rater,
    import_votes,
)
from lungseg.cli.study import main as cli_main
from lungseg.study.design import assign, balanced_sides, pick_slices, plan_items, rng_for
from lungseg.study.store import default_db_path, migrate, schema_version


def _cases(n: int = 3, slices: int = 20) -> list[CaseSpec]:
    return [CaseSpec(f"C{c}", tuple(range(10, 10 + slices)), CaseMetadata(2.5, 12.0, "RUL")) for c in range(n)]


@pytest.fixture
def store(tmp_path):
    s = StudyStore(tmp_path / "study.db")
    yield s
    s.close()


@pytest.fixture
def study(store):
    return store.create_study("s1", _cases(), DesignParams(slices_per_case=4, repeats=2), actor="test")


def _session(store, study, name="Dr A", group="Radiologist"):
    return authenticate_rater(store, store.invite_rater(study.name, name, group, actor="test").token)


# ----------------------------------------------------------------------------- design


def test_pick_slices_spreads_evenly():
    assert pick_slices(range(10), 5) == [1, 3, 5, 7, 9]
    assert pick_slices([4, 8, 15], 5) == [4, 8, 15]
    picked = pick_slices(range(100, 200), 9)
    assert len(set(picked)) == 9 and picked == sorted(picked)
    gaps = [b - a for a, b in zip(picked, picked[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert 100 < picked[0] and picked[-1] < 199  # avoids the extreme slices


@pytest.mark.parametrize("n", list(range(1, 40)) + [101, 111])
def test_balanced_sides(n):
    sides = balanced_sides(n, rng_for("t", n))
    assert abs(sides.count("left") - n / 2) <= 0.5


def test_assignment_is_seeded_balanced_and_keeps_repeats_apart():
    items = plan_items(_cases(11, 30), DesignParams(slices_per_case=9, repeats=10, seed=3))
    assert len(items) == 99 + 10
    repeats = [i for i in items if i.repeat_of]
    assert len({i.repeat_of for i in repeats}) == 10
    params = DesignParams(repeats=10, seed=3)
    for rater in range(30):
        plan = assign(items, params, rater)
        assert plan == assign(items, params, rater)  # deterministic
        assert sorted(p.item_key for p in plan) == sorted(i.key for i in items)
        assert [p.position for p in plan] == list(range(1, len(items) + 1))
        assert abs(Counter(p.auto_side for p in plan)["left"] - len(items) / 2) <= 1
        where = {p.item_key: p.position for p in plan}
        assert all(abs(where[i.key] - where[i.repeat_of]) >= 2 for i in repeats)
    assert assign(items, params, 1) != assign(items, params, 2)
    assert assign(items, params, 1) != assign(items, DesignParams(repeats=10, seed=4), 1)


def test_design_rejects_impossible_requests():
    with pytest.raises(StudyError, match="repeat"):
        plan_items(_cases(1, 3), DesignParams(slices_per_case=3, repeats=4))
    two = plan_items(_cases(1, 1), DesignParams(slices_per_case=1, repeats=1))
    with pytest.raises(StudyError, match="positions"):
        assign(two, DesignParams(repeats=1), 0)
    with pytest.raises(StudyError):
        CaseSpec("X", ())
    with pytest.raises(StudyError):
        CaseSpec("X", (1, -2))


# ----------------------------------------------------------------------------- store basics


def test_file_is_owner_only_and_wal(tmp_path):
    path = tmp_path / "new" / "lungseg.db"
    s = StudyStore(path)
    s.create_study("x", _cases(1), actor="t")  # make sure -wal/-shm exist
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert p.exists(), p
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert s.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    s.close()
    os.chmod(path, 0o644)
    StudyStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_default_path_and_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LUNGSEG_DB", raising=False)
    assert default_db_path() == Path("data/lungseg.db")
    monkeypatch.setenv("LUNGSEG_DB", str(tmp_path / "env.db"))
    with StudyStore() as s:
        assert s.path == tmp_path / "env.db"
    assert (tmp_path / "env.db").exists()


def test_double_cast_counts_once(store, study):
    session = _session(store, study)
    item = store.next_item_for(session)
    first = store.cast_vote(session, item.item_id, "left", response_ms=1200, comment="sharp")
    second = store.cast_vote(session, item.item_id, "right", response_ms=5)
    assert first.created and not second.created
    assert second.id == first.id and second.side == "left" and second.response_ms == 1200
    assert store.vote_count(study) == 1
    assert store.progress(session).done == 1
    assert store.next_item_for(session).position == item.position + 1


def test_vote_records_everything(store, study):
    session = _session(store, study)
    item = store.next_item_for(session)
    vote = store.cast_vote(session, item.item_id, item.auto_side, response_ms=800, comment="  ok ")
    assert vote.source == "automatic" and vote.side == item.auto_side and vote.comment == "ok"
    row = store.votes_table(study)[0]
    assert row["chosen"] == "automatic" and row["choice"] == item.auto_side
    assert row["left_source"] == item.left_source and row["response_ms"] == 800
    assert row["rater_group"] == "Radiologist" and row["cast_at"].endswith("+00:00")
    with pytest.raises(StudyError, match="choice"):
        store.cast_vote(session, item.item_id, "middle")
    with pytest.raises(StudyError, match="response_ms"):
        store.cast_vote(session, item.item_id, "left", response_ms=-1)
    with pytest.raises(StudyError, match="Turing|computer"):
        store.cast_vote(session, item.item_id, "left", turing="left")


def test_schema_enforces_integrity(store, study):
    session = _session(store, study)
    item = store.next_item_for(session)
    with pytest.raises(sqlite3.IntegrityError):  # chosen source must follow from the side
        store.conn.execute(
            "INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, cast_at) "
            "VALUES (?, ?, ?, 'left', 'left', 'manual', 'now')",
            (study.id, session.rater_id, item.item_id),
        )
    other = store.create_study("s2", _cases(1), DesignParams(slices_per_case=2), actor="t")
    foreign_item = store.conn.execute("SELECT id FROM items WHERE study_id = ?", (other.id,)).fetchone()[0]
    with pytest.raises(sqlite3.IntegrityError):  # an item of another study
        store.conn.execute(
            "INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, cast_at) "
            "VALUES (?, ?, ?, 'left', 'left', 'automatic', 'now')",
            (study.id, session.rater_id, foreign_item),
        )


def test_sequence_follows_assignment_and_ends(store, study):
    session = _session(store, study)
    positions = []
    while (item := store.next_item_for(session)) is not None:
        positions.append(item.position)
        assert item.total == 14
        store.cast_vote(session, item.item_id, "left")
    assert positions == list(range(1, 15))
    assert store.progress(session).finished
    sides = Counter(r["left_source"] for r in store.votes_table(study))
    assert sides["automatic"] == 7


def test_items_freeze_once_raters_exist(store, study):
    _session(store, study)
    from lungseg.study.design import ItemSpec

    with pytest.raises(StudyError, match="already has raters"):
        store.add_items(study.name, [ItemSpec("C0/z099", "C0", 99)])


def test_review_upsert_and_scope(store, study):
    session = _session(store, study)
    store.record_review(session, "C0", "automatic", "fine")
    store.record_review(session, "C0", "none", "both miss the hilum")
    store.record_review(session, "C1", "manual")
    rows = store.reviews_table(study)  # newest first
    assert [(r["case_id"], r["accepted_source"], r["reason"], r["reviewer_kind"]) for r in rows] == [
        ("C1", "manual", "", "rater"),
        ("C0", "none", "both miss the hilum", "rater"),
    ]
    with pytest.raises(StudyError):
        store.record_review(session, "C0", "both")
    other = store.create_study("s2", [CaseSpec("Z", (1, 2))], actor="t")
    assert other.id != study.id
    with pytest.raises(AccessDenied):
        store.record_review(session, "Z", "manual")


def _admin(store, name="alice"):
    from lungseg.study import admin_login, set_admin_password

    set_admin_password(store, name, "correct horse battery")
    return admin_login(store, name, "correct horse battery", sleep=lambda s: None)


def test_admin_review_recorded_replaced_and_audited(store, study):
    admin = _admin(store)
    raters_before = store.raters(study)
    total_before = store.study_progress(study).total
    first = store.record_admin_review(admin, study.name, "C0", "automatic", "fine", specialty="Radiologist")
    assert first.admin == "alice" and first.rater_id is None and first.accepted_source == "automatic"
    again = store.record_admin_review(admin, study.id, "C0", "none", "both miss the hilum")
    rows = store.reviews_table(study)
    assert len(rows) == 1  # the same admin's earlier verdict on the case is replaced
    row = rows[0]
    assert (row["case_id"], row["accepted_source"], row["reason"]) == ("C0", "none", "both miss the hilum")
    assert (row["reviewer_kind"], row["rater_name"], row["rater_id"]) == ("admin", "alice", "admin:alice")
    assert row["reviewed_at"] == again.reviewed_at
    # no rater record, no assignments: the study's raters and progress totals are unchanged
    assert store.raters(study) == raters_before and store.study_progress(study).total == total_before
    log = [r for r in store.audit_log() if r["action"] == "review.recorded"]
    assert [(r["actor"], r["detail"]["case"], r["detail"]["accepted"], r["detail"]["replaced"]) for r in log] == [
        ("alice", "C0", "none", "automatic"),
        ("alice", "C0", "automatic", None),
    ]
    # a rater's and another admin's verdicts on the same case stand beside it; the newest leads
    store.record_review(_session(store, study), "C0", "manual")
    store.record_admin_review(_admin(store, "bob"), study, "C0", "automatic")
    rows = store.reviews_table(study)
    assert [(r["reviewer_kind"], r["rater_name"], r["accepted_source"]) for r in rows] == [
        ("admin", "bob", "automatic"), ("rater", "Dr A", "manual"), ("admin", "alice", "none")]
    assert store.latest_review(study, "C0")["rater_name"] == "bob"
    assert store.latest_review(study, "C2") is None
    with pytest.raises(StudyError, match="not in study"):
        store.record_admin_review(admin, study, "Z", "manual")
    with pytest.raises(StudyError):
        store.record_admin_review(admin, study, "C1", "both")


def test_admin_review_refuses_invalid_sessions(store, study):
    from datetime import timedelta

    from lungseg.study import AdminSession

    admin = _admin(store)
    now = store.now()
    expired = AdminSession("alice", now - timedelta(hours=9), now - timedelta(hours=1))
    forged = AdminSession("mallory", now, now + timedelta(hours=1))  # no such admin
    for bad in (expired, forged, "alice", _session(store, study)):
        with pytest.raises(AccessDenied):
            store.record_admin_review(bad, study, "C0", "manual")
    assert store.reviews_table(study) == []
    assert not [r for r in store.audit_log() if r["action"] == "review.recorded"]
    store.record_admin_review(admin, study, "C0", "manual")  # the real session still works


# ----------------------------------------------------------------------------- migrations


def test_migration_from_v2_keeps_reviews_and_votes_and_folds_hidden_reviewers(tmp_path):
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn, target=2) == 2
    conn.executescript(
        """
        INSERT INTO studies (id, name, instructions, design_json, created_at) VALUES (1, 'old', 'pick', NULL, 't');
        INSERT INTO cases (id, study_id, case_key) VALUES (1, 1, 'K1'), (2, 1, 'K2');
        INSERT INTO items (id, study_id, case_id, item_key, slice_index) VALUES (1, 1, 1, 'K1/z001', 1);
        INSERT INTO raters (id, study_id, display_name, specialty, external_id, created_at)
            VALUES (1, 1, 'Dr Old', 'Radiologist', 'r1', 't'),
                   (2, 1, 'reviewer:alice', 'Radiation oncologist', NULL, 't');
        INSERT INTO admins (username, pw_hash, salt, scrypt_n, scrypt_r, scrypt_p, updated_at)
            VALUES ('alice', x'00', x'00', 16384, 8, 1, 't');
        INSERT INTO assignments (rater_id, study_id, item_id, position, auto_side)
            VALUES (1, 1, 1, 1, 'right'), (2, 1, 1, 1, 'left');
        INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, response_ms, cast_at, turing)
            VALUES (1, 1, 1, 'right', 'right', 'automatic', 900, 't', 'left');
        INSERT INTO reviews (id, study_id, case_id, rater_id, accepted_source, reason, reviewed_at)
            VALUES (7, 1, 1, 1, 'automatic', 'ok', '2024-01-01T00:00:00.000000+00:00'),
                   (8, 1, 1, 2, 'manual', 'closer', '2024-01-02T00:00:00.000000+00:00'),
                   (9, 1, 2, 2, 'none', 'both off', '2024-01-03T00:00:00.000000+00:00');
        """
    )
    conn.close()
    with StudyStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        votes = s.votes_table("old")
        assert len(votes) == 1 and votes[0]["chosen"] == "automatic" and votes[0]["turing"] == "left"
        assert votes[0]["rater_id"] == "r1" and votes[0]["response_ms"] == 900
        rows = s.reviews_table("old")
        assert [(r["case_id"], r["reviewer_kind"], r["rater_id"], r["rater_name"], r["rater_group"],
                 r["accepted_source"], r["reason"]) for r in rows] == [
            ("K2", "admin", "admin:alice", "alice", "Radiation oncologist", "none", "both off"),
            ("K1", "admin", "admin:alice", "alice", "Radiation oncologist", "manual", "closer"),
            ("K1", "rater", "r1", "Dr Old", "Radiologist", "automatic", "ok"),
        ]
        assert [r[0] for r in s.conn.execute("SELECT id FROM reviews ORDER BY id")] == [7, 8, 9]
        # the hidden reviewer rater and its assignments are gone; the real rater is untouched
        assert [r.display_name for r in s.raters("old")] == ["Dr Old"]
        assert s.study_progress("old").total == 1
        assert [r["detail"] for r in s.audit_log() if r["action"] == "rater.reviewer_converted"] == [
            {"rater_id": 2, "admin": "alice"}]
        assert s.integrity_check() == "ok"
        assert not s.conn.execute("PRAGMA foreign_key_check").fetchall()
        # the rebuilt table keeps the upsert of rater reviews
        s.conn.execute("UPDATE raters SET token_hash = 'h' WHERE id = 1")
        from lungseg.study import RaterSession

        s.record_review(RaterSession(1, 1, "Dr Old", "Radiologist", "h"), "K1", "manual")
        assert len(s.reviews_table("old")) == 3 and s.latest_review("old", "K1")["rater_name"] == "Dr Old"


def test_failed_migration_leaves_v2_untouched(tmp_path, monkeypatch):
    from lungseg.study import schema as store_mod

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=2) == 2
    conn.executescript(
        """
        INSERT INTO studies (id, name, instructions, design_json, created_at) VALUES (1, 'old', '', NULL, 't');
        INSERT INTO cases (id, study_id, case_key) VALUES (1, 1, 'K1');
        INSERT INTO raters (id, study_id, display_name, specialty, created_at)
            VALUES (1, 1, 'Dr A', 'Radiologist', 't');
        INSERT INTO reviews (study_id, case_id, rater_id, accepted_source, reviewed_at) VALUES (1, 1, 1, 'manual', 't');
        """
    )
    broken = [*store_mod.MIGRATIONS[:2], [*store_mod.MIGRATIONS[2][:5], "SELECT no_such_function()"]]
    monkeypatch.setattr(store_mod, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, target=3)
    assert schema_version(conn) == 2
    cols = [r[1] for r in conn.execute("PRAGMA table_info(reviews)")]
    assert "admin_username" not in cols
    assert conn.execute("SELECT rater_id, accepted_source FROM reviews").fetchall() == [(1, "manual")]
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviews_v3'").fetchone()
    conn.close()



def test_migration_from_v1_keeps_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.executescript(
        """
        INSERT INTO studies (id, name, instructions, design_json, created_at) VALUES (1, 'old', 'pick', NULL, 't');
        INSERT INTO cases (id, study_id, case_key) VALUES (1, 1, 'K1');
        INSERT INTO items (id, study_id, case_id, item_key, slice_index) VALUES (1, 1, 1, 'K1/z001', 1);
        INSERT INTO raters (id, study_id, display_name, specialty, external_id, created_at)
            VALUES (1, 1, 'Dr Old', 'Radiologist', 'r1', 't');
        INSERT INTO assignments (rater_id, study_id, item_id, position, auto_side) VALUES (1, 1, 1, 1, 'right');
        INSERT INTO votes (study_id, rater_id, item_id, side, auto_side, source, response_ms, cast_at)
            VALUES (1, 1, 1, 'right', 'right', 'automatic', 900, 't');
        INSERT INTO audit (at, actor, action) VALUES ('t', 'old-admin', 'study.create');
        """
    )
    conn.close()
    with StudyStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        rows = s.votes_table("old")
        assert len(rows) == 1 and rows[0]["chosen"] == "automatic" and rows[0]["turing"] is None
        assert rows[0]["rater_id"] == "r1" and rows[0]["response_ms"] == 900
        assert s.audit_log()[-1]["actor"] == "old-admin"
        assert s.conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0
        assert not s.study("old").turing
    with StudyStore(path) as s:  # opening again is a no-op
        assert s.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    StudyStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StudyError, match="newer"):
        StudyStore(path)


def test_empty_database_gets_current_schema(tmp_path):
    conn = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
    assert schema_version(conn) == 0
    assert migrate(conn) == SCHEMA_VERSION
    conn.close()


# ----------------------------------------------------------------------------- CSV import

GOOD = """rater_id,rater_group,item_id,case_id,left_source,choice,comment,response_ms
r1,Radiologist,i1,c1,automatic,left,,1200
r1,Radiologist,i2,c1,manual,left,"too big, misses apex",900
r2,student,i1,c1,manual,right,,
r2,Student,i2,c1,automatic,right,,3000
"""


def _write(tmp_path, text, name="votes.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_good_file(store, tmp_path):
    result = import_votes(store, _write(tmp_path, "\ufeff" + GOOD), "imported")
    assert (result.rows, result.imported, result.raters, result.items) == (4, 4, 2, 2)
    rows = store.votes_table("imported")
    assert [r["chosen"] for r in rows] == ["automatic", "manual", "automatic", "manual"]
    assert rows[1]["comment"] == "too big, misses apex"
    assert rows[2]["rater_group"] == "Student" and rows[2]["response_ms"] is None
    again = import_votes(store, _write(tmp_path, GOOD), "imported")
    assert (again.imported, again.already_present) == (0, 4)
    assert store.vote_count() == 4


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("automatic,left,,1200", "automatic,up,,1200"), r"line 2: choice must be 'left'"),
        (lambda t: t.replace("r2,student,i1,c1,manual", "r2,student,i1,c1,human"), r"line 4: left_source"),
        (lambda t: t.replace(",response_ms", ",time"), r"line 1: missing column\(s\) response_ms"),
        (lambda t: t.replace(",3000", ",3.5s"), r"line 5: response_ms must be a whole number"),
        (lambda t: t.replace(",900", ",-3"), r"line 3: response_ms must not be negative"),
        (lambda t: t + "r1,Radiologist,i1,c1,automatic,left,,10\n", r"line 6: rater r1 votes on item i1 twice"),
        (lambda t: t + "r1,Student,i3,c1,automatic,left,,10\n", r"line 6: rater r1 is in group"),
        (lambda t: t + "r3,Student,i1,c9,automatic,left,,10\n", r"line 6: item i1 has case"),
        (lambda t: t + "r3,Student,,c1,automatic,left,,10\n", r"line 6: item_id is empty"),
        (lambda t: t + "r3,Student,i9,c1,automatic,left,,10,extra\n", r"line 6: 9 fields"),
        (lambda t: t.splitlines()[0] + "\n", r"no votes"),
        (lambda t: "", r"empty"),
    ],
)
def test_import_bad_file_is_refused_whole(store, tmp_path, edit, message):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(StudyError, match=message) as info:
        import_votes(store, path, "imported")
    assert "\n" not in str(info.value)
    assert store.vote_count() == 0 and store.studies() == []
    assert store.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0


def test_import_conflicting_with_database_rolls_back(store, tmp_path):
    import_votes(store, _write(tmp_path, GOOD), "imported")
    changed = GOOD.replace("r2,Student,i2,c1,automatic,right", "r2,Student,i2,c1,automatic,left")
    changed += "r3,Radiologist,i1,c1,automatic,left,,1\n"
    with pytest.raises(StudyError, match="different vote"):
        import_votes(store, _write(tmp_path, changed, "b.csv"), "imported")
    assert store.vote_count() == 4
    assert store.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 2


def test_import_missing_file(store, tmp_path):
    with pytest.raises(StudyError, match="no such file"):
        import_votes(store, tmp_path / "nope.csv", "x")


# ----------------------------------------------------------------------------- CLI


def test_cli_full_cycle(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    cases = tmp_path / "cases.json"
    cases.write_text('[{"case_id": "A", "ct": "demo", "automatic": {"kind": "stand-in"}, "metadata": {"location": "RUL"}},'
                     ' {"case_id": "B", "ct": "demo", "automatic": {"kind": "stand-in"}}]')
    assert cli_main(["study", "create", "demo", "--db", db, "--cases", str(cases),
                     "--slices-per-case", "3", "--repeats", "1", "--turing"]) == 0
    captured = capsys.readouterr()
    assert "created study 'demo' (id 1): 2 cases, 7 items" in captured.out
    assert "A: " in captured.out and "automatic: stand-in" in captured.out  # the stand-in is named as such
    assert "note: 2 case(s) use the stand-in automatic contour" in captured.err
    assert cli_main(["study", "invite", "--db", db, "--study", "demo", "--name", "Dr X", "--group", "Radiologist",
                     "--expires-days", "3"]) == 0
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1].split("?token=")[1]
    with StudyStore(db) as s:
        session = authenticate_rater(s, token)
        while (item := s.next_item_for(session)) is not None:
            s.cast_vote(session, item.item_id, "left", turing="right")
    export = tmp_path / "out.csv"
    assert cli_main(["study", "report", "--db", db, "--json", "--pseudonymise", "--csv", str(export)]) == 0
    out = capsys.readouterr().out
    assert '"n_votes": 7' in out and '"R001"' in out and "Dr X" not in export.read_text()
    assert cli_main(["study", "import", str(export), "--db", db, "--study", "copy"]) == 0
    assert "imported 7 votes" in capsys.readouterr().out
    assert cli_main(["study", "revoke", "--db", db, "--rater", "1"]) == 0
    assert cli_main(["db", "backup", str(tmp_path / "b.db"), "--db", db]) == 0
    capsys.readouterr()
    assert cli_main(["study", "report", "--db", db]) == 2  # two studies now: must choose
    err = capsys.readouterr().err
    assert err.startswith("error: several studies") and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["study", "invite", "--study", "none", "--name", "X", "--group", "Student"],
        ["study", "revoke", "--rater", "7"],
        ["study", "import", "missing.csv", "--study", "x"],
        ["db", "backup", "{tmp}"],
        ["study", "create", "--name", "x", "--cases", "missing.json"],
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv):
    db = str(tmp_path / "e.db")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--db", db]
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_cli_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["study", "create", "--name", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
