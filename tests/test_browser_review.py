"""Review in the viewer, in a real browser: two users at once on different cases and ROIs never see each
other's choices; department mode: nothing without sign-in.  (Accepting, editing and exporting a case from
the viewer: tests/test_browser_edit.py.)
"""

import re

import pytest

from browser_harness import app_env, app_server, launch_chromium

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def choose(page, widget, option: str):
    """Pick ``option`` in a Streamlit selectbox/multiselect by typing it (robust to where the menu opens)."""
    widget.locator("input").click()
    page.keyboard.type(option)
    expect(page.get_by_role("option", name=option, exact=True)).to_be_visible()
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")  # a multiselect keeps its menu open, and the menu hides the page from role queries
    settle(page)


def settle(page):
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    env = app_env(tmp_path_factory.mktemp("review-app"), data_dir)
    with app_server(env=env) as (url, proc):
        yield url, env


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def new_page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    return ctx, pg


def open_from_data_folder(page, name: str, label: str):
    page.get_by_role("tab", name="Data folder").click()
    settle(page)
    choose(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Case").first, name)
    page.get_by_role("button", name="Open selected case").click()
    expect(page.get_by_text(f"Case: {label}")).to_be_visible(timeout=240_000)
    settle(page)


def pick_roi(page, roi: str):
    choose(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Manual contour from the structure set"), roi)


def rerun(page):
    """Make the page run its script again in the same session (a reload would start a new session)."""
    page.get_by_role("tab", name="Upload").click()
    settle(page)


def expect_manual(page, roi: str):
    """The case summary names ``roi`` as the manual contour (waits for the page's rerun)."""
    expect(page.locator('[data-testid="stTable"]').first).to_contain_text(re.compile(rf"Manual contour\s*{roi}\b"),
                                                                         timeout=120_000)


def test_two_users_do_not_see_each_others_choices(browser, server):
    url, _ = server
    ctx_a, a = new_page(browser)
    ctx_b, b = new_page(browser)
    a.goto(url)
    b.goto(url)
    expect(a.get_by_text("Case: demo-phantom")).to_be_visible(timeout=180_000)
    expect(b.get_by_text("Case: demo-phantom")).to_be_visible(timeout=180_000)
    open_from_data_folder(a, "LUNG1-003.zip", "LUNG1-003")
    open_from_data_folder(b, "LUNG1-001.zip", "LUNG1-001")
    pick_roi(a, "GTV-2")
    expect_manual(a, "GTV-2")
    rerun(b)
    expect(b.get_by_text("Case: LUNG1-001")).to_be_visible()
    expect_manual(b, "GTV-1")  # B's own choice, untouched by A's
    # B opens the very case A is looking at: it gets the default ROI, not A's choice
    open_from_data_folder(b, "LUNG1-003.zip", "LUNG1-003")
    expect_manual(b, "GTV-1")
    pick_roi(b, "GTV-3")
    expect_manual(b, "GTV-3")
    rerun(a)
    expect(a.get_by_text("Case: LUNG1-003")).to_be_visible()
    expect_manual(a, "GTV-2")
    ctx_a.close()
    ctx_b.close()


def test_department_mode_shows_nothing_without_sign_in(browser, tmp_path, data_dir):
    env = {"LUNGSEG_APP_CACHE": str(tmp_path / "cache"), "LUNGSEG_DB": str(tmp_path / "dept.db"),
           "LUNGSEG_DATA": str(data_dir), "LUNGSEG_DEPARTMENT": "1"}
    with app_server(env=env) as (url, _):
        ctx, page = new_page(browser)
        for path in ("", "/Viewer", "/Review", "/Export"):
            page.goto(url + path)
            expect(page.get_by_text("Admin sign-in")).to_be_visible(timeout=60_000)
            settle(page)
            assert page.locator('[data-testid="stImage"], img[src*="image"], canvas').count() == 0
            text = page.locator('[data-testid="stMain"], [data-testid="stAppViewContainer"]').first.inner_text()
            assert "LUNG1-001" not in text and "Data folder" not in text and "Case:" not in text
        ctx.close()
