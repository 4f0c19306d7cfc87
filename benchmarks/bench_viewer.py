"""Viewer benchmark in headless Chromium against a real `streamlit run` server.

Prints: slice-step latency (key press → new image painted: keydown handler → img onload →
requestAnimationFrame, measured in the page), load-to-first-overlay for LUNG1-001 (cold caches),
reopen of a cached case (same server; and a fresh server reading the on-disk cache), and the server's
RSS after 200 slice steps.
"""

import re
import statistics
import sys
import tempfile
import time

from _common import shared_data
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from lungseg_app.serve import app_server, launch_chromium, rss_mb
from playwright.sync_api import expect, sync_playwright

STEPS = 200


def viewer_frame(page):
    for f in page.frames:
        if f.query_selector("#axial"):
            return f
    raise RuntimeError("viewer frame not found")


def settle(page) -> None:
    """Wait for the rerun a widget change starts to finish."""
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
    page.wait_for_timeout(200)


def open_lung1(page, url) -> float:
    """Seconds from clicking Open to the manual-contour overlay painted in the viewer."""
    page.goto(url)
    expect(page.get_by_text("Case: demo-phantom")).to_be_visible(timeout=120_000)
    page.get_by_role("tab", name="Data folder").click()
    settle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Case").first.click()
    page.get_by_role("option", name="LUNG1-001.zip").click()
    settle(page)  # the selection reruns the page
    t0 = time.perf_counter()
    for _ in range(10):  # a rerun can detach the button under the click: retry
        try:
            page.get_by_role("button", name="Open selected case").click(timeout=10_000)
            break
        except PlaywrightTimeout:
            page.wait_for_timeout(500)
    expect(page.get_by_text("Case: LUNG1-001")).to_be_visible(timeout=300_000)
    page.get_by_role("link", name=re.compile("Open the viewer")).click()
    loc = page.frame_locator("iframe").last.locator('img[data-layer="manual contour"]')
    expect(loc).to_be_visible(timeout=300_000)
    page.wait_for_function("() => [...document.querySelectorAll('iframe')].some(f => { try { const i = f.contentDocument.querySelector('img[data-layer=\"manual contour\"]'); return i && i.complete && i.naturalWidth > 0; } catch (e) { return false; } })")
    return time.perf_counter() - t0


def main() -> int:
    data = shared_data()
    if not (data / "LUNG1-001.zip").exists():
        print(f"LUNG1-001.zip not found in {data}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        env = {"LUNGSEG_APP_CACHE": f"{tmp}/app", "LUNGSEG_CACHE": f"{tmp}/io", "LUNGSEG_DATA": str(data)}
        with sync_playwright() as p:
            browser = launch_chromium(p)
            with app_server(env=env, timeout=120) as (url, proc):
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                cold = open_lung1(page, url)
                print(f"LUNG1-001 load-to-first-overlay (cold: unzip + load + lungs + render): {cold:.2f} s")
                f = viewer_frame(page)
                f.click("#axial")
                f.evaluate("() => { window.__lat = []; }")
                rss0 = rss_mb(proc.pid)
                n = int(f.evaluate("() => D.n"))
                for i in range(STEPS):
                    key = "ArrowUp" if (i // 20) % 2 == 0 else "ArrowDown"
                    page.keyboard.press(key)
                    f.wait_for_function(f"() => window.__lat.length >= {i + 1}", timeout=10_000)
                lat = sorted(f.evaluate("() => window.__lat"))
                med = statistics.median(lat)
                p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
                print(f"slice step key→paint on {n} slices of 512²: median {med:.1f} ms, p95 {p95:.1f} ms, max {lat[-1]:.1f} ms (n={len(lat)})")
                rss1 = rss_mb(proc.pid)
                print(f"server RSS: {rss0:.0f} MB before, {rss1:.0f} MB after {STEPS} slice steps")
                ctx.close()
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                warm = open_lung1(page, url)
                print(f"LUNG1-001 reopen, same server (in-process cache): {warm:.2f} s to first overlay")
                ctx.close()
            with app_server(env=env, timeout=120) as (url, proc):
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                disk = open_lung1(page, url)
                print(f"LUNG1-001 reopen, fresh server (on-disk CT + result cache): {disk:.2f} s to first overlay")
                print(f"server RSS after reopen: {rss_mb(proc.pid):.0f} MB")
                ctx.close()
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
