"""Department mode: cases only from the data folder, uploads capped, pages gated (AppTest)."""

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lungseg.errors import InputError
from lungseg_app import cases

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path, monkeypatch):
    d = tmp_path / "data"
    (d / "case-a").mkdir(parents=True)
    (d / "ct.nii.gz").write_bytes(b"x")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "other.nii.gz").write_bytes(b"x")
    monkeypatch.setenv("LUNGSEG_DATA", str(d))
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LUNGSEG_DB", str(tmp_path / "db.sqlite"))
    return d, outside


def test_paths_outside_the_data_folder_are_refused(data):
    d, outside = data
    assert cases.inside_data_folder(d / "ct.nii.gz") == (d / "ct.nii.gz").resolve()
    assert cases.inside_data_folder("ct.nii.gz") == (d / "ct.nii.gz").resolve()
    for bad in (outside / "other.nii.gz", d / ".." / "secret" / "other.nii.gz", "../secret/other.nii.gz", "/etc/passwd"):
        with pytest.raises(InputError, match="outside the data folder"):
            cases.inside_data_folder(bad)
    os.symlink(outside / "other.nii.gz", d / "link.nii.gz")
    with pytest.raises(InputError, match="outside the data folder"):
        cases.inside_data_folder(d / "link.nii.gz")
    os.symlink(outside, d / "case-a" / "escape")
    with pytest.raises(InputError, match="link out of the data folder"):
        cases.inside_data_folder(d / "case-a")
    # the data folder list never offers a link that leads out
    assert "link.nii.gz" not in [p.name for p in cases.list_data_folder(d)]


def test_uploads_are_capped(data, monkeypatch):
    monkeypatch.setenv("LUNGSEG_MAX_UPLOAD_MB", "0.001")
    with pytest.raises(InputError, match="over the upload limit"):
        cases.save_upload("big.zip", b"x" * 2000)
    assert cases.save_upload("small.zip", b"x" * 100).read_bytes() == b"x" * 100


@pytest.mark.parametrize("page", ["app.py", "pages/1_Viewer.py"])
def test_department_mode_needs_sign_in(data, monkeypatch, page):
    monkeypatch.setenv("LUNGSEG_DEPARTMENT", "1")
    at = AppTest.from_file(str(REPO / page), default_timeout=60).run()
    assert not at.exception
    assert any("Admin sign-in" in s.value for s in at.subheader)
    assert "case" not in at.session_state  # nothing opened, not even the demo
    shown = " ".join(str(m.value) for m in list(at.markdown) + list(at.caption) + list(at.info))
    assert "ct.nii.gz" not in shown and "case-a" not in shown
    assert len(at.selectbox) == 0 and len(at.text_input) == 2  # only the sign-in form's two fields


def test_local_mode_keeps_the_free_path(data):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["demo_tried"] = True
    at.run()
    assert not at.exception
    assert any(t.key == "path_text" for t in at.text_input)
