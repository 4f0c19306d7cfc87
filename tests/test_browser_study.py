"""The study pages in a real browser: `streamlit run` on a free port, headless Chromium, a tmp database."""

import re
from pathlib import Path

import pytest

from lungseg.study import DesignParams, StudyStore, authenticate_rater, set_admin_password
from lungseg.case import AutomaticSource, CaseSource
from lungseg.study.cases import study_case
from browser_harness import app_server, launch_chromium

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
ADMIN, PASSWORD = "alice", "correct horse battery"
LEAK_WORDS = ("auto", "manual", "model", "predict")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("bstudy")
    store = StudyStore(d / "lungseg.db")
    set_admin_password(store, ADMIN, PASSWORD)
    spec, _ = study_case("demo-phantom", CaseSource.demo(AutomaticSource("stand-in")))
    store.create_study("browser study", [spec], DesignParams(slices_per_case=8), actor="test")
    rater = store.invite_rater("browser study", "Dr Browser", "Radiologist", actor="test")
    revoked = store.invite_rater("browser study", "Dr Gone", "Radiologist", actor="test")
    store.revoke_rater(revoked.rater_id, actor="test")
    # some votes from a third rater so the report has numbers from the start
    other = store.invite_rater("browser study", "Dr Early", "Radiation oncologist", actor="test")
    s = authenticate_rater(store, other.token)
    for choice in ("left", "right", "left"):
        store.cast_vote(s, store.next_item_for(s).item_id, choice, response_ms=3000)
    total = store.progress(authenticate_rater(store, rater.token)).total
    store.close()
    return {"db": d / "lungseg.db", "token": rater.token, "revoked": revoked.token, "total": total, "dir": d}


@pytest.fixture(scope="module")
def server(study):
    env = {"LUNGSEG_DB": str(study["db"]), "LUNGSEG_APP_CACHE": str(study["dir"] / "app-cache"),
           "LUNGSEG_DATA": str(study["dir"] / "no-data")}
    with app_server(env=env) as (url, proc):
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def at_item(page, n: int, total: int):
    expect(page.get_by_text(f"{n} of {total}", exact=True)).to_be_visible(timeout=60_000)
    # the buttons of this item are on screen (keys are by position only), not the previous item's
    expect(page.locator(f".st-key-l_{n} button")).to_be_visible(timeout=60_000)
    expect(page.locator(f".st-key-r_{n} button")).to_be_visible(timeout=60_000)


def leak_hits(page) -> list[str]:
    """Forbidden words in what the browser holds: markup (without framework CSS/JS and image bytes),
    every attribute (ids, classes, keys, alt, src names), and the URL."""
    html = page.content()
    html = re.sub(r"<head>.*?</head>", "", html, flags=re.S)  # framework assets (static js/css names)
    html = re.sub(r"<style[^>]*>.*?</style>", "", html, flags=re.S)
    html = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    html = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "IMG", html)
    # Streamlit's own input attributes (autocomplete="off", autocapitalize) are framework markup
    html = re.sub(r'\sauto(complete|capitalize|correct|focus)="[^"]*"', "", html)
    # ...and the CSS keyword ``auto`` as a whole layout value (height="auto", user-select: auto)
    html = re.sub(r'="auto"|:\s*auto\b(?![-\w])', "=", html)
    low = (html + " " + page.url).lower()
    return [f"{w}: ...{low[max(0, m.start() - 60):m.start() + 60]}..." for w in LEAK_WORDS
            for m in re.finditer(w, low)]


