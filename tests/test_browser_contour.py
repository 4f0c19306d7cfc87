"""A contouring study in a real browser (issue 23): two readers, three cases, both arms, on the Contour page
with the viewer's editing tools.  Each reader's times and masks are stored as the viewer showed them; the scratch
arm starts empty and draws nothing of the case but the CT; the report's figures equal an independent computation
(tests/contouring_expected.py: scipy for the tests, numpy for Dice and the distances)."""

import re
import time

import numpy as np
import pytest
import SimpleITK as sitk

from browser_harness import app_server, axial_point, launch_chromium, viewer_frame
from contouring_expected import expected_report
from test_browser_edit import viewer_mask  # the structure's bits as the viewer holds and paints them
from lungseg.case import AutomaticSource, CaseSource, ManualSource
from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct
from lungseg.maskcodec import unpack
from lungseg.study import StudyStore, authenticate_rater
from lungseg.study.cases import contouring_case
from lungseg.study.contouring import ContouringParams
from lungseg.study.contouring_report import contouring_report

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
LAYER = "your contour"
CASES = ("P1", "P2", "P3")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three small phantoms (other seeds and tumour sizes) as NIfTI with their true tumour; the automatic
    contour is the stand-in (no model needed); the model's time per case recorded as the viewer would."""
    d = tmp_path_factory.mktemp("contour-browser")
    store = StudyStore(d / "lungseg.db")
    cases, automatic = [], {}
    for n, case_id in enumerate(CASES):
        ph = synthetic_chest_ct(PhantomSpec(shape_zyx=(24, 128, 128), spacing_zyx=(4.0, 2.6, 2.6), seed=n + 1,
                                            tumour_radius_mm=14.0 + 3 * n))
        ct, truth = d / f"{case_id}.nii.gz", d / f"{case_id}-truth.nii.gz"
        sitk.WriteImage(ph.ct.to_sitk(), str(ct))
        sitk.WriteImage(ph.ct.to_sitk(ph.tumour.astype(np.uint8)), str(truth))
        source = CaseSource(str(ct), AutomaticSource("stand-in"), ManualSource("label", str(truth), None))
        case = contouring_case(case_id, source)
        automatic[case_id] = case
        cases.append(case)
    store.create_contouring_study("browser contouring", cases, ContouringParams(seed=4), actor="test")
    for n, case_id in enumerate(CASES):
        store.record_model_time("browser contouring", case_id, 2.0 + 0.4 * n, "stand-in timing")
    tokens = [store.invite_rater("browser contouring", name, "Radiation oncologist", actor="test").token
              for name in ("Dr One", "Dr Two")]
    store.close()
    return {"db": d / "lungseg.db", "dir": d, "tokens": tokens, "cases": automatic}


def _automatic(case) -> np.ndarray:
    return unpack(case.automatic)


def stroke(page, frame, i: float, j: float) -> None:
    """A brush stroke of a few pixels from voxel (i, j) of the shown slice; waits until Python has stored it."""
    x, y = axial_point(frame, i, j)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 3, y + 2)
    page.mouse.up()
    expect(frame.locator("body[data-outbox='0']")).to_have_count(1, timeout=30_000)


def settle(page):
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)


