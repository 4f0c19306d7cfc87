"""The viewer's data path: what Python sends to the browser and the files the browser fetches."""

import gzip
import json

import numpy as np
import pytest

from lungseg.imaging.volume import Volume
from lungseg_app.viewer import ViewerCase, blobs, publish


@pytest.fixture
def app_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _case(key="k1", shape=(37, 40, 48)):
    rng = np.random.default_rng(0)
    arr = rng.integers(-1024, 3000, size=shape).astype(np.int16)
    arr[0, 0, 0], arr[-1, -1, -1] = -32768, 32767  # the extremes survive the byte shuffle
    vol = Volume(arr, (0.8, 0.9, 2.5), (-10.0, 20.0, -300.0))
    lung = np.zeros(shape, bool)
    lung[5:30, 10:30, 8:40] = True
    return ViewerCase(key=key, label="c", volume=vol, layers={"lung region": lung, "automatic tumour": None})


def test_args_carry_urls_not_voxels_and_files_round_trip(app_cache):
    vc = _case()
    args = publish.component_args(vc, start_slice=20, wait=True)
    assert len(json.dumps(args)) < 4000  # a rerun re-sends only this, never the voxels
    folder = app_cache / "viewer-files" / args["folder"]
    slab = args["geometry"]["slab"]
    parts = []
    for s, name in enumerate(args["ct"]):
        assert name is not None
        n = min(slab, vc.volume.shape[0] - s * slab)
        parts.append(blobs.unshuffle_int16(gzip.decompress((folder / name).read_bytes()), (n, 40, 48)))
    assert np.array_equal(np.concatenate(parts), vc.volume.array)
    layers = {layer["name"]: layer for layer in args["layers"]}
    assert layers["automatic tumour"]["file"] is None  # still computing: listed, no file yet
    bits = np.frombuffer(gzip.decompress((folder / layers["lung region"]["file"]).read_bytes()), np.uint8)
    assert np.array_equal(np.unpackbits(bits, count=vc.volume.array.size).reshape(vc.volume.shape).astype(bool),
                          vc.layers["lung region"])
    assert args["geometry"]["spacing"] == [0.8, 0.9, 2.5] and args["geometry"]["nz"] == 37


def test_folder_names_are_secret_and_old_cases_are_removed(app_cache, tmp_path):
    a = blobs.case_folder(tmp_path / "served", tmp_path / "secret-a", "same-case")
    b = blobs.case_folder(tmp_path / "served2", tmp_path / "secret-b", "same-case")
    assert a.token != b.token and len(a.token) == 32  # 128 bits from the server's secret, not the case key
    assert blobs.case_folder(tmp_path / "served", tmp_path / "secret-a", "same-case").token == a.token
    assert not (tmp_path / "served" / "secret-a").exists()
    import os
    import time

    for i in range(blobs.MAX_CASES + 3):
        f = blobs.case_folder(tmp_path / "served", tmp_path / "secret-a", f"case{i}")
        os.utime(f.path, (time.time() + i, time.time() + i))
    removed = blobs.prune(tmp_path / "served")
    assert len(removed) == 4 and len(list((tmp_path / "served").iterdir())) == blobs.MAX_CASES


def test_slab_holding_the_start_slice_is_written_first():
    assert blobs.slab_order(134, 75, 16)[:3] == [4, 3, 5]
    assert sorted(blobs.slab_order(134, 75, 16)) == list(range(9))


def test_float_ct_is_rounded_to_int16():
    assert blobs.as_int16(np.array([-1000.4, 20.6, 1e6])).tolist() == [-1000, 21, 32767]


def test_frontend_files_are_versioned_and_offline():
    from lungseg_app.viewer.component import FRONTEND, VERSION

    html = (FRONTEND / "index.html").read_text()
    js = (FRONTEND / "viewer.js").read_text()
    assert f"viewer.js?v={VERSION}" in html and f"viewer.css?v={VERSION}" in html
    assert f'"./streamlit.js?v={VERSION}"' in js
    for text in (html, js, (FRONTEND / "streamlit.js").read_text()):
        assert "http://" not in text and "https://" not in text  # nothing from a CDN
        assert "__lat" not in text  # no test hooks in the product