def test_rater_votes_by_click_and_keyboard_then_resumes_without_leaks(page, server, study):
    total = study["total"]
    page.goto(f"{server}/Rate?token={study['token']}")
    at_item(page, 1, total)
    expect(page.locator(".pnl img")).to_have_count(2)
    hits = leak_hits(page)
    assert hits == [], "\n".join(hits)
    # both panels: identical markup apart from the image data
    panels = page.locator(".pnl").evaluate_all("els => els.map(e => e.outerHTML)")
    assert len(panels) == 2
    strip = [re.sub(r'src="[^"]*"', 'src=""', p) for p in panels]
    assert strip[0] == strip[1]
    srcs = page.locator(".pnl img").evaluate_all("els => els.map(e => e.getAttribute('src'))")
    assert all(s.startswith("data:image/png;base64,") for s in srcs) and srcs[0] != srcs[1]
    ids = page.locator("[id], [class*='st-key-']").evaluate_all(
        "els => els.map(e => (e.id || '') + ' ' + (e.className && e.className.baseVal === undefined ? e.className : ''))")
    assert not [i for i in ids if any(w in i.lower() for w in LEAK_WORDS)]
    # 3 votes by click, 2 by keyboard
    page.get_by_role("button", name=re.compile("Left is better")).click()
    at_item(page, 2, total)
    page.get_by_role("button", name=re.compile("Right is better")).click()
    at_item(page, 3, total)
    page.get_by_role("button", name=re.compile("Left is better")).click()
    at_item(page, 4, total)
    hits = leak_hits(page)
    assert hits == [], "\n".join(hits)
    page.locator("h1").click()
    page.keyboard.press("ArrowRight")
    at_item(page, 5, total)
    page.locator("h1").click()
    page.keyboard.press("ArrowLeft")
    at_item(page, 6, total)
    page.reload()
    at_item(page, 6, total)
    store = StudyStore(study["db"])
    try:
        mine = [v for v in store.votes_table("browser study") if v["rater_name"] == "Dr Browser"]
    finally:
        store.close()
    assert [v["choice"] for v in mine] == ["left", "right", "left", "right", "left"]
    assert all(v["response_ms"] and v["response_ms"] > 0 for v in mine)


def test_bad_and_revoked_links(page, server, study):
    for token in ("not-a-real-token", study["revoked"]):
        page.goto(f"{server}/Rate?token={token}")
        expect(page.get_by_text(re.compile("This link cannot be used"))).to_be_visible(timeout=60_000)
        assert page.locator(".pnl img").count() == 0


def test_admin_pages_without_sign_in_show_only_the_prompt(page, server):
    for path in ("Study_setup", "Review", "Report", "Export"):
        page.goto(f"{server}/{path}")
        expect(page.get_by_text("Admin sign-in")).to_be_visible(timeout=60_000)
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert "browser study" not in body and "Dr " not in body and "demo-phantom" not in body


def nav(page, name: str):
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name, exact=True).click()


def test_admin_report_review_export(page, server, study):
    page.goto(f"{server}/Report")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Headline", exact=True)).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    nav(page, "Review")
    expect(page.get_by_role("button", name="Save decision")).to_be_visible(timeout=120_000)
    page.locator('[data-testid="stRadio"]').filter(has_text="Manual contour").get_by_text("accept", exact=True).click()
    page.get_by_role("button", name="Save decision").click()
    expect(page.get_by_text(re.compile("Latest decision by alice"))).to_be_visible(timeout=60_000)
    store = StudyStore(study["db"])
    try:
        verdict = store.latest_review("browser study", "demo-phantom")
    finally:
        store.close()
    assert (verdict["accepted_source"], verdict["rater_name"]) == ("manual", ADMIN)
    nav(page, "Export")
    page.get_by_role("button", name="Prepare NIfTI file").click()
    button = page.get_by_role("button", name=re.compile(r"Download demo-phantom-accepted\.nii\.gz"))
    expect(button).to_be_visible(timeout=60_000)
    with page.expect_download() as dl:
        button.click()
    d = dl.value
    assert d.suggested_filename == "demo-phantom-accepted.nii.gz"  # the one export path names the file
    data = Path(d.path()).read_bytes()
    assert data[:2] == b"\x1f\x8b" and len(data) > 100
    store = StudyStore(study["db"])
    try:
        log = store.audit_log(limit=10)
    finally:
        store.close()
    assert any(r["action"] == "contour.export" and r["actor"] == ADMIN and r["detail"]["format"] == "nifti"
               for r in log)
