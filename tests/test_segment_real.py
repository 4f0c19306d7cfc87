"""The shipped model on real scans, end to end (load → lung region → U-Net → lesions)."""

import numpy as np
import pytest

from lungseg.imaging.io import load_rtstruct
from lungseg.tumour.lesions import lesion_table
from lungseg.metrics import evaluate_case
from lungseg.tumour.segment import DEFAULT_MODEL, TumourPredictor

# The shipped model was trained on all three LUNG1 patients (+ synthetic tumours); its accuracy on
# unseen patients is the leave-one-patient-out table in models/README.md.  LUNG1-001 measures
# Dice 0.862: the floor sits under it and proves the real-data path (grid round trip, lesions).
SEEN_CASE_DICE_FLOOR = 0.8


@pytest.fixture(scope="module")
def predictor():
    assert DEFAULT_MODEL.exists(), "the default model must ship in models/"
    return TumourPredictor(DEFAULT_MODEL, "cpu")


def test_model_is_small_and_loads_safely():
    import torch

    assert DEFAULT_MODEL.stat().st_size <= 20 * 1024 * 1024
    payload = torch.load(DEFAULT_MODEL, weights_only=True)
    assert {"state_dict", "meta"} <= set(payload)
    assert payload["meta"]["architecture"]["depth"] >= 3


def test_segment_finds_the_tumour_on_a_real_case(load_case, isolated_case, predictor):
    ct, rs = load_case("LUNG1-001")
    lungs = isolated_case("LUNG1-001")
    pred = predictor.predict(ct.volume, lungs)
    gtv = load_rtstruct(rs, ct, "GTV-1")
    m = evaluate_case(pred.mask, gtv, ct.volume.spacing_zyx)
    assert m["dice"] >= SEEN_CASE_DICE_FLOOR
    assert m["lesion_false_negatives"] == 0
    table = lesion_table(pred.mask, ct.volume, lungs.spine_x)
    # the largest lesion is the GTV: left side, overlapping its slices
    assert table[0]["side"] == "left"
    gz = np.nonzero(gtv.any(axis=(1, 2)))[0]
    assert table[0]["first_slice"] <= gz[-1] and table[0]["last_slice"] >= gz[0]
