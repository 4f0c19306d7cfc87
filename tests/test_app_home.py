"""Page logic of the app with Streamlit's AppTest (no browser)."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from streamlit.testing.v1 import AppTest

from lungseg.case import AutomaticSource, Case, CaseSource, ManualSource, ResultCache, open_case
from lungseg_app import cases

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "app-cache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.nii.gz").write_bytes(b"not an image at all")
    monkeypatch.setenv("LUNGSEG_DATA", str(data))
    return data


def home() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    return at.run()


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [s.value for s in at.subheader] + [c.value for c in at.caption]
    for t in at.table:
        parts.append(t.value.to_string())
    return "\n".join(str(p) for p in parts)


def test_demo_opens_automatically_with_summary():
    at = home()
    assert not at.exception and not at.error
    case = at.session_state["case"]
    assert case.label == "demo-phantom"
    assert case.manual is not None and case.manual.mask.any()
    page = texts(at)
    assert "Case: demo-phantom" in page
    assert "Slice thickness (mm)" in page and "Dimensions" in page
    assert "1 lesion(s)" in page


def test_bad_path_shows_error_and_keeps_previous_case(_app_env):
    at = home()
    at.text_input(key="path_text").input("/no/such/ct.zip")
    at.button(key="open_path").click().run()
    assert len(at.error) == 1 and "no such file" in at.error[0].value
    assert "\n" not in at.error[0].value
    assert at.session_state["case"].label == "demo-phantom"
    assert not at.exception
    # an unreadable image in the data folder: one-line error, demo still open
    at.selectbox(key="folder_case").select("broken.nii.gz")
    at.button(key="open_folder").click().run()
    assert len(at.error) == 1 and "broken.nii.gz" in at.error[0].value
    # the reason is in the message itself (and in the collapsed status box's title), not only inside the box
    assert at.error[0].value.startswith("Could not open broken.nii.gz: ") and len(at.error[0].value) > 40
    assert at.session_state["case"].label == "demo-phantom"
    assert "Case: demo-phantom" in texts(at)


def test_open_image_from_data_folder_and_reopen_from_disk_cache(_app_env, tmp_path):
    from lungseg.imaging.phantom import synthetic_chest_ct, PhantomSpec

    ph = synthetic_chest_ct(PhantomSpec(shape_zyx=(24, 96, 96), spacing_zyx=(5.0, 3.5, 3.5)))
    img = ph.ct.to_sitk()
    sitk.WriteImage(img, str(_app_env / "small.nii.gz"))
    at = home()
    at.selectbox(key="folder_case").select("small.nii.gz")
    at.button(key="open_folder").click().run()
    assert not at.error and not at.exception
    case = at.session_state["case"]
    assert case.label == "small" and not case.from_cache
    # a fresh process would find both the CT and the result on disk
    again = open_case(case.source, cache=ResultCache(cases.app_cache_dir() / "results"))
    assert again.from_cache and again.key == case.key
    assert np.array_equal(again.lungs.lung_region, case.lungs.lung_region)
    assert np.array_equal(again.automatic.mask, case.automatic.mask)


def test_viewer_page_shows_the_case_through_the_component():
    at = home()
    at.switch_page(str(REPO / "pages" / "1_Viewer.py")).run()
    assert not at.exception and not at.error
    case = at.session_state["case"]
    # the review under the image lists every structure, none decided (a review starts with no decision),
    # and the case's files are written for the browser
    assert any(s.value == "Review" for s in at.subheader)
    table = at.dataframe[0].value
    assert "GTV-auto" in table["structure"].tolist() and set(table["decision"]) == {"—"}
    assert case.automatic is not None
    served = Path(cases.app_cache_dir()) / "viewer-files"
    assert [p for p in served.iterdir() if p.is_dir() and any(p.glob("ct-*.gz"))]


def test_viewer_opens_a_case_progressively_from_its_own_picker(_app_env):
    from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct

    ph = synthetic_chest_ct(PhantomSpec(shape_zyx=(24, 96, 96), spacing_zyx=(5.0, 3.5, 3.5)))
    sitk.WriteImage(ph.ct.to_sitk(), str(_app_env / "small.nii.gz"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["demo_tried"] = True
    at.run()
    at.switch_page(str(REPO / "pages" / "1_Viewer.py")).run()
    at.selectbox(key="viewer_pick").select("small.nii.gz")
    at.button(key="viewer_open").click().run()
    assert not at.exception
    job = at.session_state["viewer_job"]
    job._thread.join(120)
    assert job.snapshot().done and job.snapshot().error is None
    assert list(job.snapshot().timeline) == ["ct", "lungs", "done"]
    at.run()  # the finished job becomes the app's current case
    assert not at.exception and at.session_state["case"].label == "small"
    assert "viewer_job" not in at.session_state
    # an unreadable file: a one-line error, the open case stays
    at.selectbox(key="viewer_pick").select("broken.nii.gz")
    at.button(key="viewer_open").click().run()
    if "viewer_job" in at.session_state:
        at.session_state["viewer_job"]._thread.join(120)
        at.run()
    assert any("broken.nii.gz" in e.value for e in at.error) and at.session_state["case"].label == "small"
    # leaving the page while a case opens is harmless: it is there on return
    at.button(key="viewer_open_demo").click().run()
    job = at.session_state["viewer_job"] if "viewer_job" in at.session_state else None  # None: from memory
    at.switch_page(str(REPO / "app.py")).run()
    if job is not None:
        job._thread.join(120)
    at.switch_page(str(REPO / "pages" / "1_Viewer.py")).run()
    assert not at.exception and at.session_state["case"].label == "demo-phantom"


def test_viewer_without_case_points_home():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["demo_tried"] = True  # no automatic demo
    at.run()
    assert "case" not in at.session_state
    at.switch_page(str(REPO / "pages" / "1_Viewer.py")).run()
    assert not at.exception
    assert any("No case open" in i.value for i in at.info)


def test_summary_never_shows_patient_identifiers(load_case, isolated_case):
    ct, _ = load_case("LUNG1-001")
    source = CaseSource("LUNG1-001.zip", AutomaticSource("model"), ManualSource("rtstruct", None, "GTV-1"))
    case = Case("k", ct.label, source, ct, isolated_case("LUNG1-001"), None, None)
    text = " ".join(f"{k} {v}" for k, v in case.summary().items())
    hdr = ct.dicom.headers[0] if ct.dicom and ct.dicom.headers else None
    if hdr is not None:
        for tag in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(hdr.get(tag, "") or "")
            if value and value != ct.label:
                assert value not in text, tag
    assert "LUNG1-001" in text and "SIEMENS" in text and "GTV-1" in text


def test_default_roi_prefers_gtv1(load_case):
    from lungseg.case import default_roi

    ct, _ = load_case("LUNG1-003")
    assert {"GTV-1", "GTV-2", "GTV-3"} <= set(ct.roi_names())
    assert default_roi(ct) == "GTV-1"


def test_rendering_helpers():
    from lungseg_app import render

    u8 = render.window_u8(np.array([[-1350, -600, 150]], np.int16), 1500, -600)
    assert u8.tolist() == [[0, 127, 255]]
    m = np.zeros((3, 8, 8), bool)
    m[1, 2:6, 2:6] = True
    assert render.outline(m)[1].sum() == 12
