"""The false-positive reduction stage (candidate rules) and real-nodule placement used to train it."""

import numpy as np
import pytest

from lungseg.tumour.placement import HostSites, PlacementParams, place_nodules, resample_crop
from lungseg.tumour.segment import (CandidateContext, CandidateFilter, PostProcess, candidates, kept_labels,
                                    postprocess)


def _probability_map():
    prob = np.zeros((10, 40, 40), np.float32)
    prob[2:6, 5:12, 5:12] = 0.97  # a confident lesion over four slices
    prob[2:6, 20:27, 5:12] = 0.6  # a hesitant blob of the same size
    prob[7, 30:34, 30:34] = 0.99  # one slice only: a vessel seen end-on
    return prob


def test_candidates_report_the_features_the_rules_use():
    prob = _probability_map()
    labels, rows = candidates(prob, np.ones(prob.shape, bool), voxel_ml=0.01)
    assert len(rows) == 3 and labels.max() == 3
    by_slices = sorted(rows, key=lambda r: r["slices"])
    assert by_slices[0]["slices"] == 1 and by_slices[0]["peak_probability"] == pytest.approx(0.99)
    assert {r["slices"] for r in rows} == {1, 4}
    assert all(r["inside_region"] == 1.0 for r in rows)
    assert sorted(round(r["volume_ml"], 2) for r in rows) == [0.16, 1.96, 1.96]


def test_candidate_filter_drops_hesitant_and_one_slice_candidates():
    prob = _probability_map()
    region = np.ones(prob.shape, bool)
    unfiltered = postprocess(prob, region, 0.01, PostProcess(min_volume_ml=0.0, candidate_filter=None))
    assert unfiltered.sum() == 2 * 4 * 49 + 16
    f = CandidateFilter(min_peak_probability=0.9, min_volume_ml=0.0, min_slices=2)
    kept = postprocess(prob, region, 0.01, PostProcess(min_volume_ml=0.0, candidate_filter=f))
    assert kept.sum() == 4 * 49 and kept[3, 8, 8]
    # "model" without a loaded model means no filter at all
    assert postprocess(prob, region, 0.01, PostProcess(min_volume_ml=0.0)).sum() == unfiltered.sum()


def test_ring_of_lung_and_mean_hu_separate_a_lung_lesion_from_mediastinal_tissue():
    """A lesion surrounded by lung keeps a ring of lung around it; a blob in the mediastinum does not;
    a contrast-dense one is denser than a tumour (ring width and HU in physical units)."""
    shape = (8, 60, 80)
    hu = np.full(shape, 40, np.int16)  # soft tissue everywhere ...
    lungs = np.zeros(shape, bool)
    lungs[:, 5:55, 5:35] = True  # ... but one lung
    hu[lungs] = -850
    prob = np.zeros(shape, np.float32)
    prob[2:6, 25:33, 15:23] = 0.95  # inside the lung
    hu[2:6, 25:33, 15:23] = 20
    lungs[2:6, 25:33, 15:23] = True  # the tight lungs hold an interior nodule (holes filled)
    prob[2:6, 25:33, 55:63] = 0.95  # mediastinum
    prob[2:6, 40:48, 55:63] = 0.95  # mediastinum, contrast-filled vessel
    hu[2:6, 40:48, 55:63] = 220
    context = CandidateContext(hu, lungs, (3.0, 0.8, 0.8))
    labels, rows = candidates(prob, np.ones(shape, bool), 0.002, context=context)
    by_x = {int(np.nonzero(labels == r["label"])[2].min()): r for r in rows}
    inside = by_x[15]
    mediastinal = [r for r in rows if r is not inside]
    assert len(rows) == 3 and len(mediastinal) == 2
    assert inside["ring_lung"] > 0.95 and inside["mean_hu"] == pytest.approx(20)
    assert all(r["ring_lung"] == 0.0 for r in mediastinal)
    assert sorted(r["mean_hu"] for r in rows) == pytest.approx([20, 40, 220])
    f = CandidateFilter(min_ring_lung=0.5, max_mean_hu=100.0)
    kept = postprocess(prob, np.ones(shape, bool), 0.002, PostProcess(min_volume_ml=0.0, candidate_filter=f), context)
    assert kept[3, 28, 18] and not kept[3, 28, 58] and not kept[3, 44, 58]
    assert CandidateFilter.from_meta({"candidate_filter": f.__dict__}) == f
    # without the CT and lungs the ring rule cannot be judged, and keeps the candidate
    assert postprocess(prob, np.ones(shape, bool), 0.002, PostProcess(min_volume_ml=0.0, candidate_filter=f)).sum() == (prob > 0.5).sum()


