"""Click-to-segment in the viewer, headless Chromium against a real `streamlit run` server.

LUNG1-001 is opened from the viewer's data-folder picker; on GTV-1's largest slice the script clicks at
voxels inside GTV-1 (a 155 ml primary: the click model's largest field of view, its slowest case) and
measures, in the page, click (pointer up on the axial view) → the frame painted after the "clicked lesion"
mask has arrived.  One warm-up click is not counted (both models are loaded when the page is); the median
of the rest is the figure.  Also printed: the server-side segmentation time the page reports, a click
outside any lesion (click → its one-line answer, timed from Python), machine load.  The probe is injected
by this script; the app ships no test hooks.  ``python benchmarks/bench_viewer_click.py [SCREENSHOT.png]``
"""

import re
import statistics
import sys
import tempfile
import time


from _common import REPO, lung1_gtv1_centre, shared_data

sys.path.insert(0, str(REPO / "tests"))
from browser_harness import app_server, axial_point, expand_picker, launch_chromium, pick_case, viewer_frame  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

OFFSETS = [(0, 0), (0, 4), (0, -4), (4, 0), (-4, 0), (3, 3), (-3, -3)]  # (di, dj) voxels from GTV-1's centre
CLICK_PROBE = """() => {
  window.__clicks = []; window.__args = []; window.__loaded = []; window.__t0 = null; window.__argsSeen = false;
  document.getElementById('axial').addEventListener('pointerup', (e) => {
    window.__t0 = e.timeStamp; window.__argsSeen = false; }, true);
  new MutationObserver(() => {  // the layer's row appears when Python's answer reaches the page
    if (window.__t0 === null || window.__argsSeen || !document.querySelector("[data-layer='clicked lesion']")) return;
    window.__argsSeen = true; window.__args.push(performance.now() - window.__t0);
  }).observe(document.getElementById('layers'), { childList: true, subtree: true });
  new MutationObserver(() => {  // the mask has been fetched and inflated; the frame after it is drawn
    if (window.__t0 === null || !(document.body.dataset.layers || '').includes('clicked lesion')) return;
    const t0 = window.__t0; window.__t0 = null;
    window.__loaded.push(performance.now() - t0);
    requestAnimationFrame(() => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => window.__clicks.push(performance.now() - t0);
      ch.port2.postMessage(0);
    });
  }).observe(document.body, { attributes: true, attributeFilter: ['data-layers'] });
}"""


def load() -> str:
    with open("/proc/loadavg") as fh:
        a = fh.read().split()
    return f"load {a[0]} {a[1]} {a[2]}"


def open_lung1(page, url):
    """Open LUNG1-001 from the viewer's picker; the viewer's frame once everything is shown."""
    page.goto(url + "/Viewer")
    expand_picker(page, "Open this case")
    pick_case(page, "LUNG1-001.zip")
    t0 = time.perf_counter()
    page.get_by_role("button", name="Open this case").click()
    f = viewer_frame(page)
    f.locator("body[data-layers*='GTV-auto'][data-ct='ready']").wait_for(state="attached")
    seconds = time.perf_counter() - t0
    frame = next(fr for fr in page.frames if "lungseg_viewer" in fr.url and "viewer_files" not in fr.url)
    return frame, seconds


def to_slice(page, f, k: int) -> None:
    f.locator("#axial").click(position={"x": 5, "y": 5})
    page.keyboard.press("c")  # the Segment tool: a click segments (navigation only moves the crosshair)
    page.keyboard.press("Home")
    for key in ["PageUp"] * (k // 10) + ["ArrowUp"] * (k % 10):
        page.keyboard.press(key)
    f.wait_for_function(f"() => document.getElementById('axial').dataset.slice === '{k + 1}'")


def main() -> int:
    data = shared_data()
    centre = lung1_gtv1_centre(data)
    if centre is None:
        return 1
    k, jj, ii = centre
    points = [(ii + di, jj + dj) for di, dj in OFFSETS]
    # the offsets stay inside GTV-1 on that slice (a few voxels from its centre)
    print(f"{load()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"LUNGSEG_APP_CACHE": f"{tmp}/app", "LUNGSEG_CACHE": f"{tmp}/io", "LUNGSEG_DATA": str(data),
               "LUNGSEG_DB": f"{tmp}/lungseg.db"}
        with sync_playwright() as p:
            browser = launch_chromium(p)
            with app_server(env=env, timeout=180) as (url, _):
                page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
                page.set_default_timeout(600_000)
                f, opened = open_lung1(page, url)
                print(f"LUNG1-001 opened ({opened:.1f} s to the full overlay)  [{load()}]")
                to_slice(page, f, k)
                f.evaluate(CLICK_PROBE)
                server_s = []
                for n, (i, j) in enumerate(points):
                    x, y = axial_point(f, i, j)
                    page.mouse.click(x, y)
                    f.wait_for_function(f"() => window.__clicks.length >= {n + 1}", timeout=60_000)
                    page.wait_for_timeout(800)  # the rerun finishes before the next click
                    text = page.get_by_text(re.compile(r"Clicked lesion .*segmented in")).inner_text(timeout=30_000)
                    server_s.append(float(re.search(r"segmented in ([0-9.]+) s", text).group(1)))
                ms = f.evaluate("() => window.__clicks")
                print(f"click → clicked-lesion contour painted, GTV-1 (LUNG1-001, 512×512×134), {len(ms) - 1} clicks "
                      f"after 1 warm-up: median {statistics.median(ms[1:]):.0f} ms, min {min(ms[1:]):.0f} ms, "
                      f"max {max(ms[1:]):.0f} ms (all: {', '.join(f'{v:.0f}' for v in ms)})  [{load()}]")
                answer = f.evaluate("() => window.__args")
                print(f"  click → Python's answer (the layer listed) in the page: median {statistics.median(answer[1:]):.0f} ms "
                      f"({', '.join(f'{v:.0f}' for v in answer)})")
                loaded = f.evaluate("() => window.__loaded")
                print(f"  click → the mask fetched and inflated: median {statistics.median(loaded[1:]):.0f} ms "
                      f"({', '.join(f'{v:.0f}' for v in loaded)})")
                print(f"  of which segment_at on the server (as the page reports it): median "
                      f"{statistics.median(server_s[1:]) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in server_s)})")
                # a click in aerated lung: the one-line answer (timed from Python: includes Playwright's polling)
                empties = []
                for i, j in [(150, 250), (160, 240), (140, 260)]:
                    x, y = axial_point(f, i, j)
                    t0 = time.perf_counter()
                    page.mouse.click(x, y)
                    page.get_by_text(re.compile(r"No lesion here")).wait_for(timeout=30_000)
                    empties.append(time.perf_counter() - t0)
                    page.wait_for_timeout(800)
                    page.mouse.click(*axial_point(f, ii, jj))  # back to a lesion, so the next answer is new
                    page.get_by_text(re.compile(r"Clicked lesion")).wait_for(timeout=30_000)
                    page.wait_for_timeout(800)
                print(f"click outside any lesion → 'No lesion here' shown: median "
                      f"{statistics.median(empties) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in empties)})  [{load()}]")
                if len(sys.argv) > 1:  # a screenshot of the last clicked lesion, e.g. docs/viewer-click.png
                    page.screenshot(path=sys.argv[1])
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
