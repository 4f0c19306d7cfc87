"""The Report page on a contouring study (Streamlit AppTest): the same figures as the library's report."""

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from lungseg.maskcodec import pack
from lungseg.study import StudyStore, admin_login, authenticate_rater, set_admin_password
from lungseg.study.contouring import ContouringParams
from lungseg.study.contouring_report import contouring_report
from lungseg.study.readings import ContouringCase

PAGES = Path(__file__).resolve().parents[1] / "pages"


def test_the_report_page_shows_a_contouring_studys_times_agreement_and_figures(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    monkeypatch.setenv("LUNGSEG_DB", str(db))
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "app-cache"))
    store = StudyStore(db)
    set_admin_password(store, "alice", "correct horse battery")
    z, y, x = np.indices((8, 16, 16))
    auto = (z - 4) ** 2 + (y - 8) ** 2 + (x - 8) ** 2 <= 9
    store.create_contouring_study("cs", [ContouringCase("k1", auto.shape, (2.0, 1.0, 1.0), pack(auto), 3.0),
                                         ContouringCase("k2", auto.shape, (2.0, 1.0, 1.0), pack(auto), 4.0)],
                                  ContouringParams(min_gap_sessions=0), actor="t")
    for n, name in enumerate(("Dr A", "Dr B")):
        reader = authenticate_rater(store, store.invite_rater("cs", name, "Radiologist", actor="t").token)
        store.begin_session(reader)
        while (v := store.next_reading(reader)) is not None:
            store.submit_reading(reader, v.reading_id, np.roll(auto, n + (v.arm == "scratch"), axis=2),
                                 active_s=60.0 * (1 + n) * (2 if v.arm == "scratch" else 1) + v.position)
    expected = contouring_report(store, "cs")
    at = AppTest.from_file(str(PAGES / "4_Report.py"), default_timeout=120)
    at.session_state["admin_session"] = admin_login(store, "alice", "correct horse battery", sleep=lambda s: None)
    at.session_state["study_name"] = "cs"
    at.run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric][:3] == ["2", "2", "8"]
    saved = expected["times"]["all_readings"]["time_saved"]["summary"]
    assert any(f"median {saved['median']:.1f} s" in m.value for m in at.markdown)
    assert any(s.value.startswith("Agreement") for s in at.subheader)
    arms = at.dataframe[0].value
    assert list(arms["arm"]) == ["scratch", "assisted", "model"]
    assert arms["median"][2] == f"{expected['times']['all_readings']['per_arm']['model']['median']:.1f} s"
    store.close()


def test_the_setup_page_creates_a_contouring_study_and_its_links_open_the_contour_page(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    monkeypatch.setenv("LUNGSEG_DB", str(db))
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "app-cache"))
    monkeypatch.setenv("LUNGSEG_DATA", str(tmp_path / "no-data"))
    store = StudyStore(db)
    set_admin_password(store, "alice", "correct horse battery")
    at = AppTest.from_file(str(PAGES / "6_Study_setup.py"), default_timeout=180)
    at.session_state["admin_session"] = admin_login(store, "alice", "correct horse battery", sleep=lambda s: None)
    at.run()
    at.text_input(key="new_name").input("contour pilot")
    at.radio(key="new_automatic").set_value(next(o for o in at.radio(key="new_automatic").options
                                                 if o.startswith("Stand-in")))
    at.radio(key="new_kind").set_value(next(o for o in at.radio(key="new_kind").options if o.startswith("contouring")))
    at.number_input(key="new_gap_sessions").set_value(0)  # one case cannot be read twice in a session apart
    next(b for b in at.button if b.label == "Create study").click().run()
    assert "cannot keep a reader's readings of one case apart" in at.error[0].value and not store.studies()
    at.number_input(key="new_gap_sessions").set_value(1)
    next(b for b in at.button if b.label == "Create study").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    study = store.study("contour pilot")
    assert study.kind == "contouring" and study.params.min_gap_sessions == 1
    (case,) = store.contouring_cases("contour pilot")
    assert case["case_id"] == "demo-phantom" and case["automatic_digest"]
    assert store.model_times("contour pilot") == []  # the stand-in is not a model: no model arm
    at.text_input(key="inv_name").input("Dr Setup")
    next(b for b in at.button if b.label == "Invite").click().run()
    link = at.code[0].value
    assert "/Contour?token=" in link
    assert store.raters("contour pilot")[0].total == 2  # one case, both arms
    store.close()
