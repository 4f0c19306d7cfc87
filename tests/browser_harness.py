"""Test and benchmark harness (not shipped in the app): a real ``streamlit run`` server on a free port,
headless Chromium, and the in-page latency probe."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LUNGSEG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(env: dict | None = None, timeout: float = 60.0):
    """Yield (base_url, process) of ``streamlit run app.py`` on a free localhost port; kill it at the end."""
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    log = open(full_env.get("LUNGSEG_SERVER_LOG", os.devnull), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("streamlit did not become healthy in time")
            time.sleep(0.3)
        yield url, proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def app_env(work_dir: Path, data_dir: Path, **extra: str) -> dict:
    """Settings of an app server with its own result cache and database in ``work_dir``, opening cases
    from ``data_dir``."""
    return {"LUNGSEG_APP_CACHE": str(work_dir / "cache"), "LUNGSEG_DB": str(work_dir / "lungseg.db"),
            "LUNGSEG_DATA": str(data_dir), **extra}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


# In-page probe, injected by benchmarks only: for each key press (or click / input), the time from the
# event to the frame after the handler's drawing (rAF, then a message after that frame's paint), and how
# long the event waited before any handler ran ("queued"); and the Event Timing API's slow events.
LATENCY_PROBE = """() => {
  window.__probe = [];
  const after = (t0, what) => {
    const queued = performance.now() - t0;
    requestAnimationFrame(() => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => window.__probe.push({what, ms: performance.now() - t0, queued,
        slice: document.getElementById('axial').dataset.slice});
      ch.port2.postMessage(0);
    });
  };
  for (const type of ['keydown', 'click', 'input', 'pointermove'])
    document.addEventListener(type, (e) => after(e.timeStamp, type), true);
  // the browser's own input-to-next-paint (Event Timing API; it lists only events of 16 ms or more)
  window.__slowEvents = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__slowEvents.push({name: e.name, ms: e.duration}); })
    .observe({type: 'event', durationThreshold: 16});
}"""


def expand_picker(page, button: str) -> None:
    """Open the viewer page's "Open another case" expander (unless it is open) until ``button`` shows."""
    details = page.locator('[data-testid="stExpander"] details').filter(has_text="Open another case")
    details.wait_for(timeout=120_000)
    if details.get_attribute("open") is None:
        page.get_by_text("Open another case").click()
    page.get_by_role("button", name=button).wait_for(state="visible", timeout=30_000)


def pick_case(page, name: str) -> None:
    """Pick ``name`` in the viewer's data-folder picker.  A click while the page reruns may not open
    the list (seen after a reload on a loaded machine): close whatever opened and try again."""
    picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Case from the data folder").first
    for _ in range(10):
        picker.click(timeout=60_000)
        try:
            page.get_by_role("option", name=name).click(timeout=3000)
            return
        except Exception:  # noqa: BLE001 - the list did not open
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    raise TimeoutError(f"could not pick {name} in the data-folder picker")


VIEWER_FRAME = 'iframe[title*="lungseg_viewer"]'


def viewer_frame(page):
    """The viewer component's frame in the page."""
    return page.frame_locator(VIEWER_FRAME)


def axial_point(frame, i: float, j: float) -> tuple[float, float]:
    """Page coordinates of the centre of voxel column i, row j in the axial view at the fitted zoom
    (``frame``: the viewer's frame, as a frame locator or a frame)."""
    box = frame.locator("#axial").bounding_box()
    nx, ny, sx, sy, _ = (float(v) for v in frame.locator("#axial").get_attribute("data-geometry").split(","))
    s = min(box["width"] / (nx * sx), box["height"] / (ny * sy))
    ox, oy = (box["width"] - nx * sx * s) / 2, (box["height"] - ny * sy * s) / 2
    return box["x"] + ox + (i + 0.5) * sx * s, box["y"] + oy + (j + 0.5) * sy * s


def screenshot(page, name: str) -> None:
    """A page screenshot for the docs, written only on request: ``LUNGSEG_SCREENSHOTS=docs pytest ...`` (tests
    never change the repository's files otherwise)."""
    folder = os.environ.get("LUNGSEG_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))