def test_candidate_filter_volume_rule_and_meta_round_trip():
    rows = [{"label": 1, "volume_ml": 0.3, "inside_region": 1.0, "peak_probability": 0.99, "slices": 3},
            {"label": 2, "volume_ml": 5.0, "inside_region": 1.0, "peak_probability": 0.99, "slices": 3}]
    f = CandidateFilter(0.5, 1.0, 1)
    assert kept_labels(rows, PostProcess(candidate_filter=f)) == [2]
    assert CandidateFilter.from_meta({"candidate_filter": f.__dict__}) == f
    assert CandidateFilter.from_meta({}) is None


def test_shipped_model_carries_a_calibrated_filter():
    from lungseg.tumour.segment import DEFAULT_MODEL, TumourPredictor

    predictor = TumourPredictor(DEFAULT_MODEL, "cpu")
    assert isinstance(predictor.candidate_filter, CandidateFilter)
    assert predictor.candidate_filter.min_peak_probability >= 0.5


def test_a_new_filter_written_into_the_weights_is_a_new_model_version(tmp_path):
    """Cached automatic contours and study records are keyed by the version: rewriting the filter (or
    the second stage) into the same weights file must change it, else stale contours are served."""
    import torch

    from lungseg.tumour.segment import DEFAULT_MODEL, TumourPredictor

    payload = torch.load(DEFAULT_MODEL, weights_only=True)
    path = tmp_path / "lungseg_unet.pt"
    torch.save(payload, path)
    before = TumourPredictor(path, "cpu").version
    payload["meta"]["candidate_filter"]["min_slices"] += 1
    torch.save(payload, path)
    after = TumourPredictor(path, "cpu").version
    assert before != after and before.startswith("lungseg_unet-") and after.startswith("lungseg_unet-")


def _host():
    """A 60 mm lung block (−850 HU) in soft tissue, 1 mm × 1 mm × 3 mm voxels."""
    hu = np.full((30, 100, 100), 40, np.int16)
    lungs = np.zeros(hu.shape, bool)
    lungs[3:27, 20:80, 20:80] = True
    hu[lungs] = -850
    return hu, lungs


def _nodule(radius_mm=5.0, spacing=(1.0, 0.7, 0.7)):
    zz, yy, xx = np.mgrid[-12:13, -16:17, -16:17] * np.asarray(spacing)[:, None, None, None]
    mask = zz ** 2 + yy ** 2 + xx ** 2 <= radius_mm ** 2
    hu = np.where(mask, 30.0, -850.0).astype(np.float32)
    return hu, mask


def test_resample_crop_keeps_the_nodule_volume():
    hu, mask = _nodule(5.0)
    hu_r, mask_r = resample_crop(hu, mask, (1.0, 0.7, 0.7), (3.0, 1.0, 1.0))
    v_in = mask.sum() * 0.49
    v_out = mask_r.sum() * 3.0
    assert v_out == pytest.approx(v_in, rel=0.25)
    assert hu_r.shape[0] < hu.shape[0] and hu_r[mask_r].mean() > -300


def test_placed_nodules_lie_inside_the_lungs_with_a_blended_edge():
    hu, lungs = _host()
    spacing = (3.0, 1.0, 1.0)
    crop = resample_crop(*_nodule(4.0), (1.0, 0.7, 0.7), spacing)
    sites = HostSites.of(hu, lungs, np.zeros_like(lungs), spacing, PlacementParams(juxtapleural_share=0.0))
    out, placed, records = place_nodules(hu, sites, spacing, [crop, crop], np.random.default_rng(1),
                                         PlacementParams(juxtapleural_share=0.0))
    assert [r["placed"] for r in records] == [True, True]
    assert placed.any() and not (placed & ~lungs).any()
    assert out[placed].max() > 0 and out[placed].mean() > -450  # the nodule's own HU (partial volume at its caps)
    ring = np.zeros_like(placed)
    from scipy import ndimage as ndi

    ring = ndi.binary_dilation(placed, np.ones((1, 3, 3), bool)) & ~placed
    assert -850 < out[ring].mean() < -100  # blended, not a step from −850 to 30
    assert out[~ndi.binary_dilation(placed, np.ones((3, 9, 9), bool))].tolist() == hu[
        ~ndi.binary_dilation(placed, np.ones((3, 9, 9), bool))].tolist()


def test_no_place_for_a_nodule_is_reported_not_forced():
    hu, lungs = _host()
    spacing = (3.0, 1.0, 1.0)
    big = resample_crop(*_nodule(12.0, (1.0, 1.0, 1.0)), (1.0, 1.0, 1.0), spacing)
    tiny_lungs = np.zeros_like(lungs)
    tiny_lungs[10:12, 40:45, 40:45] = True
    sites = HostSites.of(hu, tiny_lungs, np.zeros_like(lungs), spacing, PlacementParams(juxtapleural_share=0.0))
    out, placed, records = place_nodules(hu, sites, spacing, [big], np.random.default_rng(0), PlacementParams(juxtapleural_share=0.0))
    assert records == [{"index": 0, "placed": False}] and not placed.any()
    assert np.array_equal(out, hu.astype(np.float32))