def test_two_readers_contour_three_cases_in_both_arms(study):
    env = {"LUNGSEG_DB": str(study["db"]), "LUNGSEG_APP_CACHE": str(study["dir"] / "app-cache"),
           "LUNGSEG_DATA": str(study["dir"] / "no-data")}
    shown: dict[tuple, np.ndarray] = {}
    spent: dict[tuple, float] = {}
    with app_server(env=env) as (url, _), playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        for r, token in enumerate(study["tokens"]):
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}/Contour?token={token}")
            page.get_by_role("button", name="Begin the first session").click()
            prev = ""
            for n in range(6):
                if n == 3:
                    page.get_by_role("button", name="Begin session 2 of 2").click()
                expect(page.get_by_text(f"Case {n + 1} of 6", exact=False)).to_be_visible(timeout=120_000)
                arm_line = page.get_by_text(re.compile("^(Assisted|From scratch): "))
                expect(arm_line).to_be_visible()
                assisted = arm_line.inner_text().startswith("Assisted")
                f = viewer_frame(page)
                # this reading's files (its own folder), not the previous reading's still on screen
                expect(f.locator(f"body[data-ct='ready'][data-layers='{LAYER}']:not([data-case='{prev}'])")
                       ).to_have_count(1, timeout=120_000)
                prev = f.locator("body").get_attribute("data-case")
                # the page draws the CT and the reader's own contour, nothing else of the case
                assert f.locator(".row[data-layer]").count() == 1
                nx, ny, _, _, nz = (float(v) for v in f.locator("#axial").get_attribute("data-geometry").split(","))
                shape = (int(nz), int(ny), int(nx))
                start = viewer_mask(f, LAYER, shape)
                if assisted:  # the draft of one of the cases (which one: checked against the store below)
                    case_id = next(c for c, case in study["cases"].items() if np.array_equal(start, _automatic(case)))
                else:
                    case_id = None
                    assert not start.any(), (r, n, int(start.sum()))  # scratch: empty, even after the other reader read it
                t0 = time.monotonic()
                f.locator("[data-tool='brush']").click()
                expect(f.locator("#editing")).to_have_text(f"editing {LAYER}", timeout=60_000)  # offered at once
                for j, i in ((60 + 4 * r, 60 + 3 * n), (66 + 2 * r, 64 + 2 * n)):
                    stroke(page, f, i, j)
                steps = 2 if n == 0 else 1  # the first case: two slices apart, then interpolated between them
                for _ in range(steps):
                    page.keyboard.press("ArrowUp")
                stroke(page, f, 62, 62 + r)
                if n == 0:
                    painted = viewer_mask(f, LAYER, shape)
                    held = int(f.locator("body").get_attribute("data-versions").rsplit(":", 1)[1])
                    page.keyboard.press("i")  # the server interpolates; the page fetches the new version
                    expect(f.locator(f"body[data-versions='{LAYER}:{held + 1}']")).to_have_count(1, timeout=60_000)
                    final = viewer_mask(f, LAYER, shape)
                    edited = np.flatnonzero((painted ^ start).any(axis=(1, 2)))
                    assert len(edited) == 2 and edited[1] - edited[0] == 2
                    added = (final & ~painted).any(axis=(1, 2))
                    assert added[edited[0] + 1] and not added[edited].any()
                else:
                    final = viewer_mask(f, LAYER, shape)
                assert final.sum() > start.sum()
                if r == 1 and n == 0:  # a reload (or a later visit) resumes the case from its saved draft
                    settle(page)
                    page.reload()
                    f = viewer_frame(page)
                    expect(f.locator(f"body[data-ct='ready'][data-layers='{LAYER}']")).to_have_count(1,
                                                                                                 timeout=120_000)
                    expect(page.get_by_text("Case 1 of 6", exact=False)).to_be_visible()
                    assert np.array_equal(viewer_mask(f, LAYER, shape), final)
                settle(page)
                spent_here = time.monotonic() - t0
                page.get_by_role("button", name="Submit this contour").click()
                settle(page)
                shown[(r, n)] = (assisted, case_id, final)
                spent[(r, n)] = spent_here
            expect(page.get_by_text("All 6 cases are done")).to_be_visible(timeout=60_000)
            ctx.close()
        browser.close()

    with StudyStore(study["db"]) as store:
        rows = store.readings_table("browser contouring")
        assert len(rows) == 12 and {r["reader_name"] for r in rows} == {"Dr One", "Dr Two"}
        readers = list(dict.fromkeys(r["reader"] for r in rows))
        times, masks = {}, {}
        for r, reader in enumerate(readers):
            mine = sorted((row for row in rows if row["reader"] == reader), key=lambda row: row["position"])
            assert [(row["arm"] == "assisted") for row in mine] == [shown[(r, n)][0] for n in range(6)]
            assert sorted((row["case_id"], row["arm"]) for row in mine) == sorted(
                (c, a) for c in CASES for a in ("scratch", "assisted"))
            for n, row in enumerate(mine):
                mask = unpack(store.packed_mask(row["mask_digest"]))
                assert np.array_equal(mask, shown[(r, n)][2])  # the mask stored is the one the viewer showed
                assert 0 < row["active_s"] <= spent[(r, n)] + 5
                if shown[(r, n)][0]:
                    assert shown[(r, n)][1] == row["case_id"]  # assisted started from this case's draft
                times[(reader, row["case_id"], row["arm"])] = row["active_s"]
                masks[(reader, row["case_id"], row["arm"])] = mask
        report = contouring_report(store, "browser contouring")
    spacing = {c: tuple(case.spacing_zyx) for c, case in study["cases"].items()}
    automatic = {c: _automatic(case) for c, case in study["cases"].items()}
    exp = expected_report(times, {"P1": 2.0, "P2": 2.4, "P3": 2.8}, masks, automatic, spacing, {})
    t = report["times"]["all_readings"]
    for arm in ("scratch", "assisted", "model"):
        for stat in ("n", "mean", "sd", "median", "iqr"):
            assert t["per_arm"][arm][stat] == pytest.approx(exp["per_arm"][arm][stat], rel=1e-9)
    assert t["time_saved"]["summary"]["median"] == pytest.approx(exp["saved"]["median"], rel=1e-9)
    assert t["wilcoxon_scratch_vs_assisted"]["pooled"]["p"] == pytest.approx(exp["wilcoxon_pooled"], rel=1e-9)
    for m in t["mann_whitney_vs_model"]:
        assert (m["u"], m["p"], m["p_bonferroni"]) == pytest.approx(exp["mw"][(m["reader"], m["arm"])], rel=1e-9)
    inter = {(p["case_id"], p["arm"], p["reader_a"], p["reader_b"]): p for p in report["agreement"]["inter_observer"]["pairs"]}
    assert set(inter) == set(exp["inter"]) and len(inter) == 6
    for key, e in exp["inter"].items():
        for metric in ("dice", "hd95_mm", "surface_dice"):
            assert inter[key][metric] == pytest.approx(e[metric], rel=1e-6)
    versus = {(p["reader"], p["case_id"], p["arm"]): p for p in report["agreement"]["model_vs_reader"]["pairs"]}
    for key, e in exp["model_vs_reader"].items():
        assert versus[key]["dice"] == pytest.approx(e["dice"], rel=1e-9)
