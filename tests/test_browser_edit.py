"""Correct a contour in the viewer and sign it off (issue 22), in a real browser, on LUNG1-001 from the data folder.

One scripted visit: GTVp is created from automatic lesion 1, a 10 mm blob is brushed onto it on three slices,
part of it erased, the erase undone, the slices between interpolated, GTVp accepted in the viewer's own list; a
click on the tumour with the Segment tool gives a lesion that becomes GTVn (type GTVn), accepted too.  SEG and
RTSTRUCT downloaded from the page hold GTVp and GTVn, SEMIAUTOMATIC, equal voxel for voxel to the bits the
viewer shows; a reload (F5) brings back the case, both structures and their decisions; the active time the
app recorded is within 20 % of the time the script spent interacting.
"""

import base64
import re
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from browser_harness import (app_env, app_server, axial_point, expand_picker, launch_chromium, pick_case, screenshot,
                             viewer_frame)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
LONG = 400_000  # a cold LUNG1-001 open (model on 2 shared cores)


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    env = app_env(tmp_path_factory.mktemp("edit-app"), data_dir)
    with app_server(env=env) as (url, _):
        yield url, env


def settle(page):
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)


def choose(page, widget, option: str):
    """Pick the option starting with ``option`` in a Streamlit selectbox by typing it."""
    widget.locator("input").click()
    page.keyboard.type(option)
    expect(page.get_by_role("option", name=re.compile("^" + re.escape(option))).first).to_be_visible()
    page.keyboard.press("Enter")
    settle(page)


def viewer_mask(frame, name: str, shape) -> np.ndarray:
    """The structure's bits as the viewer holds and paints them."""
    text = frame.locator("body").evaluate(f"() => window.__viewerMask({name!r})")
    bits = np.frombuffer(base64.b64decode(text), np.uint8)
    return np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)


def stroke(page, frame, i: float, j: float) -> None:
    """A short brush stroke at voxel (i, j) of the shown slice; waits until Python has stored it."""
    x, y = axial_point(frame, i, j)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 1, y)
    page.mouse.up()
    expect(frame.locator("body[data-outbox='0']")).to_have_count(1, timeout=30_000)


def to_slice(page, frame, k: int) -> None:
    frame.locator("#axial").focus()
    here = int(frame.locator("#axial").get_attribute("data-slice")) - 1
    for _ in range(abs(k - here)):
        page.keyboard.press("ArrowUp" if k > here else "ArrowDown")
    expect(frame.locator("#axial")).to_have_attribute("data-slice", str(k + 1))


