"""``train --data pacs:…``: the CT series a PACS query finds, with the structure set of their study, as
training cases (a real Orthanc holding LUNG1-001)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from orthanc import Orthanc, dicomweb_plugin, orthanc_binary


@pytest.fixture(scope="module")
def pacs(data_dir, tmp_path_factory):
    if orthanc_binary() is None or dicomweb_plugin() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Orthanc and its DICOMweb plugin are missing (make orthanc installs them)")
        pytest.skip("Orthanc or orthanc-dicomweb not installed (make orthanc)")
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload(data_dir / "LUNG1-001.zip")
        yield server


def test_pacs_query_gives_the_ct_with_its_structure_set(pacs, monkeypatch):
    from lungseg.errors import InputError
    from lungseg.training.pack import load_host
    from lungseg.training.sources import discover

    for k in ("LUNG1-001", "LUNGSEG_PACS_USER", "LUNGSEG_PACS_PASSWORD", "LUNGSEG_PACS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LUNGSEG_PACS_URL", pacs.dicomweb_url)
    cases = discover("pacs:patient-id=LUNG1-001", "GTV-1").cases
    assert len(cases) == 1 and cases[0].provenance["layout"] == "PACS query (DICOMweb)"
    assert "LUNG1" not in cases[0].case_id  # named by the series UID, never by the patient
    host = load_host(cases[0])
    ml = host.lesions.sum() * np.prod(host.spacing_zyx) / 1000
    assert ml == pytest.approx(155.8, rel=0.02)  # GTV-1 of LUNG1-001
    with pytest.raises(InputError, match="none with a structure set|CT series found"):
        discover("pacs:patient-id=NOBODY", "GTV-1")
    with pytest.raises(InputError, match="patient-id="):
        discover("pacs:modality=CT")
