"""The study pages with Streamlit's AppTest: blinded rating, admin sign-in gate, review, report, export."""

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lungseg.study import DesignParams, StudyStore, set_admin_password
from lungseg.case import AutomaticSource, CaseSource
from lungseg.study.cases import study_case

REPO = Path(__file__).resolve().parents[1]
PAGES = REPO / "pages"
ADMIN, PASSWORD = "alice", "correct horse battery"
LEAK_WORDS = ("auto", "manual", "model", "predict")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """One study on the demo phantom (manual = phantom truth, automatic = the perturbed stand-in)."""
    path = tmp_path_factory.mktemp("study") / "lungseg.db"
    store = StudyStore(path)
    set_admin_password(store, ADMIN, PASSWORD)
    set_admin_password(store, "mallory", PASSWORD)  # locked out by a test
    spec, _ = study_case("demo-phantom", CaseSource.demo(AutomaticSource("stand-in")))
    store.create_study("demo study", [spec], DesignParams(slices_per_case=4, repeats=1, turing=True), actor="test")
    store.create_study("other study", [spec], DesignParams(slices_per_case=2), actor="test")
    store.close()
    return path


@pytest.fixture
def store(db, monkeypatch, tmp_path):
    monkeypatch.setenv("LUNGSEG_DB", str(db))
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "app-cache"))
    monkeypatch.setenv("LUNGSEG_DATA", str(tmp_path / "no-data"))
    from lungseg_app import auth

    monkeypatch.setattr(auth, "SLEEP", lambda s: None)  # the library's back-off pause
    s = StudyStore(db)
    yield s
    s.close()


def page(name: str, token: str | None = None, admin=None) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=120)
    if token is not None:
        at.query_params["token"] = token
    if admin is not None:
        at.session_state["admin_session"] = admin
        at.session_state["study_name"] = "demo study"
    return at.run()


def page_text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [i.value for i in at.info] + [s.value for s in at.success] + [b.label for b in at.button]
    return "\n".join(str(p) for p in parts)


def html_blocks(at) -> list[str]:
    """The bodies of st.html blocks on the page."""
    out = []
    for n in _walk(at):
        if getattr(n, "type", "") == "html":
            out.append(n.proto.body)
    return out


