"""Case reviews (the viewer's accept/reject of any case), their link to study verdicts, and the v3 → v4 migration."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from lungseg.case import AutomaticSource, CaseSource, ManualSource
from lungseg.study import (
    SCHEMA_VERSION,
    AccessDenied,
    AdminSession,
    CaseMetadata,
    CaseSpec,
    ContourDecision,
    DesignParams,
    StudyError,
    StudyStore,
    admin_login,
    authenticate_rater,
    set_admin_password,
    study_report,
)
from lungseg.study.store import MIGRATIONS, migrate, schema_version

KEY = "0123456789abcdef0123456789abcdef"
GTV1 = CaseSource("/data/LUNG1-001.zip", AutomaticSource("model"), ManualSource("rtstruct", None, "GTV-1"))
GTV2 = CaseSource("/data/LUNG1-001.zip", AutomaticSource("model"), ManualSource("rtstruct", None, "GTV-2"))


class Clock:
    """A clock that moves one second per reading (so "newest" never ties)."""

    def __init__(self):
        self.t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self):
        self.t += timedelta(seconds=1)
        return self.t


@pytest.fixture
def store(tmp_path):
    s = StudyStore(tmp_path / "r.db", clock=Clock())
    yield s
    s.close()


def _admin(store, name="alice"):
    set_admin_password(store, name, "correct horse battery")
    return admin_login(store, name, "correct horse battery", sleep=lambda s: None)


def _count(store) -> int:
    return store.conn.execute("SELECT COUNT(*) FROM case_reviews").fetchone()[0]


def test_round_trip_local_user(store):
    decisions = [ContourDecision("automatic", True, lesions=(3, 1), name="lungseg_unet-7"),
                 ContourDecision("manual", False, name="GTV-1")]
    made = store.record_case_review(KEY, "LUNG1-001", "local user", decisions, comment="  lesion 2 is a vessel ",
                                    source=GTV1)
    got = store.latest_case_review(KEY)
    assert got == made
    assert (got.case_key, got.case_label, got.reviewer, got.reviewer_kind) == (KEY, "LUNG1-001", "local user", "local")
    assert got.decision("automatic") == ContourDecision("automatic", True, (1, 3), "lungseg_unet-7")
    assert got.decision("manual").accepted is False and got.decision("manual").name == "GTV-1"
    assert got.comment == "lesion 2 is a vessel" and got.source == GTV1.as_dict()
    assert CaseSource.from_dict(got.source) == GTV1
    assert got.study is None and got.case_id is None
    assert datetime.fromisoformat(got.decided_at).utcoffset() == timedelta(0)
    # a review with one contour only, and no source
    only = store.record_case_review("other", "demo", "local user", [ContourDecision("automatic", True)])
    assert only.decision("manual") is None and only.source == {} and only.decision("automatic").whole


def test_newest_wins_and_source_filter(store):
    first = store.record_case_review(KEY, "L1", "local user", [ContourDecision("manual", True)], source=GTV1)
    other_roi = store.record_case_review(KEY, "L1", "local user", [ContourDecision("manual", False)], source=GTV2)
    again = store.record_case_review(KEY, "L1", "local user", [ContourDecision("automatic", True)], source=GTV1)
    assert store.latest_case_review(KEY) == again
    assert store.latest_case_review(KEY, source=GTV1) == again
    assert store.latest_case_review(KEY, source=GTV2.as_dict()) == other_roi
    assert store.latest_case_review(KEY, source=CaseSource.demo()) is None
    assert [r.id for r in store.case_reviews(KEY)] == [again.id, other_roi.id, first.id]
    assert store.latest_case_review("no such case") is None and store.case_reviews("no such case") == []


def test_every_review_is_audited(store):
    r = store.record_case_review(KEY, "L1", "Dr Local", [ContourDecision("automatic", True, lesions=(1,))],
                                 source=GTV1)
    log = [a for a in store.audit_log() if a["action"] == "case_review.recorded"]
    assert len(log) == 1 and log[0]["actor"] == "Dr Local"
    d = log[0]["detail"]
    assert (d["review_id"], d["case_key"], d["reviewer_kind"], d["study"]) == (r.id, KEY, "local", None)
    assert d["decisions"] == [{"contour": "automatic", "accepted": True, "lesions": [1], "name": None}]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decisions": ["automatic"]}, "decisions must be ContourDecision"),
        ({"decisions": ContourDecision("automatic", True)}, "must be a list"),
        ({"decisions": [{"contour": "auto", "accepted": True}]}, "contour 'auto': choose automatic or manual"),
        ({"decisions": [{"contour": "manual", "accepted": True, "lesions": [1]}]}, "automatic contour only"),
        ({"decisions": [{"contour": "automatic", "accepted": True, "lesions": [0]}]}, "whole numbers from 1"),
        ({"decisions": [{"contour": "automatic", "accepted": True, "lesions": ["1"]}]}, "whole numbers from 1"),
        ({"decisions": [{"contour": "automatic", "accepted": True, "lesions": [True]}]}, "whole numbers from 1"),
        ({"decisions": [{"contour": "automatic", "accepted": True, "lesions": []}]}, "at least one lesion"),
        ({"decisions": [{"contour": "automatic", "accepted": False, "lesions": [2]}]}, "accepted=True"),
        ({"decisions": [{"contour": "automatic", "accepted": "yes"}]}, "true or false"),
        ({"decisions": [{"contour": "automatic", "accepted": True}, {"contour": "automatic", "accepted": False}]},
         "names a contour twice"),
        ({"decisions": []}, "at least one contour"),
        ({"comment": "x" * 4001}, "at most 4000"),
        ({"case_key": "  "}, "case key must not be empty"),
        ({"reviewer": "   "}, "reviewer name must not be empty"),
        ({"reviewer": 7}, "reviewer must be a name"),
        ({"study": "s1"}, "needs both the study and the case id"),
        ({"source": object()}, "CaseSource"),
    ],
)
def test_bad_reviews_are_refused_in_one_line(store, kwargs, message):
    args = {"case_key": KEY, "case_label": "L1", "reviewer": "local user",
            "decisions": [ContourDecision("automatic", True)], **kwargs}
    with pytest.raises(StudyError, match=message) as info:
        store.record_case_review(**args)
    assert "\n" not in str(info.value)
    assert _count(store) == 0 and not [a for a in store.audit_log() if a["action"] == "case_review.recorded"]


def test_contour_decision_checks_itself():
    with pytest.raises(StudyError, match="choose automatic or manual"):
        ContourDecision("both", True)
    with pytest.raises(StudyError, match="automatic contour only"):
        ContourDecision("manual", True, lesions=(1,))
    assert ContourDecision("automatic", True, lesions=[2, 1, 2]).lesions == (1, 2)


# ----------------------------------------------------------------------------- study cases


@pytest.fixture
def study(store):
    cases = [CaseSpec(f"C{i}", tuple(range(10, 20)), CaseMetadata(2.5, 12.0)) for i in range(2)]
    return store.create_study("s1", cases, DesignParams(slices_per_case=3), actor="test")


def test_study_case_review_is_the_study_verdict(store, study):
    admin = _admin(store)
    partial = store.record_case_review(KEY, "C0", admin, [ContourDecision("automatic", True, lesions=(1,)),
                                                          ContourDecision("manual", False)],
                                       comment="only the main lesion", source=GTV1, study="s1", case_id="C0")
    assert (partial.study, partial.case_id, partial.reviewer, partial.reviewer_kind) == ("s1", "C0", "alice", "admin")
    latest = store.latest_review("s1", "C0")
    assert (latest["accepted_source"], latest["reviewer_kind"], latest["rater_name"], latest["reason"]) == (
        "automatic", "admin", "alice", "only the main lesion")
    assert latest["case_review_id"] == partial.id
    # both rejected → the verdict "none", replacing the admin's earlier one
    neither = store.record_case_review(KEY, "C0", admin, [ContourDecision("automatic", False),
                                                          ContourDecision("manual", False)],
                                       source=GTV1, study=study.id, case_id="C0")
    rows = [r for r in store.reviews_table("s1") if r["case_id"] == "C0"]
    assert len(rows) == 1 and rows[0]["accepted_source"] == "none" and rows[0]["case_review_id"] == neither.id
    manual = store.record_case_review(KEY, "C0", admin, [ContourDecision("manual", True, name="GTV-1")],
                                      study="s1", case_id="C0")
    assert store.latest_review("s1", "C0")["accepted_source"] == "manual"
    assert [r.id for r in store.case_reviews(KEY)] == [manual.id, neither.id, partial.id]  # history kept
    rater = authenticate_rater(store, store.invite_rater("s1", "Dr V", "Radiologist", actor="t").token)
    store.cast_vote(rater, store.next_item_for(rater).item_id, "left")
    report = study_report(store, "s1")
    assert report["reviews"]["accepted"] == {"automatic": 0, "manual": 1, "none": 0}
    # a verdict recorded the old way no longer points at a case review
    store.record_admin_review(admin, "s1", "C0", "automatic")
    assert store.latest_review("s1", "C0")["case_review_id"] is None
    audit = [a for a in store.audit_log() if a["action"] == "case_review.recorded"]
    assert [(a["actor"], a["detail"]["verdict"], a["detail"]["study"]) for a in audit] == [
        ("alice", "manual", "s1"), ("alice", "none", "s1"), ("alice", "automatic", "s1")]


def test_study_case_review_refusals(store, study):
    admin = _admin(store)
    both = [ContourDecision("automatic", True), ContourDecision("manual", True)]
    with pytest.raises(StudyError, match="not both"):
        store.record_case_review(KEY, "C0", admin, both, study="s1", case_id="C0")
    store.record_case_review(KEY, "C0", "local user", both)  # outside a study, both may be accepted
    one = [ContourDecision("manual", True)]
    with pytest.raises(AccessDenied, match="signed-in admin or rater"):
        store.record_case_review(KEY, "C0", "local user", one, study="s1", case_id="C0")
    with pytest.raises(StudyError, match="not in study"):
        store.record_case_review(KEY, "C9", admin, one, study="s1", case_id="C9")
    with pytest.raises(StudyError, match="no study"):
        store.record_case_review(KEY, "C0", admin, one, study="nope", case_id="C0")
    now = store.now()
    for bad in (AdminSession("alice", now - timedelta(hours=9), now - timedelta(hours=1)),
                AdminSession("mallory", now, now + timedelta(hours=1))):
        with pytest.raises(AccessDenied):
            store.record_case_review(KEY, "C0", bad, one, study="s1", case_id="C0")
    assert store.reviews_table("s1") == [] and _count(store) == 1


def test_rater_case_review_of_own_study_only(store, study):
    session = authenticate_rater(store, store.invite_rater("s1", "Dr R", "Radiologist", actor="t").token)
    r = store.record_case_review(KEY, "C1", session, [ContourDecision("manual", True)], study="s1", case_id="C1")
    assert (r.reviewer, r.reviewer_kind) == ("Dr R", "rater")
    row = store.latest_review("s1", "C1")
    assert (row["reviewer_kind"], row["rater_name"], row["accepted_source"]) == ("rater", "Dr R", "manual")
    store.create_study("s2", [CaseSpec("D0", (1, 2, 3))], DesignParams(slices_per_case=2), actor="t")
    with pytest.raises(AccessDenied, match="not part of your study"):
        store.record_case_review(KEY, "D0", session, [ContourDecision("manual", True)], study="s2", case_id="D0")
    store.revoke_rater(session.rater_id, actor="t")
    with pytest.raises(AccessDenied):
        store.record_case_review(KEY, "C1", session, [ContourDecision("manual", False)])


# ----------------------------------------------------------------------------- migration


def test_migration_from_v3_keeps_verdicts_and_adds_case_reviews(tmp_path):
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn, target=3) == 3
    conn.executescript(
        """
        INSERT INTO studies (id, name, instructions, design_json, created_at) VALUES (1, 'old', '', NULL, 't');
        INSERT INTO cases (id, study_id, case_key, metadata_json)
            VALUES (1, 1, 'K1', '{"source": "demo", "roi": "phantom truth", "automatic": "perturbed-manual"}');
        INSERT INTO admins (username, pw_hash, salt, scrypt_n, scrypt_r, scrypt_p, updated_at)
            VALUES ('alice', x'00', x'00', 16384, 8, 1, 't');
        INSERT INTO reviews (id, study_id, case_id, admin_username, specialty, accepted_source, reason, reviewed_at)
            VALUES (5, 1, 1, 'alice', 'Radiologist', 'manual', 'closer', '2025-01-01T00:00:00.000000+00:00');
        """
    )
    assert "case_review_id" not in [r[1] for r in conn.execute("PRAGMA table_info(reviews)")]
    conn.close()
    with StudyStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        row = s.latest_review("old", "K1")
        assert (row["accepted_source"], row["rater_name"], row["rater_group"], row["case_review_id"]) == (
            "manual", "alice", "Radiologist", None)
        assert s.integrity_check() == "ok" and not s.conn.execute("PRAGMA foreign_key_check").fetchall()
        admin = AdminSession("alice", s.now(), s.now() + timedelta(hours=1))
        r = s.record_case_review("k", "K1", admin, [ContourDecision("automatic", True)], study="old", case_id="K1")
        assert s.latest_review("old", "K1")["case_review_id"] == r.id
        assert [x[0] for x in s.conn.execute("SELECT id FROM reviews")] == [5]  # the same row, updated
    with StudyStore(path) as s:  # opening again is a no-op
        assert s.schema_version == SCHEMA_VERSION and len(s.case_reviews("k")) == 1
    conn = sqlite3.connect(path)
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()
