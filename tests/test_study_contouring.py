"""The contouring study in the library: design, the reader's sessions, drafts and submissions, access control,
the scratch arm's empty start, the model's own time, and the report on readings made here."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from contouring_expected import expected_report
from lungseg.maskcodec import pack
from lungseg.study import AccessDenied, TokenRevoked, authenticate_rater
from lungseg.study.contouring import ContouringParams, first_arms, plan_readings
from lungseg.study.contouring_report import contouring_report
from lungseg.study.design import StudyError
from lungseg.study.readings import ContouringCase
from lungseg.study.store import StudyStore

SHAPE = (10, 20, 18)
SPACING = (2.0, 0.8, 0.7)


# ----------------------------------------------------------------------------- design


def test_the_crossover_is_balanced_per_reader_and_per_case_and_seeded():
    cases = [f"c{i}" for i in range(7)]
    params = ContouringParams(seed=5)
    arms = [first_arms(cases, params, k) for k in range(4)]
    for per_reader in arms:
        assert Counter(per_reader.values())["scratch"] in (3, 4)
    for c in cases:
        assert Counter(a[c] for a in arms)["scratch"] == 2
    assert arms == [first_arms(cases, params, k) for k in range(4)]
    others = [first_arms(cases, ContouringParams(seed=6), k) for k in range(4)]
    assert others != arms


@pytest.mark.parametrize("gap", [1, 2, 3])
def test_a_readers_readings_of_one_case_are_kept_sessions_apart(gap):
    cases = [f"c{i}" for i in range(6)]
    plan = plan_readings(cases, ContouringParams(repeats=2, min_gap_sessions=gap, seed=1), 0, "reader-1")
    assert [p.position for p in plan] == list(range(1, len(plan) + 1))
    assert len(plan) == 2 * len(cases) + 2
    for c in cases:
        mine = [p for p in plan if p.case_id == c]
        assert {(p.arm, p.reading) for p in mine} >= {("scratch", 1), ("assisted", 1)}
        sessions = sorted(p.session for p in mine)
        assert all(b - a >= gap for a, b in zip(sessions, sessions[1:]))
    assert sorted(p.session for p in plan) == [p.session for p in plan]  # sessions in order
    repeats = [p for p in plan if p.reading == 2]
    assert len(repeats) == 2 and {p.arm for p in repeats} == {"scratch"}


def test_with_no_session_gap_one_session_never_puts_two_readings_of_a_case_side_by_side():
    plan = plan_readings([f"c{i}" for i in range(4)], ContouringParams(min_gap_sessions=0), 0, 7)
    assert {p.session for p in plan} == {1}
    assert all(a.case_id != b.case_id for a, b in zip(plan, plan[1:]))


def test_bad_designs_are_refused_in_one_line():
    with pytest.raises(StudyError, match="repeat arm"):
        ContouringParams(repeat_arm="model")
    with pytest.raises(StudyError, match="cannot repeat 3 cases"):
        plan_readings(["a", "b"], ContouringParams(repeats=3), 0, 1)
    with pytest.raises(StudyError, match="minimum gap in days"):
        ContouringParams(min_gap_days=-1)


# ----------------------------------------------------------------------------- the store


class Clock:
    def __init__(self):
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


def _blob(centre, radius):
    z, y, x = np.indices(SHAPE)
    return ((z - centre[0]) * SPACING[0]) ** 2 + ((y - centre[1]) * SPACING[1]) ** 2 \
        + ((x - centre[2]) * SPACING[2]) ** 2 <= radius ** 2


AUTOMATIC = {"c1": _blob((5, 10, 9), 4.5), "c2": _blob((4, 9, 8), 5.5), "c3": _blob((5, 11, 10), 3.5)}


def _study(tmp_path, params=ContouringParams(seed=3), clock=None):
    store = StudyStore(tmp_path / "s.db", clock=clock or Clock())
    cases = [ContouringCase(c, SHAPE, SPACING, pack(m), model_seconds=2.5 + i, model_version="m1")
             for i, (c, m) in enumerate(AUTOMATIC.items())]
    store.create_contouring_study("ct", cases, params, actor="admin")
    readers = []
    for name in ("Dr A", "Dr B"):
        inv = store.invite_rater("ct", name, "Radiation oncologist", actor="admin")
        readers.append(authenticate_rater(store, inv.token))
    return store, readers


def test_a_reader_works_through_sessions_with_drafts_and_submissions(tmp_path):
    clock = Clock()
    store, (a, _) = _study(tmp_path, ContouringParams(seed=3, min_gap_days=1), clock)
    assert store.next_reading(a) is None  # no session begun yet
    progress = store.begin_session(a)
    assert (progress.session, progress.sessions, progress.session_total, progress.total) == (1, 2, 3, 6)
    view = store.next_reading(a)
    assert view.session == 1 and view.position == 1 and not view.has_draft
    start = store.reading_start_mask(a, view.reading_id)
    expected_start = AUTOMATIC[view.case_id] if view.arm == "assisted" else np.zeros(SHAPE, bool)
    assert np.array_equal(start, expected_start)
    draft = _blob((5, 10, 9), 3.0)
    store.save_draft(a, view.reading_id, draft, active_s=12.5)
    resumed = store.open_reading(a, view.reading_id)
    assert resumed.has_draft and resumed.draft_active_s == 12.5
    assert np.array_equal(store.reading_start_mask(a, view.reading_id), draft)  # the next visit starts here
    first = store.submit_reading(a, view.reading_id, draft, active_s=30.0)
    again = store.submit_reading(a, view.reading_id, np.zeros(SHAPE, bool), active_s=99.0)
    assert first.created and not again.created and again.active_s == 30.0 and again.mask_voxels == draft.sum()
    with pytest.raises(StudyError, match="already submitted"):
        store.save_draft(a, view.reading_id, draft, active_s=40)
    later = [r for r in store._reader_rows(store.conn, a) if r["session"] != 1][0]
    with pytest.raises(AccessDenied, match="not open"):
        store.submit_reading(a, later["id"], draft, active_s=3)
    assert store.begin_session(a).session == 1  # unfinished: the open session resumes
    while (v := store.next_reading(a)) is not None:
        store.submit_reading(a, v.reading_id, AUTOMATIC[v.case_id], active_s=20.0)
    assert store.contouring_progress(a).session_finished
    with pytest.raises(StudyError, match="next session can begin on 2026-12-02"):
        store.begin_session(a)  # readings of one case are kept a day apart
    clock.now += timedelta(days=1, minutes=1)
    assert store.begin_session(a).session == 2
    second = store.next_reading(a)
    assert second.session == 2 and second.case_id in AUTOMATIC
    assert store.contouring_progress(a).done == 3
    with pytest.raises(StudyError, match="grid"):
        store.submit_reading(a, second.reading_id, np.zeros((3, 3, 3), bool), active_s=1)


def test_the_scratch_arm_never_starts_from_or_shows_the_automatic_contour(tmp_path):
    store, readers = _study(tmp_path)
    seen = Counter()
    for reader in readers:
        store.begin_session(reader)
        while (v := store.next_reading(reader)) is not None:
            start = store.reading_start_mask(reader, v.reading_id)
            if v.arm == "scratch":
                assert not v.shows_automatic and not start.any()
            else:
                assert v.shows_automatic and np.array_equal(start, AUTOMATIC[v.case_id])
            seen[v.arm] += 1
            store.submit_reading(reader, v.reading_id, start | _blob((5, 10, 9), 2.0), active_s=5.0)
    assert seen["scratch"] == 3 and seen["assisted"] == 3  # both arms met in the first sessions


def test_no_reader_sees_or_changes_another_readers_contour_time_or_progress(tmp_path):
    store, (a, b) = _study(tmp_path)
    store.begin_session(a)
    store.begin_session(b)
    va = store.next_reading(a)
    store.save_draft(a, va.reading_id, _blob((5, 10, 9), 3.0), active_s=8.0)
    store.submit_reading(a, store.next_reading(a).reading_id, _blob((5, 10, 9), 3.0), active_s=8.0)
    for call in (lambda: store.open_reading(b, va.reading_id),
                 lambda: store.reading_start_mask(b, va.reading_id),
                 lambda: store.save_draft(b, va.reading_id, np.zeros(SHAPE, bool), active_s=1),
                 lambda: store.submit_reading(b, va.reading_id, np.zeros(SHAPE, bool), active_s=1)):
        with pytest.raises(AccessDenied, match="not one of your readings"):
            call()
    assert store.contouring_progress(b).done == 0 and store.contouring_progress(a).done == 1
    vb = store.next_reading(b)
    assert not vb.has_draft and vb.reading_id != va.reading_id
    ids_b = {r["id"] for r in store._reader_rows(store.conn, b)}
    assert va.reading_id not in ids_b
    forged = type(b)(a.rater_id, b.study_id, b.display_name, b.specialty, b.credential)
    with pytest.raises(AccessDenied):
        store.next_reading(forged)  # B's link cannot be edited into A's session
    store.revoke_rater(a.rater_id, actor="admin")
    with pytest.raises(TokenRevoked):
        store.next_reading(a)


def test_the_report_on_readings_made_here_equals_an_independent_computation(tmp_path):
    store, readers = _study(tmp_path, ContouringParams(seed=3, repeats=1, min_gap_sessions=1))
    rng = np.random.default_rng(1)
    times, masks, repeats = {}, {}, {}
    for reader in readers:
        while True:
            store.begin_session(reader)
            v = store.next_reading(reader)
            if v is None:
                break
            while v is not None:
                mask = _blob((5 + rng.integers(-1, 2), 10 + rng.integers(-1, 2), 9), rng.uniform(3, 5))
                seconds = float(rng.uniform(20, 300))
                store.submit_reading(reader, v.reading_id, mask, active_s=seconds)
                key = (reader.display_name, v.case_id, v.arm)
                if key in masks:
                    repeats[key] = mask
                else:
                    masks[key], times[key] = mask, seconds
                v = store.next_reading(reader)
    assert len(times) == 12 and len(repeats) == 2
    report = contouring_report(store, "ct")
    json.dumps(report)  # JSON-able
    pseudo = contouring_report(store, "ct", pseudonymise=True)
    assert pseudo["readers"] == ["R001", "R002"] and pseudo["agreement"]["intra_observer"]["summary"] == \
        report["agreement"]["intra_observer"]["summary"]
    assert {r["reader"] for r in pseudo["times"]["all_readings"]["per_reader"]} == {"R001", "R002"}
    ids = {r["reader"]: r["reader_name"] for r in store.readings_table("ct")}
    by_name = {name: rid for rid, name in ids.items()}
    exp = expected_report({(by_name[r], c, a): s for (r, c, a), s in times.items()}, {"c1": 2.5, "c2": 3.5, "c3": 4.5},
                          {(by_name[r], c, a): m for (r, c, a), m in masks.items()}, AUTOMATIC,
                          {c: SPACING for c in AUTOMATIC}, {(by_name[r], c, a): m for (r, c, a), m in repeats.items()})
    t = report["times"]["all_readings"]
    for arm in ("scratch", "assisted", "model"):
        for stat in ("n", "mean", "sd", "median", "iqr"):
            assert t["per_arm"][arm][stat] == pytest.approx(exp["per_arm"][arm][stat], rel=1e-9)
    assert t["wilcoxon_scratch_vs_assisted"]["pooled"]["p"] == pytest.approx(exp["wilcoxon_pooled"], rel=1e-9)
    for m in t["mann_whitney_vs_model"]:
        u, p, p_bonf = exp["mw"][(m["reader"], m["arm"])]
        assert (m["u"], m["p"], m["p_bonferroni"]) == pytest.approx((u, p, p_bonf), rel=1e-9)
    assert report["times"]["complete_case"]["cases"] == ["c1", "c2", "c3"]
    a = report["agreement"]
    for group, key in (("inter_observer", lambda p: (p["case_id"], p["arm"], p["reader_a"], p["reader_b"])),
                       ("intra_observer", lambda p: (p["reader"], p["case_id"], p["arm"]))):
        expected = exp["inter" if group == "inter_observer" else "intra"]
        got = {key(p): p for p in a[group]["pairs"]}
        assert set(got) == set(expected)
        for k, e in expected.items():
            for metric in ("dice", "hd95_mm", "surface_dice"):
                assert got[k][metric] == pytest.approx(e[metric], rel=1e-6)
    got = {(p["reader"], p["case_id"], p["arm"]): p for p in a["model_vs_reader"]["pairs"]}
    for k, e in exp["model_vs_reader"].items():
        assert got[k]["dice"] == pytest.approx(e["dice"], rel=1e-9)


def test_the_models_own_time_is_measured_when_the_study_is_set_up(tmp_path, capsys):
    """Item 4: ``study create --kind contouring`` segments each case and records the model's time (model arm)."""
    from lungseg.cli.study import main as cli_main

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"case_id": "demo", "ct": "demo", "automatic": {"kind": "model"}}]))
    db = tmp_path / "s.db"
    assert cli_main(["study", "create", "pilot", "--kind", "contouring", "--cases", str(cases), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "created contouring study 'pilot'" in out and "model " in out
    with StudyStore(db) as store:
        (row,) = store.model_times("pilot")
        assert row["case_id"] == "demo" and 0 < row["seconds"] < 600 and row["model_version"]
        (case,) = store.contouring_cases("pilot")
        assert case["automatic_digest"] and tuple(case["grid_shape"]) == (64, 256, 256)
        inv = store.invite_rater("pilot", "Dr A", "Radiologist", actor="admin")
        assert store.raters("pilot")[0].total == 2
        reader = authenticate_rater(store, inv.token)
        store.begin_session(reader)
        v = store.next_reading(reader)
        store.submit_reading(reader, v.reading_id, store.reading_start_mask(reader, v.reading_id), active_s=50.0)
        report = contouring_report(store, "pilot")
    assert report["times"]["all_readings"]["per_arm"]["model"]["mean"] == pytest.approx(row["seconds"])
