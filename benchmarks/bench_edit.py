"""Editing in the viewer, headless Chromium against a real `streamlit run` server (issue 22).

LUNG1-001 is opened from the viewer's data-folder picker and an empty structure is created; then, per run
(a fresh page each, 3 runs), on a slice through the tumour:

- brush stroke → painted: each pointer move of a brush stroke (radius 5 mm) to the frame after the page
  painted it (the in-page probe of ``tests/browser_harness.py``: rAF after the handler, then a message after
  that frame's paint);
- undo → painted: Ctrl+Z to the frame after the page painted the undone stroke, one at a time (each saved
  before the next) and in a burst 60 ms apart (with the time the key waited for the page's thread);
- edit saved: a stroke's delta leaving the page (the component's value) → Python applied it, stored the new
  version and the page received the acknowledgement (the page's own log, ``window.__saves``).

Figures: per run the median (and p95 of the brush), then the median over the runs.
``python benchmarks/bench_edit.py``
"""

import statistics
import sys
import tempfile

import numpy as np

from _common import REPO, lung1_gtv1_centre, shared_data

sys.path.insert(0, str(REPO / "tests"))
from browser_harness import (LATENCY_PROBE, app_server, axial_point, expand_picker, launch_chromium,  # noqa: E402
                             pick_case, viewer_frame)
from playwright.sync_api import sync_playwright  # noqa: E402

RUNS = 3
STROKES = 12  # strokes per run (each one undo step and one saved edit)
MOVES = 12  # pointer moves per stroke


def load() -> str:
    with open("/proc/loadavg") as fh:
        a = fh.read().split()
    return f"load {a[0]} {a[1]} {a[2]}"


def p95(values) -> float:
    return float(np.percentile(values, 95))


def open_case(page, url):
    page.goto(url + "/Viewer")
    f = viewer_frame(page)
    if not f.locator("body[data-ct='ready'][data-layers*='GTV-auto']").count():
        expand_picker(page, "Open this case")
        pick_case(page, "LUNG1-001.zip")
        page.get_by_role("button", name="Open this case").click()
    f.locator("body[data-layers*='GTV-auto'][data-ct='ready']").wait_for(state="attached", timeout=600_000)
    return f


def create_empty(page, f, name: str) -> None:
    page.get_by_text("New structure").click()
    page.get_by_label("Name", exact=True).fill(name)
    start = page.locator('[data-testid="stSelectbox"]').filter(has_text="Start from")
    start.locator("input").click()
    page.keyboard.type("empty")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Create").click()
    f.locator(f"#editing:text('editing {name}')").wait_for(timeout=60_000)
    f.locator(f"body[data-versions*='{name}:1']").wait_for(state="attached", timeout=60_000)


def one_run(page, url, run: int, k: int, centre) -> dict:
    f = open_case(page, url)
    create_empty(page, f, f"bench{run}")
    f.locator("#axial").focus()
    page.keyboard.press("Home")
    for _ in range(k):
        page.keyboard.press("ArrowUp")
    f.locator(f"#axial[data-slice='{k + 1}']").wait_for(state="attached")
    page.keyboard.press("b")
    f.locator("body").evaluate(LATENCY_PROBE)
    ci, cj = centre
    for s in range(STROKES):
        x, y = axial_point(f, ci - 30 + 5 * s, cj - 10)
        page.mouse.move(x, y)
        page.mouse.down()
        for m in range(MOVES):
            page.mouse.move(x + 2 * m, y + 3 * m)
            page.wait_for_timeout(20)
        page.mouse.up()
        f.locator("body[data-outbox='0']").wait_for(state="attached", timeout=60_000)
    probe = f.locator("body").evaluate("() => window.__probe")
    brush = [e["ms"] for e in probe if e["what"] == "pointermove"]
    f.locator("body").evaluate("() => { window.__probe.length = 0; }")
    # undo one at a time (the result looked at, saved, before the next), then a burst of undos 60 ms apart
    page.keyboard.down("Control")  # one Control keydown (dropped below), then a z per undo
    for _ in range(STROKES // 2):
        page.keyboard.press("z")
        f.locator("body[data-outbox='0']").wait_for(state="attached", timeout=60_000)
    single = f.locator("body").evaluate("() => window.__probe.splice(0)")
    for _ in range(STROKES - STROKES // 2):
        page.keyboard.press("z")
        page.wait_for_timeout(60)
    page.keyboard.up("Control")
    f.locator("body[data-outbox='0'][data-undo='0']").wait_for(state="attached", timeout=120_000)
    burst = f.locator("body").evaluate("() => window.__probe")
    undo = [e["ms"] for e in single if e["what"] == "keydown"][1:]
    undo_burst = [e["ms"] for e in burst if e["what"] == "keydown"]
    queued = [e["queued"] for e in burst if e["what"] == "keydown"]
    saves = [s["ms"] for s in f.locator("body").evaluate("() => window.__saves") if s["type"] == "edit"]
    return {"brush": brush, "undo": undo, "undo_burst": undo_burst, "burst_queued": queued, "saves": saves[:STROKES],
            "undo_saves": saves[STROKES:]}


def main() -> int:
    data = shared_data()
    centre = lung1_gtv1_centre(data)
    if centre is None:
        return 1
    k, jj, ii = centre
    print(load())
    with tempfile.TemporaryDirectory() as tmp:
        env = {"LUNGSEG_APP_CACHE": f"{tmp}/app", "LUNGSEG_CACHE": f"{tmp}/io", "LUNGSEG_DATA": str(data),
               "LUNGSEG_DB": f"{tmp}/lungseg.db"}
        with sync_playwright() as p, app_server(env=env, timeout=180) as (url, _):
            browser = launch_chromium(p)
            ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
            runs = []
            for run in range(1, RUNS + 1):
                page = ctx.new_page()
                page.set_default_timeout(600_000)
                r = one_run(page, url, run, k, (ii, jj))
                runs.append(r)
                print(f"run {run}: brush move → painted median {statistics.median(r['brush']):.1f} ms, p95 "
                      f"{p95(r['brush']):.1f} ms ({len(r['brush'])} moves); undo → painted median "
                      f"{statistics.median(r['undo']):.1f} ms ({len(r['undo'])} one at a time; in a burst 60 ms apart "
                      f"{statistics.median(r['undo_burst']):.1f} ms, of which waiting for the page's thread "
                      f"{statistics.median(r['burst_queued']):.1f} ms); edit saved median "
                      f"{statistics.median(r['saves']):.0f} ms, p95 {p95(r['saves']):.0f} ms ({len(r['saves'])} strokes; "
                      f"undos saved median {statistics.median(r['undo_saves']):.0f} ms)  [{load()}]")
                page.close()
            browser.close()
    med = lambda key, f=statistics.median: statistics.median(f(r[key]) for r in runs)  # noqa: E731
    print(f"median of {RUNS} runs (LUNG1-001, 512×512×134): brush stroke → painted median {med('brush'):.1f} ms, "
          f"p95 {med('brush', p95):.1f} ms (limits 16 / 33 ms); undo → painted {med('undo'):.1f} ms (limit 16 ms; in a "
          f"burst {med('undo_burst'):.1f} ms); "
          f"edit saved (delta sent, applied, acknowledged) median {med('saves'):.0f} ms (limit 300 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
