"""Click-to-segment in the viewer, in a real browser: LUNG1-001 from the data folder, a click inside GTV-1 on
its largest slice (with the Segment tool) shows the clicked lesion's contour; Discard leaves no trace, "Add as a
new structure" stores it as GTVn (who, when, SEMIAUTOMATIC, origin click), listed in the viewer again after a
reload; a click in aerated lung says there is no lesion there."""

import re

import numpy as np
import pytest
import SimpleITK as sitk

from browser_harness import app_env, app_server, axial_point, expand_picker, launch_chromium, pick_case, viewer_frame

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
LONG = 240_000  # a cold LUNG1-001 open on a loaded 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    env = app_env(tmp_path_factory.mktemp("click-app"), data_dir)
    with app_server(env=env) as (url, _):
        yield url, env


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def open_lung1_001(page):
    expand_picker(page, "Open this case")
    pick_case(page, "LUNG1-001.zip")
    page.get_by_role("button", name="Open this case").click()
    f = viewer_frame(page)
    expect(f.locator("#label")).to_have_text("LUNG1-001", timeout=LONG)
    expect(f.locator("body[data-layers*='GTV-auto'][data-ct='ready']")).to_have_count(1, timeout=LONG)


def stored_versions(env) -> list:
    from lungseg.study import StudyStore

    with StudyStore(env["LUNGSEG_DB"]) as store:
        keys = {r[0] for r in store.conn.execute("SELECT case_key FROM structure_versions")}
        return [r for key in keys for r in store.structure_versions(key)]


def test_click_inside_gtv1_then_discard_then_add(page, server, data_dir):
    from lungseg.maskcodec import unpack

    url, env = server
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
    k = int(np.argmax(gtv.sum(axis=(1, 2))))
    jj, ii = np.argwhere(gtv[k]).mean(axis=0).round().astype(int)
    assert gtv[k, jj, ii]

    page.goto(url + "/Viewer")
    open_lung1_001(page)
    f = viewer_frame(page)
    f.locator("#axial").click(position={"x": 5, "y": 5})  # focus (navigation: a click segments nothing)
    page.keyboard.press("c")  # the Segment tool
    page.keyboard.press("Home")
    for key in ["PageUp"] * (k // 10) + ["ArrowUp"] * (k % 10):
        page.keyboard.press(key)
    expect(f.locator("#axial")).to_have_attribute("data-slice", str(k + 1), timeout=10_000)
    x, y = axial_point(viewer_frame(page), ii, jj)
    clicked_row = f.locator("[data-layer='clicked lesion']")

    # click → the clicked lesion's contour and its size; Discard removes it and stores nothing
    page.mouse.click(x, y)
    expect(f.locator("body[data-layers*='clicked lesion']")).to_have_count(1, timeout=30_000)
    summary = page.get_by_text(re.compile(r"Clicked lesion .*ml · longest axial diameter"))
    expect(summary).to_be_visible(timeout=30_000)
    ml = float(re.search(r"([0-9.]+) ml", summary.inner_text()).group(1))
    assert 100 < ml < 230, ml  # GTV-1 is 155.8 ml
    page.get_by_role("button", name="Discard").click()
    expect(clicked_row).to_have_count(0, timeout=30_000)
    expect(summary).to_have_count(0)
    assert stored_versions(env) == []

    # a click beside it → a new structure GTVn: stored with who, when and how (SEMIAUTOMATIC, by click)
    f.locator("#axial").scroll_into_view_if_needed()  # the buttons below may have scrolled the page
    x, y = axial_point(viewer_frame(page), ii + 2, jj)
    page.mouse.click(x, y)
    expect(clicked_row).to_have_count(1, timeout=30_000)
    page.get_by_role("button", name="Add as a new structure").click()
    expect(page.get_by_text(re.compile(r"Created GTVn \(GTVn, SEMIAUTOMATIC, from click\) by local user"))).to_be_visible(
        timeout=30_000)
    expect(f.locator("[data-layer='GTVn']")).to_have_count(1, timeout=30_000)
    expect(clicked_row).to_have_count(0)
    (row,) = stored_versions(env)
    assert (row["name"], row["kind"], row["provenance"], row["origin"], row["author"]) == \
        ("GTVn", "GTVn", "SEMIAUTOMATIC", "click", "local user")
    mask = unpack(row["mask"], gtv.shape)
    assert 2 * (mask & gtv).sum() / (mask.sum() + gtv.sum()) >= 0.6
    # reopened in a new session (a reload: the case comes back from the address), GTVn is listed, undecided
    page.reload()
    expect(f.locator("[data-layer='GTVn']")).to_have_count(1, timeout=LONG)
    expect(f.locator("[data-layer='GTVn'] [data-decision]")).to_have_count(0)
    # a click in aerated lung says there is no lesion there
    f.locator("body[data-ct='ready']").wait_for(state="attached", timeout=LONG)
    f.locator("#axial").click(position={"x": 5, "y": 5})
    page.keyboard.press("c")
    page.mouse.click(*axial_point(viewer_frame(page), 150, 250))
    expect(page.get_by_text(re.compile(r"No lesion here"))).to_be_visible(timeout=60_000)
