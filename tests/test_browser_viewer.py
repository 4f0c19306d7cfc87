"""The viewer component in a real browser: a `streamlit run` server on a free localhost port and headless Chromium."""

import re

import numpy as np
import pytest

from browser_harness import app_server, axial_point, expand_picker, launch_chromium, pick_case, screenshot, viewer_frame

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
LONG = 240_000  # a cold LUNG1-001 open on a loaded 2-core machine


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


def slice_no(page) -> int:
    return int(viewer_frame(page).locator("#axial").get_attribute("data-slice"))


def wait_slice(page, n: int):
    expect(viewer_frame(page).locator("#axial")).to_have_attribute("data-slice", str(n), timeout=10_000)


def open_viewer_from_home(page, server):
    page.goto(server)
    expect(page.get_by_text("Case: demo-phantom")).to_be_visible(timeout=90_000)
    page.get_by_role("link", name=re.compile("Open the viewer")).click()
    expect(viewer_frame(page).locator("body[data-first-image='1']")).to_have_count(1, timeout=60_000)


def record_traffic(page) -> dict:
    """Every HTTP request and websocket message the page sends while ``log["on"]``."""
    log = {"on": False, "sent": []}
    page.on("request", lambda r: log["on"] and log["sent"].append("http " + r.url))
    page.on("websocket", lambda ws: ws.on("framesent", lambda fr: log["on"] and log["sent"].append("websocket message")))
    return log


def open_from_viewer(page, button: str, case: str | None = None):
    expand_picker(page, button)
    if case:
        pick_case(page, case)
    page.get_by_role("button", name=button).click()


def test_demo_stepping_window_level_and_no_traffic(page, server):
    traffic = record_traffic(page)
    open_viewer_from_home(page, server)
    body = page.locator("body").inner_text()
    assert "Patient's Name" not in body and "PatientName" not in body
    f = viewer_frame(page)
    expect(f.locator("body[data-layers*='GTV-auto']")).to_have_count(1, timeout=30_000)
    nz = int(f.locator("#axial").get_attribute("data-geometry").split(",")[4])
    f.locator("#axial").click()
    start = slice_no(page)
    for key, delta in (("ArrowUp", 1), ("PageUp", 10), ("ArrowDown", -1), ("PageDown", -10), ("ArrowRight", 1), ("ArrowLeft", -1)):
        page.keyboard.press(key)
        start += delta
        wait_slice(page, start)
    page.keyboard.press("Home")
    wait_slice(page, 1)
    page.keyboard.press("End")
    wait_slice(page, nz)
    x, y = axial_point(viewer_frame(page), 100, 100)
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    wait_slice(page, nz - 1)
    page.mouse.wheel(0, -120)
    wait_slice(page, nz)
    page.wait_for_timeout(1500)  # the settled slice goes to Python once; nothing after that
    traffic["on"] = True
    # presets, W/L drag (right button and ctrl+left), opacity, layer toggle, fill: all in the browser
    f.get_by_role("button", name="Mediastinum").click()
    expect(f.locator("#wl")).to_have_text("W 350  L 40")
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 60, y + 30, steps=4)
    page.mouse.up(button="right")
    wl = f.locator("#wl").inner_text()
    w, lv = (int(v) for v in re.findall(r"-?\d+", wl))
    assert w > 350 and lv > 40, wl
    page.keyboard.down("Control")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 40, y - 40, steps=4)
    page.mouse.up()
    page.keyboard.up("Control")
    assert f.locator("#wl").inner_text() != wl
    f.get_by_label("lung region opacity").fill("0.8")
    f.get_by_label("show lung region").uncheck()
    f.locator("#fill").check()
    page.wait_for_timeout(800)
    assert traffic["sent"] == [], traffic["sent"]
    page.mouse.click(x, y)  # navigation (the default tool): a click only moves the crosshair
    page.wait_for_timeout(800)
    assert traffic["sent"] == [], traffic["sent"]
    page.keyboard.press("c")  # the Segment tool: a click does reach Python, the recorder sees it
    expect(f.locator("body[data-tool='segment']")).to_have_count(1)
    page.mouse.click(x, y)
    expect(page.get_by_text(re.compile(r"Clicked point: .*voxel \(x 100, y 100,"))).to_be_visible(timeout=30_000)
    assert "websocket message" in traffic["sent"]
    traffic["on"] = False
    # the served case folders are not listed and a made-up token finds nothing
    files = server + "/component/lungseg_app.viewer.component.lungseg_viewer_files/"
    assert page.request.get(files).status == 404
    assert page.request.get(files + "0" * 32 + "/ct-000.gz").status == 404
    f.get_by_label("show lung region").check()
    f.get_by_role("button", name="Lung").click()
    f.locator("#fill").uncheck()
    f.locator("[data-lesion='1']").click()
    screenshot(page, "viewer-demo.png")