def _walk(at):
    stack = [at._tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(getattr(node, "children", {}).values())


def invite(store, study="demo study", name="Dr A", group="Radiologist"):
    return store.invite_rater(study, name, group, actor="test")


def test_rate_valid_token_shows_item_and_vote_advances(store):
    inv = invite(store)
    at = page("2_Rate.py", inv.token)
    assert not at.exception and not at.error
    total = store.progress(_session(store, inv)).total
    assert f"**1 of {total}**" in [m.value for m in at.markdown]
    html = html_blocks(at)
    assert len(html) == 1 and html[0].count("data:image/png;base64,") == 2
    # image data is base64 and may hold any letters by chance: compare the markup without it
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMG", html[0])
    low = (markup + page_text(at)).lower()
    for word in LEAK_WORDS:
        assert word not in low, word
    keys = [b.key for b in at.button] + [t.key for t in at.text_input]
    assert all(not any(w in k.lower() for w in LEAK_WORDS) for k in keys)
    at.button(key="l_1").click().run()
    assert not at.exception and not at.error
    assert f"**2 of {total}**" in [m.value for m in at.markdown]
    votes = store.votes_table("demo study")
    mine = [v for v in votes if v["rater_name"] == "Dr A"]
    assert len(mine) == 1 and mine[0]["choice"] == "left" and mine[0]["response_ms"] is not None
    # a fresh session (reload) resumes at the next item
    again = page("2_Rate.py", inv.token)
    assert f"**2 of {total}**" in [m.value for m in again.markdown]


def _session(store, inv):
    from lungseg.study import authenticate_rater

    return authenticate_rater(store, inv.token)


@pytest.mark.parametrize("how", ["unknown", "revoked"])
def test_rate_bad_token_shows_error_and_no_image(store, how):
    if how == "unknown":
        token = "x" * 43
    else:
        inv = invite(store, name="Dr Revoked")
        store.revoke_rater(inv.rater_id, actor="test")
        token = inv.token
    at = page("2_Rate.py", token)
    assert not at.exception
    assert len(at.error) == 1 and "cannot be used" in at.error[0].value
    assert "\n" not in at.error[0].value
    assert not html_blocks(at) and not at.button


def test_rate_crafted_item_of_another_rater_or_study_is_refused(store):
    mine = invite(store, name="Dr Mine")
    other = invite(store, study="other study", name="Dr Other")
    from lungseg.study import authenticate_rater

    other_item = store.next_item_for(authenticate_rater(store, other.token)).item_id
    before = store.vote_count()
    at = page("2_Rate.py", mine.token)
    at.session_state["rate_item"] = other_item  # crafted state has no say: the button carries its own pair
    at.button(key="r_1").click().run()
    assert not at.exception
    assert store.vote_count() == before + 1
    assert store.next_item_for(authenticate_rater(store, other.token)).item_id == other_item  # still unvoted


@pytest.mark.parametrize("name", ["3_Review.py", "4_Report.py", "5_Export.py", "6_Study_setup.py"])
def test_admin_pages_need_sign_in(store, name):
    at = page(name)
    assert not at.exception
    assert [s.value for s in at.subheader] == ["Admin sign-in"]
    text = page_text(at) + "".join(str(d.value) for d in at.dataframe)
    assert "demo study" not in text and "Dr " not in text
    assert not at.selectbox and not at.dataframe


def test_sign_in_wrong_passwords_lock(store):
    at = page("4_Report.py")
    at.text_input(key="signin_user").input("mallory")
    at.text_input(key="signin_pw").input("wrong password!")
    at.button[0].click().run()
    assert "Wrong username or password" in at.error[0].value
    for _ in range(19):
        at.text_input(key="signin_pw").input("wrong password!")
        at.button[0].click().run()
    assert "locked" in at.error[0].value.lower()
    # even the right password is refused while locked
    at.text_input(key="signin_pw").input(PASSWORD)
    at.button[0].click().run()
    assert "locked" in at.error[0].value.lower()
    assert "admin_session" not in at.session_state


def _admin(store):
    from lungseg.study import admin_login

    return admin_login(store, ADMIN, PASSWORD, sleep=lambda s: None)


def test_report_review_export_and_audit(store):
    admin = _admin(store)
    inv = invite(store, name="Dr Report", group="Radiation oncologist")
    at = page("2_Rate.py", inv.token)
    at.button(key="r_1").click().run()
    at.button(key="l_2").click().run()
    rep = page("4_Report.py", admin=admin)
    assert not rep.exception and not rep.error
    assert any("Headline" == s.value for s in rep.subheader)
    assert any("Fleiss" in m.value for m in rep.markdown)
    assert any("STAND-IN" in w.value for w in rep.warning)  # the demo study's automatic contour is the stand-in
    # review: accept the manual contour, recorded for this admin
    rv = page("3_Review.py", admin=admin)
    assert not rv.exception and not rv.error
    next(r for r in rv.radio if r.label == "Manual contour").set_value("accept")
    next(b for b in rv.button if b.label == "Save decision").click().run()
    assert not rv.exception and not rv.error, [e.value for e in rv.error]
    rows = store.reviews_table("demo study")  # newest first
    assert rows and rows[0]["accepted_source"] == "manual" and rows[0]["case_review_id"] is not None
    assert (rows[0]["reviewer_kind"], rows[0]["rater_name"]) == ("admin", "alice")
    assert any(r["action"] == "case_review.recorded" and r["actor"] == "alice" for r in store.audit_log(limit=5))
    # the admin reviews as an admin: no rater record, no items, progress counts real raters only
    raters = store.raters("demo study")
    assert not any(r.display_name.startswith("reviewer:") for r in raters)
    assert store.study_progress("demo study").total == sum(r.total for r in raters)
    # export: NIfTI of the accepted contour, audited
    ex = page("5_Export.py", admin=admin)
    assert not ex.exception and not ex.error
    ex.button(key="export_prepare").click().run()
    assert not ex.exception and not ex.error, [e.value for e in ex.error]
    f = ex.session_state["export_file"]
    assert f["name"].endswith(".nii.gz") and len(f["data"]) > 100
    log = store.audit_log(limit=5)
    assert any(r["action"] == "contour.export" and r["detail"]["case"] == "demo-phantom"
               and r["detail"]["source"] == "manual" and r["actor"] == "alice" for r in log)
    # the setup page lists the real raters only
    st_ = page("6_Study_setup.py", admin=admin)
    assert not st_.exception and not st_.error
    names = [str(v) for d in st_.dataframe for v in d.value.get("name", [])]
    assert any("STAND-IN" in w.value for w in st_.warning)
    # with the shipped model installed, a new study's automatic contour is the model's unless the admin picks otherwise
    from lungseg.tumour.segment import DEFAULT_MODEL

    if DEFAULT_MODEL.exists():
        assert st_.radio(key="new_automatic").value.startswith("Tumour model (lungseg_unet")
    kinds = [str(v) for d in st_.dataframe for v in d.value.get("automatic contour", [])]
    assert kinds and all(k.startswith("stand-in") for k in kinds)
    assert "Dr Report" in names and "reviewer:alice" not in names


def test_export_cli_db_case_form(store, tmp_path):
    """``export --db DB --case ID`` writes the accepted contour (the review test above accepted manual)."""
    import argparse

    import SimpleITK as sitk

    from lungseg.cli import export as export_cli
    from lungseg.imaging.phantom import demo_case

    if not store.reviews_table("demo study"):
        pytest.skip("needs the review recorded by test_report_review_export_and_audit")
    parser = argparse.ArgumentParser()
    export_cli.register(parser.add_subparsers())
    out = tmp_path / "gtv.nii.gz"
    args = parser.parse_args(["export", "--db", str(store.path), "--case", "demo-phantom", "--study", "demo study",
                              "--format", "nifti", "--out", str(out)])
    assert args.func(args) == 0
    _, truth = demo_case()
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    assert written.sum() == truth.sum()


def test_export_cli_exports_only_the_accepted_lesions(store, tmp_path):
    """A lesion-by-lesion review of a study case (the viewer's review component) is the case's verdict:
    ``export --db`` writes only the accepted lesion, and the report counts it."""
    import argparse

    import numpy as np
    import SimpleITK as sitk

    from lungseg.cli import export as export_cli
    from lungseg.study import ContourDecision
    from lungseg.study.cases import open_study_case

    admin = _admin(store)
    meta = next(r["metadata"] for r in store.cases("demo study") if r["case_id"] == "demo-phantom")
    case = open_study_case("demo-phantom", meta)
    assert case.automatic.lesions  # the stand-in has at least one lesion
    review = store.record_case_review(
        case.key, case.label, admin, [ContourDecision("automatic", True, lesions=(1,)), ContourDecision("manual", False)],
        comment="lesion 1 only", source=case.source, study="demo study", case_id="demo-phantom")
    latest = store.latest_review("demo study", "demo-phantom")
    assert latest["accepted_source"] == "automatic" and latest["case_review_id"] == review.id
    parser = argparse.ArgumentParser()
    export_cli.register(parser.add_subparsers())
    out = tmp_path / "lesion1.nii.gz"
    args = parser.parse_args(["export", "--db", str(store.path), "--case", "demo-phantom", "--study", "demo study",
                              "--format", "nifti", "--out", str(out)])
    assert args.func(args) == 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    expected = case.automatic.lesion_mask((1,))
    assert written.sum() == expected.sum() > 0
    if len(case.automatic.lesions) > 1:
        assert written.sum() < case.automatic.mask.sum()
    # the demo is on its canonical grid, so the written voxels are the lesion's voxels
    assert np.array_equal(written, expected)
