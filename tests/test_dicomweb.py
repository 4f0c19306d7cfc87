"""DICOMweb against a real Orthanc: search, open a series voxel for voxel, send SEG and RTSTRUCT back, and
every way a PACS can fail as a one-line error that leaves nothing in the cache."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lungseg.cli import main
from lungseg.errors import LungsegError
from orthanc import FaultyProxy, Orthanc, dicomweb_plugin, free_port, orthanc_binary

LUNG1_001_CT_INSTANCES = 134
REPO = Path(__file__).resolve().parents[1]


def _need_orthanc():
    if orthanc_binary() is None or dicomweb_plugin() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Orthanc and its DICOMweb plugin are missing (make orthanc installs them)")
        pytest.skip("Orthanc or orthanc-dicomweb not installed (make orthanc)")


@pytest.fixture(scope="module")
def pacs(data_dir, tmp_path_factory):
    """Orthanc (no authentication, remote access off) holding every file of LUNG1-001."""
    _need_orthanc()
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        assert server.upload(data_dir / "LUNG1-001.zip") == 137  # CT 134 + RTSTRUCT + RTPLAN + RTDOSE
        yield server


@pytest.fixture(scope="module")
def lung1(load_case):
    ct, _ = load_case("LUNG1-001")
    return ct


@pytest.fixture(scope="module")
def ct_url(pacs, lung1):
    d = lung1.dicom
    return f"{pacs.dicomweb_url}/studies/{d.study_uid}/series/{d.series_uid}"


@pytest.fixture(autouse=True)
def _no_pacs_settings(monkeypatch):
    for k in ("LUNGSEG_PACS_URL", "LUNGSEG_PACS_USER", "LUNGSEG_PACS_PASSWORD", "LUNGSEG_PACS_TOKEN",
              "LUNGSEG_PACS_CA_BUNDLE"):
        monkeypatch.delenv(k, raising=False)


def _nothing_cached(root):
    """Nothing of a series in the cache: no series folder, no temporary folder, no CT entry."""
    left = [p.name for p in (root / "dicomweb").iterdir()] if (root / "dicomweb").exists() else []
    cts = [p.name for p in root.glob("ct-*")] + [p.name for p in root.glob("src-*")]
    return not left and not cts


# --------------------------------------------------------------------------------------------
# round trip


def test_search_finds_lung1_ct_series_and_prints_no_patient(pacs, lung1, capsys):
    from lungseg.dicomweb import Pacs, SearchQuery

    client = Pacs.from_env(pacs.dicomweb_url)
    found = client.search(SearchQuery(patient_id="LUNG1-001"))
    assert [(s.series_uid, s.modality, s.instances) for s in found] == \
        [(lung1.dicom.series_uid, "CT", LUNG1_001_CT_INSTANCES)]
    everything = client.search(SearchQuery(patient_id="LUNG1-001", modality=None))
    assert sorted(s.modality for s in everything) == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
    assert client.search(SearchQuery(patient_id="NOBODY")) == []

    assert main(["pacs", "search", "--url", pacs.dicomweb_url, "--patient-id", "LUNG1-001", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert len(rows) == 1 and {"study_uid", "series_uid", "modality", "instances", "url"} <= set(rows[0])
    assert rows[0]["series_uid"] == lung1.dicom.series_uid and rows[0]["instances"] == LUNG1_001_CT_INSTANCES
    assert "LUNG1-001" not in out  # the patient's ID is searched for, never printed


def test_series_opened_over_dicomweb_equals_the_zip_voxel_for_voxel(ct_url, lung1, tmp_path):
    from lungseg.case import CaseSource, ResultCache, open_case_progressively
    from lungseg.dicomweb import cached_series

    cache = ResultCache(tmp_path)
    stages = open_case_progressively(CaseSource(ct_url), cache=cache)
    case = next(stages)
    stages.close()
    v, ref = case.ct.volume, lung1.volume
    assert v.array.dtype == ref.array.dtype and np.array_equal(v.array, ref.array)
    assert (v.spacing, v.origin, v.direction) == (ref.spacing, ref.origin, ref.direction)
    assert case.ct.dicom.series_uid == lung1.dicom.series_uid
    assert case.ct.dicom.frame_of_reference_uid == lung1.dicom.frame_of_reference_uid
    assert "LUNG1" not in case.label
    folders = list(cached_series(ct_url, tmp_path))
    assert len(folders) == 1 and len(list(folders[0].glob("*.dcm"))) == LUNG1_001_CT_INSTANCES
    again = next(open_case_progressively(CaseSource(ct_url), cache=cache))
    assert again.from_cache and again.key == case.key


def test_seg_and_rtstruct_sent_back_are_found_and_reread_equal(pacs, ct_url, lung1, data_dir, tmp_path, capsys):
    from lungseg import structures
    from lungseg.case import AutomaticSource, CaseSource, open_case
    from lungseg.dicomweb import Pacs, SearchQuery, store_accepted
    from lungseg.imaging.io import load_contour
    from lungseg.study import StudyStore

    gtv = str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz")  # the accepted contour: a mask made elsewhere
    db = tmp_path / "reviews.db"
    assert main(["review", ct_url, "--db", str(db), "--automatic", gtv, "--accept", "automatic"]) == 0
    assert main(["export", ct_url, "--db", str(db), "--accepted", "--automatic", gtv, "--format", "seg",
                 "--out", str(tmp_path / "seg.dcm"), "--send", pacs.dicomweb_url]) == 0
    said = capsys.readouterr().out
    assert 'sent SEG "lungseg accepted GTV-auto"' in said

    case = open_case(CaseSource(ct_url, AutomaticSource("file", path=gtv), None))
    with StudyStore(db) as store:
        accepted = structures.accepted_structures(store, case)
    assert accepted["GTV-auto"].mask.sum() > 1000
    stored = store_accepted(case, accepted, "rtstruct", pacs.dicomweb_url)
    assert [s.modality for s in stored] == ["RTSTRUCT"]

    client = Pacs.from_env(pacs.dicomweb_url)
    study = lung1.dicom.study_uid
    loaded = case.ct
    for modality in ("SEG", "RTSTRUCT"):
        mine = [s for s in client.search(SearchQuery(study_uid=study, modality=modality))
                if s.series_description == "lungseg accepted GTV-auto"]
        assert len(mine) == 1, modality
        uids = client.instance_uids(_ref(mine[0].url))
        ds = client.retrieve_instance(study, mine[0].series_uid, uids[0])
        path = tmp_path / f"{modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if modality == "SEG":
            ref_series = ds.ReferencedSeriesSequence[0].SeriesInstanceUID
            frame = ds.FrameOfReferenceUID
        else:
            rfor = ds.ReferencedFrameOfReferenceSequence[0]
            frame = rfor.FrameOfReferenceUID
            ref_series = rfor.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
        assert ref_series == lung1.dicom.series_uid and frame == lung1.dicom.frame_of_reference_uid
        back = np.asarray(load_contour(path, loaded, "GTV-auto"), bool)
        assert np.array_equal(back, accepted["GTV-auto"].mask), modality


def _ref(url):
    from lungseg.dicomweb import parse_series_url

    return parse_series_url(url)


def test_cohort_sources_from_a_pacs_search(pacs, lung1):
    from lungseg.cohort import cases_from_sources
    from lungseg.dicomweb import SearchQuery

    cases = cases_from_sources([], SearchQuery(patient_id="LUNG1-001"), pacs.dicomweb_url)
    assert [c.ct.rsplit("/", 1)[-1] for c in cases] == [lung1.dicom.series_uid]
    assert all("LUNG1" not in c.name for c in cases)


# --------------------------------------------------------------------------------------------
# failures: one line each, nothing half-written in the cache


def _fails(url, root, words, **kw):
    from lungseg.dicomweb import fetch_series

    with pytest.raises(LungsegError) as info:
        fetch_series(url, root, **kw)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert "LUNG1" not in message
    assert _nothing_cached(root)
    return message


def test_unreachable_server(ct_url, pacs, tmp_path):
    dead = ct_url.replace(f":{pacs.port}/", f":{free_port()}/")
    _fails(dead, tmp_path, ["cannot reach", "connection refused"])


def test_series_not_on_the_server_is_404(ct_url, tmp_path, capsys, monkeypatch):
    missing = ct_url.rsplit("/", 1)[0] + "/1.2.826.0.1.3680043.8.498.1"
    _fails(missing, tmp_path, ["1.2.826.0.1.3680043.8.498.1", "not found", "404"])
    # the same through a command: exit 2 and one line on stderr
    monkeypatch.setenv("LUNGSEG_RESULT_CACHE", str(tmp_path))
    assert main(["lungs", missing, "--out", str(tmp_path / "l.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: series 1.2.826.0.1.3680043.8.498.1") and "\n" not in err
    assert _nothing_cached(tmp_path)


def test_series_that_is_not_ct(pacs, lung1, tmp_path):
    from lungseg.dicomweb import Pacs, SearchQuery

    rt = [s for s in Pacs.from_env(pacs.dicomweb_url).search(SearchQuery(modality="RTSTRUCT"))
          if s.study_uid == lung1.dicom.study_uid and s.series_description != "lungseg accepted GTV-auto"][0]
    _fails(rt.url, tmp_path, ["RTSTRUCT", "not CT"])


def test_series_missing_an_instance(ct_url, pacs, tmp_path):
    with FaultyProxy(pacs.dicomweb_url, "drop-one") as proxy:
        _fails(ct_url.replace(pacs.dicomweb_url, proxy.url), tmp_path, ["133 of 134 instances", "1 missing"])


def test_server_that_stops_mid_transfer(ct_url, pacs, tmp_path):
    with FaultyProxy(pacs.dicomweb_url, "cut") as proxy:
        _fails(ct_url.replace(pacs.dicomweb_url, proxy.url), tmp_path, ["stopped in the middle of the transfer"])


def test_401_without_credentials_and_basic_auth_with_them(data_dir, lung1, tmp_path_factory, tmp_path, monkeypatch):
    _need_orthanc()
    from lungseg.dicomweb import fetch_series

    with Orthanc(tmp_path_factory.mktemp("orthanc-auth"), users={"planner": "s3cret"}) as server:
        url = f"{server.dicomweb_url}/studies/{lung1.dicom.study_uid}/series/{lung1.dicom.series_uid}"
        _fails(url, tmp_path, ["401", "LUNGSEG_PACS_USER"])
        monkeypatch.setenv("LUNGSEG_PACS_URL", server.dicomweb_url)
        monkeypatch.setenv("LUNGSEG_PACS_USER", "planner")
        monkeypatch.setenv("LUNGSEG_PACS_PASSWORD", "wrong")
        _fails(url, tmp_path, ["401", "check"])
        monkeypatch.setenv("LUNGSEG_PACS_PASSWORD", "s3cret")
        with pytest.raises(LungsegError, match="404"):  # authorised: the server is empty
            fetch_series(url, tmp_path)


def test_bearer_token_from_the_environment(ct_url, pacs, tmp_path, monkeypatch):
    from lungseg.dicomweb import Pacs, SearchQuery

    with FaultyProxy(pacs.dicomweb_url, "bearer", token="t0ken") as proxy:
        _fails(ct_url.replace(pacs.dicomweb_url, proxy.url), tmp_path, ["401", "LUNGSEG_PACS_TOKEN"])
        monkeypatch.setenv("LUNGSEG_PACS_URL", proxy.url)
        monkeypatch.setenv("LUNGSEG_PACS_TOKEN", "t0ken")
        assert len(Pacs.from_env().search(SearchQuery(patient_id="LUNG1-001"))) == 1
        # the token is for that server only: never sent to another one
        assert Pacs.from_env(pacs.dicomweb_url).settings.token is None


# --------------------------------------------------------------------------------------------
# URLs and settings


@pytest.mark.parametrize("url, words", [
    ("http://user:pw@pacs.example/dicom-web/studies/1.2/series/1.3", "credentials do not belong in the URL"),
    ("https://pacs.example/dicom-web/studies/1.2", "not a series URL"),
    ("https://pacs.example/dicom-web/studies/1.2/series/abc", "not a DICOM UID"),
    ("https://pacs.example/studies/1.2/series/1.3?x=1", "has no query"),
])
def test_bad_series_urls_are_one_line_errors(url, words):
    from lungseg.case import CaseSource

    with pytest.raises(LungsegError, match=words):
        CaseSource(url)


def test_settings_come_from_the_environment_and_tls_stays_verified():
    from lungseg.dicomweb import PacsSettings

    env = {"LUNGSEG_PACS_URL": "https://pacs.example/dicom-web/", "LUNGSEG_PACS_USER": "u",
           "LUNGSEG_PACS_PASSWORD": "p"}
    s = PacsSettings.from_env(env=env)
    assert (s.url, s.user, s.password, s.verify) == ("https://pacs.example/dicom-web", "u", "p", True)
    assert "password" not in repr(s) and "token" not in repr(s)  # secrets are never shown
    assert PacsSettings.from_env("https://other.example/dicom-web", env=env).user is None
    with pytest.raises(LungsegError, match="cannot be switched off"):
        PacsSettings("https://pacs.example", verify=False)
    with pytest.raises(LungsegError, match="LUNGSEG_PACS_URL"):
        PacsSettings.from_env(env={})


# --------------------------------------------------------------------------------------------
# the app's PACS tab


def test_home_pacs_tab_searches_and_opens_the_chosen_series(pacs, ct_url, tmp_path, monkeypatch):
    """The tab's search reaches the real server and "Open series" hands the series URL to the app's
    opener (opening a URL itself is tested above; the shipped U-Net is not run here)."""
    from streamlit.testing.v1 import AppTest

    from lungseg_app import state

    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "app-cache"))
    monkeypatch.setenv("LUNGSEG_DATA", str(tmp_path))
    opened = []
    monkeypatch.setattr(state, "open_source", lambda source, label=None: opened.append((source, label)) or False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception and any("No PACS is configured" in i.value for i in at.info)

    monkeypatch.setenv("LUNGSEG_PACS_URL", pacs.dicomweb_url)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.text_input(key="pacs_patient_id").input("LUNG1-001")
    at.button(key="pacs_search").click().run()
    assert not at.exception and not at.error
    picker = at.selectbox(key="pacs_series")
    titles = [str(o) for o in picker.options]
    assert len(titles) == 1 and "CT" in titles[0] and "134 images" in titles[0] and "LUNG1" not in titles[0]
    at.button(key="pacs_open").click().run()
    source, label = opened[-1]
    assert source.ct == ct_url and label == titles[0]
