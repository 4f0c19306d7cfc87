"""The models in models/: listing, cards, the admin's choice, and cached results kept per model version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lungseg.errors import InputError
from lungseg.installed_models import SHIPPED, chosen_model, choose_model, list_models, read_card

REPO_MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    """models/ with the shipped model, the click model and a second tumour model (the shipped weights
    with another filter: another content hash, so another version) with its own card."""
    monkeypatch.setenv("LUNGSEG_MODEL_CHOICE", str(tmp_path / "choice.json"))
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (SHIPPED, "lesion_click.pt", "README.md"):
        shutil.copy(REPO_MODELS / name, folder / name)
    payload = torch.load(folder / SHIPPED, weights_only=True)
    payload["meta"]["candidate_filter"] = {"min_slices": 3}
    payload["meta"]["training_cases"] = ["LUNG1-001", "LUNG1-002"]
    torch.save(payload, folder / "dept.pt")
    (folder / "dept.md").write_text("# Model card — `dept.pt`\n\ntrained on our own cases\n")
    return folder


def test_lists_tumour_models_with_versions_and_cards(models_dir):
    models = list_models(models_dir)
    assert [m.name for m in models] == [SHIPPED, "dept.pt"]  # the click model is not a tumour model
    shipped, dept = models
    assert shipped.version != dept.version and dept.version.startswith("dept-")
    assert dept.trained_on == ("LUNG1-001", "LUNG1-002") and shipped.has_second_stage
    assert "trained on our own cases" in read_card(dept)
    card = read_card(shipped)
    assert "Model card — `lungseg_unet.pt`" in card and "lesion_click.pt" not in card


def test_admin_choice_switches_the_model_in_use(models_dir):
    assert chosen_model(models_dir) == models_dir / SHIPPED  # nothing chosen yet
    chosen = choose_model("dept.pt", "admin", models_dir)
    assert chosen_model(models_dir) == models_dir / "dept.pt" and chosen.name == "dept.pt"
    with pytest.raises(InputError, match="not a tumour model"):
        choose_model("lesion_click.pt", "admin", models_dir)
    (models_dir / "dept.pt").unlink()  # a chosen model that was removed: back to the shipped one
    assert chosen_model(models_dir) == models_dir / SHIPPED


def test_cached_automatic_contours_stay_per_model_version(models_dir, tmp_path):
    from lungseg.case import AutomaticSource, CaseSource, ResultCache, open_case
    from lungseg.tumour.segment import TumourPredictor

    class RecordingCache(ResultCache):
        served: list = []

        def load_contour(self, name, shape):
            contour = super().load_contour(name, shape)
            if contour is not None and contour.role == "automatic":
                self.served.append(contour.version)
            return contour

    cache = RecordingCache(tmp_path / "results")
    shipped, dept = TumourPredictor(models_dir / SHIPPED, "cpu"), TumourPredictor(models_dir / "dept.pt", "cpu")
    source = CaseSource.demo(AutomaticSource("model"))
    first = open_case(source, shipped, cache=cache)
    other = open_case(source, dept, cache=cache)
    assert cache.served == [] and other.automatic.version == dept.version != shipped.version
    again = open_case(source, shipped, cache=cache)
    assert cache.served == [shipped.version] and again.automatic.version == first.automatic.version
    np.testing.assert_array_equal(again.automatic.mask, first.automatic.mask)
    once_more = open_case(source, dept, cache=cache)
    assert cache.served == [shipped.version, dept.version] and once_more.automatic.version == dept.version


def test_model_page_shows_the_model_in_use_and_switches_it(models_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import lungseg.installed_models as installed

    monkeypatch.setattr(installed, "MODELS_DIR", models_dir)
    monkeypatch.delenv("LUNGSEG_DEPARTMENT", raising=False)
    page = AppTest.from_file(str(REPO_MODELS.parent / "pages" / "7_Tumour_network.py"), default_timeout=60).run()
    assert not page.exception
    text = " ".join(m.value for m in page.markdown)
    assert "**In use:** `lungseg_unet.pt`" in text and "Model card — `lungseg_unet.pt`" in text
    page.selectbox(key="model_choice").select("dept.pt")
    page.button[0].click().run()
    assert not page.exception and "Now in use: dept.pt" in page.success[0].value
    assert chosen_model(models_dir) == models_dir / "dept.pt"
    assert "trained on our own cases" in " ".join(m.value for m in page.markdown)