def test_lung1_001_click_hu_and_second_case_without_reload(page, server, load_case, data_dir):
    import SimpleITK as sitk

    ct, _ = load_case("LUNG1-001")
    vol = ct.volume
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))).astype(bool)
    assert vol.is_canonical and gtv.shape == vol.shape
    k = int(np.argmax(gtv.sum(axis=(1, 2))))
    jj, ii = np.argwhere(gtv[k]).mean(axis=0).round().astype(int)
    assert gtv[k, jj, ii]

    page.goto(server + "/Viewer")
    page.evaluate("() => { window.__sameDocument = 'yes'; }")
    open_from_viewer(page, "Open this case", "LUNG1-001.zip")
    f = viewer_frame(page)
    expect(f.locator("#label")).to_have_text("LUNG1-001", timeout=LONG)
    expect(f.locator("body[data-first-image='1']")).to_have_count(1, timeout=LONG)
    expect(f.locator("body[data-layers*='lung region']")).to_have_count(1, timeout=LONG)
    expect(f.locator("body[data-layers*='GTV-1']")).to_have_count(1, timeout=LONG)
    expect(f.locator("body[data-ct='ready']")).to_have_count(1, timeout=LONG)
    # to the slice where GTV-1 is largest, by keyboard
    f.locator("#axial").click(position={"x": 5, "y": 5})
    page.keyboard.press("Home")
    for _ in range(k // 10):
        page.keyboard.press("PageUp")
    for _ in range(k % 10):
        page.keyboard.press("ArrowUp")
    wait_slice(page, k + 1)
    # HU under the cursor equals the CT value of that voxel
    x, y = axial_point(viewer_frame(page), ii, jj)
    page.mouse.move(x, y)
    expect(f.locator("#hu")).to_have_text(f"HU {int(vol.array[k, jj, ii])} at (x {ii}, y {jj})")
    # with the Segment tool a click returns the voxel centre in LPS mm to Python, which shows it
    page.keyboard.press("c")
    page.mouse.click(x, y)
    cap = page.get_by_text(re.compile(rf"Clicked point: .*voxel \(x {ii}, y {jj}, slice {k + 1}\)"))
    expect(cap).to_be_visible(timeout=30_000)
    mm = [float(v) for v in re.search(r"\(([^)]*)\) mm", cap.inner_text()).group(1).split(",")]
    want = vol.index_to_physical([k, jj, ii])[0]
    assert np.all(np.abs(np.array(mm) - want) <= np.array(vol.spacing) / 2 + 0.05), (mm, want)
    expect(f.locator("body[data-layers*='GTV-auto']")).to_have_count(1, timeout=LONG)
    page.wait_for_timeout(500)
    screenshot(page, "viewer-lung1-001.png")
    # a second case replaces the first in the same page (no reload)
    open_from_viewer(page, "Open the demo case")
    expect(f.locator("#label")).to_have_text("demo-phantom", timeout=LONG)
    expect(f.locator("body[data-first-image='1']")).to_have_count(1, timeout=LONG)
    assert page.evaluate("() => window.__sameDocument") == "yes"
