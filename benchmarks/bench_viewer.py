"""Viewer benchmark in headless Chromium against a real `streamlit run` server.

Prints, for LUNG1-001 opened from the viewer's data-folder picker:
- cold open (empty caches, fresh server): click → first CT image, → lung region, → automatic tumour,
  → every CT slice in the browser;
- reopen, same server, new browser (empty browser cache) and fresh server (on-disk caches): click → full overlay;
- bytes the browser received for the case (HTTP files + websocket) and per later interaction;
- slice step (key press → next frame painted), window/level preset and opacity change latencies, and
  whether any of those sent anything to the server;
- machine load (the machine is shared), server RSS.
The latency probe is injected by this script (tests/browser_harness.py); the app ships no test hooks.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, shared_data

sys.path.insert(0, str(REPO / "tests"))
from browser_harness import LATENCY_PROBE, app_server, expand_picker, launch_chromium, rss_mb  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

STEPS = 200
VIEWER = 'iframe[title*="lungseg_viewer"]'


def load() -> str:
    with open("/proc/loadavg") as f:
        a = f.read().split()
    return f"load {a[0]} {a[1]} {a[2]}, runnable {a[3]}"


class Meter:
    """Bytes received and messages sent by one page."""

    def __init__(self, page):
        self.http_bytes = 0
        self.http = 0
        self.ws_in = 0
        self.ws_out = 0
        self.files = 0

        def done(req):
            try:
                n = req.sizes()["responseBodySize"]
            except Exception:  # noqa: BLE001
                n = 0
            self.http_bytes += n
            self.http += 1
            if "viewer_files" in req.url:
                self.files += n

        page.on("requestfinished", done)

        def ws(sock):
            sock.on("framereceived", lambda p: setattr(self, "ws_in", self.ws_in + len(p)))
            sock.on("framesent", lambda p: setattr(self, "ws_out", self.ws_out + 1))

        page.on("websocket", ws)

    def snap(self):
        return (self.http, self.http_bytes, self.ws_in, self.ws_out)


def frame_of(page):
    for f in page.frames:
        if "lungseg_viewer" in f.url and "viewer_files" not in f.url:
            return f
    return None


def wait_frame(page, cond: str, timeout_s: float = 600):
    """Wait for a condition on the viewer frame's body (polled every animation frame)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        f = frame_of(page)
        if f is not None:
            try:
                f.wait_for_function(f"() => {{ const b = document.body; return !!({cond}); }}", polling="raf",
                                    timeout=max(1000, (deadline - time.time()) * 1000))
                return f
            except Exception:  # noqa: BLE001 - the frame was replaced; look again
                pass
        page.wait_for_timeout(20)
    raise TimeoutError(cond)


