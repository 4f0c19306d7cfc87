import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    return Path(os.environ.get("LUNGSEG_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if not (d / "LUNG1-001.zip").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared data missing at {d} (CI=true: missing data is an error)")
        pytest.skip(f"shared data not found at {d}; set LUNGSEG_DATA")
    return d


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    # a per-run cache so tests never depend on what an earlier run left behind
    if "LUNGSEG_CACHE" not in os.environ:
        os.environ["LUNGSEG_CACHE"] = str(tmp_path_factory.mktemp("lungseg-cache"))
    # and a per-run database (and the model choice beside it): no test writes data/lungseg.db of the checkout
    if "LUNGSEG_DB" not in os.environ:
        os.environ["LUNGSEG_DB"] = str(tmp_path_factory.mktemp("lungseg-db") / "lungseg.db")
    yield


_loaded = {}


@pytest.fixture(scope="session")
def load_case(data_dir):
    """Load a LUNG1 case once per session: (LoadedCT, RTSTRUCT path)."""
    from lungseg.imaging.io import find_structure_set, load_ct

    def get(name: str):
        if name not in _loaded:
            ct = load_ct(data_dir / f"{name}.zip")
            _loaded[name] = (ct, find_structure_set(ct).path)
        return _loaded[name]

    return get


_isolated = {}


@pytest.fixture(scope="session")
def isolated_case(load_case):
    from lungseg.lungs import isolate

    def get(name: str):
        if name not in _isolated:
            ct, _ = load_case(name)
            _isolated[name] = isolate(ct.volume)
        return _isolated[name]

    return get