def test_edit_accept_export_reload(server, data_dir, tmp_path):
    import highdicom as hd
    import pydicom

    from lungseg import structures
    from lungseg.case import CaseSource, ManualSource, ResultCache, open_case
    from lungseg.imaging.io import load_rtstruct
    from lungseg.study import StudyStore

    url, env = server
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.goto(url + "/Viewer")
        expand_picker(page, "Open this case")
        pick_case(page, "LUNG1-001.zip")
        page.get_by_role("button", name="Open this case").click()
        f = viewer_frame(page)
        expect(f.locator("body[data-layers*='GTV-auto'][data-ct='ready']")).to_have_count(1, timeout=LONG)
        settle(page)
        nx, ny, sx, sy, nz = (float(v) for v in f.locator("#axial").get_attribute("data-geometry").split(","))
        shape = (int(nz), int(ny), int(nx))

        started = time.monotonic()
        # a new structure GTVp from automatic lesion 1: offered for editing at once
        f.locator("#axial").click(position={"x": 5, "y": 5})  # navigation: only moves the crosshair
        page.get_by_text("New structure").click()
        page.get_by_label("Name", exact=True).fill("GTVp")
        choose(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Start from"), "automatic lesion 1")
        page.get_by_role("button", name="Create").click()
        expect(f.locator("body[data-versions*='GTVp:1']")).to_have_count(1, timeout=60_000)
        expect(f.locator("#editing")).to_have_text("editing GTVp", timeout=30_000)
        lesion = viewer_mask(f, "GTVp", shape)
        auto = viewer_mask(f, "GTV-auto", shape)
        assert lesion.sum() > 1000 and not (lesion & ~auto).any()  # lesion 1 of the automatic contour

        # a 10 mm blob (radius 5 mm) on the lesion's right edge on slices k-2, k, k+2
        k = int(np.argmax(lesion.sum(axis=(1, 2))))
        rows = np.flatnonzero(lesion[k].any(axis=1))
        j = int(rows[len(rows) // 2])
        i = int(np.flatnonzero(lesion[k, j])[-1]) + 2
        f.locator("[data-tool='brush']").click()
        expect(f.locator("body[data-tool='brush']")).to_have_count(1)
        for z in (k - 2, k, k + 2):
            to_slice(page, f, z)
            stroke(page, f, i, j)
        painted = viewer_mask(f, "GTVp", shape)
        # what a stroke drew (only around the brush) is what a full redraw of the slice draws
        pixels = "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 < 3)).join()"
        drawn = f.locator("#axialimg").evaluate(pixels)
        f.locator("#fill").check()
        f.locator("#fill").uncheck()
        page.wait_for_timeout(300)
        assert f.locator("#axialimg").evaluate(pixels) == drawn
        f.locator("#axial").focus()  # the keys go to the viewer again
        blob = painted & ~lesion
        for z in (k - 2, k, k + 2):
            assert 20 < blob[z].sum() < 90  # a disk of 5 mm (~80 voxels of 0.98 mm), most of it beyond the edge
        assert not blob[k - 1].any() and not blob[k + 1].any()
        # erase part of the blob on k+2 (key E), undo it (Ctrl+Z): the blob is back
        page.keyboard.press("e")
        expect(f.locator("body[data-tool='erase']")).to_have_count(1)
        stroke(page, f, i + 4, j)
        erased = viewer_mask(f, "GTVp", shape)
        assert erased[k + 2].sum() < painted[k + 2].sum()
        page.keyboard.press("Control+z")
        expect(f.locator("body[data-outbox='0']")).to_have_count(1, timeout=30_000)
        assert np.array_equal(viewer_mask(f, "GTVp", shape), painted)
        drawn = f.locator("#axialimg").evaluate(pixels)  # the undo redrew only its box: the same as a full redraw
        f.locator("#fill").check()
        f.locator("#fill").uncheck()
        page.wait_for_timeout(300)
        assert f.locator("#axialimg").evaluate(pixels) == drawn
        f.locator("#axial").focus()
        # interpolate (key I): the server fills k-1 and k+1, the page fetches the new version
        page.keyboard.press("i")
        expect(f.locator("body[data-versions*='GTVp:7']")).to_have_count(1, timeout=60_000)
        gtvp = viewer_mask(f, "GTVp", shape)
        assert (gtvp & ~painted)[k - 1].any() and (gtvp & ~painted)[k + 1].any()
        assert np.array_equal(gtvp[[k - 2, k, k + 2]], painted[[k - 2, k, k + 2]])
        f.get_by_role("button", name="accept GTVp").click()
        expect(f.locator("[data-layer='GTVp'] [data-decision='accepted']")).to_have_count(1, timeout=60_000)

        # Segment tool (key C): a click inside the tumour; it becomes GTVn
        gtv1 = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
        kc = int(np.argmax(gtv1.sum(axis=(1, 2))))
        jc, ic = np.argwhere(gtv1[kc]).mean(axis=0).round().astype(int)
        to_slice(page, f, kc)
        page.keyboard.press("c")
        page.mouse.click(*axial_point(f, ic, jc))
        expect(page.get_by_text("Clicked lesion")).to_be_visible(timeout=120_000)
        settle(page)
        page.get_by_label("Structure name").fill("GTVn")
        page.get_by_role("button", name="Add as a new structure").click()
        expect(f.locator("body[data-versions*='GTVn:1']")).to_have_count(1, timeout=60_000)
        f.get_by_role("button", name="accept GTVn").click()
        expect(f.locator("[data-layer='GTVn'] [data-decision='accepted']")).to_have_count(1, timeout=60_000)
        # the second view, linked: GTVp beside GTV-1 at the same slice, zoom, pan and window
        f.locator("#cmp").check()
        f.locator("#cmpA").select_option("GTVp")
        f.locator("#cmpB").select_option("GTV-1")
        expect(f.locator("#axial2")).to_be_visible()
        expect(f.locator("#cap2")).to_have_text("GTV-1")
        f.locator("#zoomin").click()
        page.wait_for_timeout(200)
        style = "(c) => c.style.transform"
        assert f.locator("#axialimg").evaluate(style) == f.locator("#axialimg2").evaluate(style) != ""
        screenshot(page, "viewer-edit.png")
        f.locator("#cmp").uncheck()
        interacting = time.monotonic() - started
        gtvn = viewer_mask(f, "GTVn", shape)
        settle(page)

        # export SEG and RTSTRUCT from the page
        files = {}
        for fmt in ("DICOM SEG", "RTSTRUCT"):
            choose(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Format"), fmt)
            page.get_by_role("button", name="Prepare export").click()
            button = page.locator('[data-testid="stDownloadButton"] button').filter(has_text=".dcm")
            expect(button).to_have_count(1, timeout=120_000)
            with page.expect_download(timeout=120_000) as info:
                button.click()
            files[fmt] = tmp_path / info.value.suggested_filename
            info.value.save_as(files[fmt])

        # reload: the case, both structures and their decisions come back
        page.reload()
        f = viewer_frame(page)
        expect(f.locator("body[data-versions*='GTVp:7'][data-versions*='GTVn:1']")).to_have_count(1, timeout=LONG)
        expect(f.locator("[data-layer='GTVp'] [data-decision='accepted']")).to_have_count(1)
        expect(f.locator("[data-layer='GTVn'] [data-decision='accepted']")).to_have_count(1)
        assert np.array_equal(viewer_mask(f, "GTVp", shape), gtvp)
        ctx.close()
        browser.close()

    case = open_case(CaseSource(str(data_dir / "LUNG1-001.zip"), manual=ManualSource("rtstruct", None, None)),
                     cache=ResultCache(Path(env["LUNGSEG_APP_CACHE"]) / "results"))
    assert case.from_cache
    want = {"GTVp": gtvp, "GTVn": gtvn}
    seg = hd.seg.segread(files["DICOM SEG"])
    labels = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert sorted(s.SegmentLabel for s in labels.values()) == ["GTVn", "GTVp"]
    uids = case.ct.dicom.sop_instance_uids
    for number, s in labels.items():
        assert s.SegmentAlgorithmType == "SEMIAUTOMATIC"
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number],
                                                   ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
        assert np.array_equal(pixels[..., 0] > 0, want[s.SegmentLabel]), s.SegmentLabel
    rt = pydicom.dcmread(files["RTSTRUCT"])
    rois = {r.ROINumber: r.ROIName for r in rt.StructureSetROISequence}
    assert sorted(rois.values()) == ["GTVn", "GTVp"]
    assert {o.ROIGenerationAlgorithm for o in rt.StructureSetROISequence} == {"SEMIAUTOMATIC"}
    for name, mask in want.items():
        assert np.array_equal(load_rtstruct(files["RTSTRUCT"], case.ct, name), mask), name

    with StudyStore(env["LUNGSEG_DB"]) as store:
        efforts = structures.editing_efforts(store, case, "local user")
        decided = {v.name: v.decision for v in structures.case_structures(store, case)}
    assert decided["GTVp"] == decided["GTVn"] == "accepted"
    assert all(v is None for n, v in decided.items() if n not in ("GTVp", "GTVn"))  # nothing else recorded
    active = efforts[0].active_s
    assert abs(active - interacting) <= 0.2 * interacting, (active, interacting)
    ops = {e.name: e.operations for e in efforts}
    assert ops["GTVp"] == 6  # three strokes, an erase, its undo, the interpolation