def open_lung1(page, url) -> dict:
    """Open LUNG1-001 from the viewer's picker; seconds from the click to each milestone."""
    page.goto(url + "/Viewer")
    expand_picker(page, "Open this case")
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Case from the data folder").first.click()
    page.get_by_role("option", name="LUNG1-001.zip").click()
    page.wait_for_timeout(500)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Open this case").click()
    out = {}
    base = "b.dataset.case && document.getElementById('label').textContent === 'LUNG1-001'"
    for name, cond in (("first CT image", "b.dataset.firstImage === '1'"),
                       ("lung region", "(b.dataset.layers || '').includes('lung region')"),
                       ("manual contour", "(b.dataset.layers || '').includes('manual contour')"),
                       ("automatic tumour", "(b.dataset.layers || '').includes('automatic tumour')"),
                       ("all CT slices", "b.dataset.ct === 'ready'")):
        wait_frame(page, f"{base} && {cond}")
        out[name] = time.perf_counter() - t0
    out["full overlay"] = max(out.values())
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def latencies(page, f, meter):
    f.click("#axial", position={"x": 5, "y": 5})
    page.wait_for_timeout(1500)
    f.evaluate(LATENCY_PROBE)
    before = meter.snap()
    for i in range(STEPS):
        page.keyboard.press("ArrowUp" if (i // 20) % 2 == 0 else "ArrowDown")
    f.wait_for_function(f"() => window.__probe.filter(p => p.what === 'keydown').length >= {STEPS}")
    steps = [p["ms"] for p in f.evaluate("() => window.__probe") if p["what"] == "keydown"]
    page.wait_for_timeout(1000)  # the settled slice goes to Python once
    after_steps = meter.snap()
    f.evaluate("() => { window.__probe.length = 0; }")
    for i in range(30):
        f.click(f"[data-preset='{['mediastinum', 'bone', 'lung'][i % 3]}']")
    for i in range(30):
        f.locator("[aria-label='lung region opacity']").fill(str(round(0.1 + 0.03 * i, 2)))
    page.wait_for_timeout(500)
    probe = f.evaluate("() => window.__probe")
    wl = [p["ms"] for p in probe if p["what"] == "click"]
    op = [p["ms"] for p in probe if p["what"] == "input"]
    after_wl = meter.snap()
    return steps, wl, op, before, after_steps, after_wl


def job_alone(data: Path, tmp: str) -> str:
    """The same opening stages in this process, no server or browser: the floor under today's load."""
    os.environ.update({"LUNGSEG_APP_CACHE": f"{tmp}/alone-app", "LUNGSEG_CACHE": f"{tmp}/alone-io"})
    from lungseg.case import CaseSource, ManualSource, ResultCache, default_predictor, model_version  # noqa: PLC0415
    from lungseg_app.viewer import opening  # noqa: PLC0415

    predictor = default_predictor()
    source = CaseSource(str(data / "LUNG1-001.zip"), manual=ManualSource("rtstruct", None, None))
    job = opening.open_job(source, predictor, model_version(predictor), "bench", "LUNG1-001.zip",
                           ResultCache(f"{tmp}/alone-app/results"))
    job._thread.join()
    snap = job.snapshot()
    return ", ".join(f"{k} {v:.2f}" for k, v in snap.timeline.items())


def main() -> int:
    data = shared_data()
    if not (data / "LUNG1-001.zip").exists():
        print(f"LUNG1-001.zip not found in {data}")
        return 1
    print(f"cores: {os.cpu_count()}; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"opening stages alone (no server, no browser; seconds after start): {job_alone(data, tmp)}  [{load()}]")
        env = {"LUNGSEG_APP_CACHE": f"{tmp}/app", "LUNGSEG_CACHE": f"{tmp}/io", "LUNGSEG_DATA": str(data)}
        with sync_playwright() as p:
            browser = launch_chromium(p)
            with app_server(env=env, timeout=180) as (url, proc):
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(600_000)
                meter = Meter(page)
                print(f"before cold open: {load()}")
                cold = open_lung1(page, url)
                print("LUNG1-001 cold open (empty caches), seconds after the click: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in cold.items()) + f"  [{load()}]")
                page.wait_for_timeout(1500)
                print(f"bytes to the browser for the case: {meter.files / 1e6:.1f} MB of case files over HTTP, "
                      f"{meter.http_bytes / 1e6:.1f} MB HTTP in all (page + app), websocket {meter.ws_in / 1e6:.2f} MB")
                f = frame_of(page)
                rss0 = rss_mb(proc.pid)
                steps, wl, op, b0, b1, b2 = latencies(page, f, meter)
                print(f"slice step key→painted frame ({STEPS} steps, 134 slices of 512²): median {statistics.median(steps):.1f} ms, "
                      f"p95 {pct(steps, 0.95):.1f} ms, max {max(steps):.1f} ms  [{load()}]")
                print(f"  during the steps: {b1[0] - b0[0]} HTTP requests, {b1[1] - b0[1]} HTTP bytes, "
                      f"{b1[3] - b0[3]} websocket messages sent (the settled slice), {b1[2] - b0[2]} websocket bytes received")
                print(f"window preset click→painted: median {statistics.median(wl):.1f} ms, max {max(wl):.1f} ms (n={len(wl)}); "
                      f"opacity input→painted: median {statistics.median(op):.1f} ms, max {max(op):.1f} ms (n={len(op)})")
                print(f"  during window/opacity changes: {b2[0] - b1[0]} HTTP requests, {b2[3] - b1[3]} websocket messages sent")
                print(f"server RSS: {rss0:.0f} MB after the open, {rss_mb(proc.pid):.0f} MB after the interactions")
                ctx.close()
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(600_000)
                warm = open_lung1(page, url)
                print(f"LUNG1-001 reopen, same server, new browser: full overlay {warm['full overlay']:.2f} s "
                      f"(first image {warm['first CT image']:.2f} s)  [{load()}]")
                ctx.close()
            with app_server(env=env, timeout=180) as (url, proc):
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(600_000)
                disk = open_lung1(page, url)
                print(f"LUNG1-001 reopen, fresh server (on-disk CT, results and files): full overlay {disk['full overlay']:.2f} s "
                      f"(first image {disk['first CT image']:.2f} s)  [{load()}]")
                print(f"server RSS after reopen: {rss_mb(proc.pid):.0f} MB")
                ctx.close()
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
