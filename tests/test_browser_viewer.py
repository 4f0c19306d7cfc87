"""The viewer in a real browser: a `streamlit run` server on a free localhost port and headless Chromium."""

import re
from pathlib import Path

import pytest

from lungseg_app.serve import app_server, launch_chromium

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"LUNGSEG_APP_CACHE": str(tmp_path_factory.mktemp("app-cache"))}
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
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def frame(page):
    return page.frame_locator("iframe").last


def slice_no(page) -> int:
    text = frame(page).locator("#label").inner_text()
    return int(re.match(r"Slice (\d+) / \d+", text).group(1))


def wait_slice(page, n: int):
    playwright_api.expect(frame(page).locator("#label")).to_contain_text(f"Slice {n} /", timeout=30_000)


def open_viewer(page):
    page.get_by_role("link", name=re.compile("Open the viewer")).click()
    playwright_api.expect(frame(page).locator("#label")).to_contain_text("Slice", timeout=60_000)


def test_demo_viewer(page, server):
    page.goto(server)
    playwright_api.expect(page.get_by_text("Case: demo-phantom")).to_be_visible(timeout=90_000)
    body = page.locator("body").inner_text()
    assert "Patient's Name" not in body and "PatientName" not in body
    open_viewer(page)
    f = frame(page)
    # the slider moves the slice without a Python rerun
    f.locator("#slider").fill("10")
    wait_slice(page, 10)
    # keyboard: ArrowUp +1, PageUp +10, ArrowDown -1
    f.locator("#axial").click()
    page.keyboard.press("ArrowUp")
    wait_slice(page, 11)
    page.keyboard.press("PageUp")
    wait_slice(page, 21)
    page.keyboard.press("ArrowDown")
    wait_slice(page, 20)
    # overlays: lung region and the manual contour (phantom truth) are on by default
    playwright_api.expect(f.locator('img[data-layer="lung region"]')).to_have_count(1)
    playwright_api.expect(f.locator('img[data-layer="manual contour"]')).to_have_count(1)
    page.locator('[data-testid="stSidebar"]').get_by_text("lung region", exact=True).click()
    playwright_api.expect(frame(page).locator('img[data-layer="lung region"]')).to_have_count(0)
    # the slice survives the rerun the toggle caused
    wait_slice(page, 20)
    page.locator('[data-testid="stSidebar"]').get_by_text("lung region", exact=True).click()
    playwright_api.expect(frame(page).locator('img[data-layer="lung region"]')).to_have_count(1)
    # jump to the lesion from the table
    btn = page.get_by_role("button", name=re.compile(r"Go to lesion 1"))
    target = int(re.search(r"slice (\d+)", btn.inner_text()).group(1))
    btn.click()
    wait_slice(page, target)
    lay = frame(page).locator('img[data-layer="manual contour"]')
    playwright_api.expect(lay).to_be_visible()
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "viewer-demo.png"), full_page=True)


def test_lung1_001_from_data_folder(page, server, data_dir):
    page.goto(server)
    playwright_api.expect(page.get_by_text("Case: demo-phantom")).to_be_visible(timeout=90_000)
    page.get_by_role("tab", name="Data folder").click()
    page.wait_for_timeout(400)  # the keyed tabs rerun the page on a switch
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
    sel = page.locator('[data-testid="stSelectbox"]').filter(has_text="Case").first
    sel.click()
    page.get_by_role("option", name="LUNG1-001.zip").click()
    page.get_by_role("button", name="Open selected case").click()
    playwright_api.expect(page.get_by_text("Case: LUNG1-001")).to_be_visible(timeout=150_000)
    # the page finishes its rerun after the title changes: wait for the summary, don't sample it
    playwright_api.expect(page.get_by_text(re.compile("SIEMENS")).first).to_be_visible(timeout=60_000)
    playwright_api.expect(page.get_by_text(re.compile("GTV-1")).first).to_be_visible(timeout=60_000)
    open_viewer(page)
    f = frame(page)
    playwright_api.expect(f.locator('img[data-layer="manual contour"]')).to_have_count(1)
    btn = page.get_by_role("button", name=re.compile(r"Go to lesion 1"))
    target = int(re.search(r"slice (\d+)", btn.inner_text()).group(1))
    btn.click()
    wait_slice(page, target)
    playwright_api.expect(frame(page).locator('img[data-layer="manual contour"]')).to_be_visible()
    # the jump button reran the page: let it settle and give the viewer focus before typing
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
    frame(page).locator("#axial").click()
    wait_slice(page, target)
    page.keyboard.press("ArrowDown")
    wait_slice(page, target - 1)
    page.keyboard.press("ArrowUp")
    wait_slice(page, target)
    page.screenshot(path=str(DOCS / "viewer-lung1-001.png"), full_page=True)
