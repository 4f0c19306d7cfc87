"""The shipped model on real scans, end to end (load → lung region → U-Net → candidate filter → lesions)."""

import numpy as np
import pytest

from lungseg.imaging.io import load_ct, load_rtstruct
from lungseg.lungs import isolate
from lungseg.metrics import evaluate_case
from lungseg.tumour.lesions import lesion_table
from lungseg.tumour.segment import DEFAULT_MODEL, TumourPredictor

# LUNG1-001 is a TRAINING case of the shipped model (trained on LUNG1-001/002/003 with LIDC nodules
# placed into their lungs): this test proves the real-data path (grid round trip, filter, lesion
# table), not accuracy on new patients — that is the leave-one-patient-out table in models/README.md.
SEEN_CASE_DICE_FLOOR = 0.75
SEEN_CASE_MAX_FALSE_LESIONS = 1


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
    assert payload["meta"]["candidate_filter"]["min_peak_probability"] >= 0.5
    # the second stage (lesion classifier on patches around small candidates) ships in the same file
    assert payload["meta"]["candidate_filter"]["min_lesion_score"] > 0.5
    assert "candidate_classifier" in payload


def test_shipped_second_stage_matches_the_code_that_feeds_it(predictor):
    """A classifier trained on other patches or features than the code builds would score noise."""
    import torch

    from lungseg.tumour.fpr import FEATURES, PATCH_MM, PATCH_SHAPE

    assert predictor.scorer is not None, "the shipped weights carry the lesion classifier"
    shipped = torch.load(DEFAULT_MODEL, weights_only=True)["candidate_classifier"]
    assert tuple(shipped["patch_shape"]) == PATCH_SHAPE
    assert tuple(shipped["patch_mm"]) == PATCH_MM
    assert tuple(shipped["features"]) == FEATURES
    assert predictor.candidate_filter.min_lesion_score > 0.5  # read from the weights' meta


def test_segment_finds_the_tumour_on_a_training_case(load_case, isolated_case, predictor):
    ct, rs = load_case("LUNG1-001")
    lungs = isolated_case("LUNG1-001")
    pred = predictor.predict(ct.volume, lungs)
    gtv = load_rtstruct(rs, ct, "GTV-1")
    m = evaluate_case(pred.mask, gtv, ct.volume.spacing_zyx)
    assert m["dice"] >= SEEN_CASE_DICE_FLOOR
    assert m["lesion_false_negatives"] == 0
    assert m["lesion_false_positives"] <= SEEN_CASE_MAX_FALSE_LESIONS
    table = lesion_table(pred.mask, ct.volume, lungs.spine_x)
    # the largest lesion is the GTV: left side, overlapping its slices
    assert table[0]["side"] == "left"
    gz = np.nonzero(gtv.any(axis=(1, 2)))[0]
    assert table[0]["first_slice"] <= gz[-1] and table[0]["last_slice"] >= gz[0]


def test_shipped_model_finds_no_lesion_on_the_tumour_free_ct(data_dir, predictor):
    """TotalSegmentator's example CT (abdomen with the lung bases, no tumour) was never used in
    training nor in calibrating the filter."""
    ct = load_ct(data_dir / "totalsegmentator-example" / "example_ct.nii.gz").volume
    lungs = isolate(ct)
    assert lungs.lung_region.any(), "the lung bases must be in the region, else this test proves nothing"
    pred = predictor.predict(ct, lungs)
    assert lesion_table(pred.mask, ct) == []
