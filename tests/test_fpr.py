"""The second stage of the automatic model: candidate patches and the lesion classifier."""

import numpy as np
import pytest
import torch

from lungseg.tumour.fpr import (PATCH_MM, PATCH_SHAPE, CandidateScorer, LesionClassifier, candidate_patches,
                                feature_vector, train_classifier)
from lungseg.tumour.segment import CandidateContext, CandidateFilter, PostProcess, candidates, postprocess


def _scan(spacing_zyx=(2.0, 0.7, 0.7), shape=(30, 120, 120)):
    """Lung (-850 HU) with a 10 mm solid nodule (radius 5 mm) off-centre and a vessel running along z."""
    hu = np.full(shape, -850, np.int16)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = (14, 40, 70)
    d2 = sum(((a - c) * s) ** 2 for a, c, s in zip((z, y, x), centre, spacing_zyx))
    nodule = d2 <= 5.0**2
    vessel = (((y - 90) * spacing_zyx[1]) ** 2 + ((x - 30) * spacing_zyx[2]) ** 2 <= 2.0**2) & (z >= 0)
    hu[nodule | vessel] = 30
    prob = np.where(nodule, 0.95, np.where(vessel, 0.7, 0.0)).astype(np.float32)
    return hu, prob, nodule, centre


def test_patch_is_centred_on_the_candidate_in_millimetres():
    spacing = (2.0, 0.7, 0.7)
    hu, prob, nodule, centre = _scan(spacing)
    labels, rows = candidates(prob, np.ones(hu.shape, bool), 0.001)
    nodule_label = int(labels[centre])
    whole = tuple(slice(0, n) for n in hu.shape)
    from scipy import ndimage as ndi

    patch = candidate_patches(hu, prob, labels, whole, ndi.find_objects(labels), spacing, [nodule_label])[nodule_label]
    assert patch.shape == (3 * PATCH_SHAPE[0],) + PATCH_SHAPE[1:] and patch.dtype == np.float16
    mid = PATCH_SHAPE[0] // 2
    mask_centre = patch[PATCH_SHAPE[0] + mid].astype(np.float32)
    # 10 mm across at 1.5 mm pixels: 6-7 pixels wide in the patch, whatever the scan's 0.7 mm pixels
    width = (mask_centre[15:17].max(axis=0) >= 0.5).sum()
    assert 6 <= width <= 8, width
    ys, xs = np.nonzero(mask_centre >= 0.5)
    assert abs(ys.mean() - 15.5) < 0.6 and abs(xs.mean() - 15.5) < 0.6
    # CT channel: soft tissue at the centre, lung at the corner; probability channel follows the map
    assert patch[mid, 16, 16] > 0.6 and patch[mid, 0, 0] < 0.15
    assert patch[2 * PATCH_SHAPE[0] + mid, 16, 16] == pytest.approx(0.95, abs=0.01)
    # slices 3 mm apart: 15 mm of z around the centre; the outer slices (±6 mm) miss a 5 mm-radius nodule
    assert patch[PATCH_SHAPE[0]].max() < 0.5 and patch[PATCH_SHAPE[0] + mid].max() == pytest.approx(1.0)
    assert PATCH_MM == (3.0, 1.5, 1.5)


def test_patch_near_the_scan_edge_reads_air_outside():
    hu, prob, _, _ = _scan()
    hu = hu[:, :60, 45:]  # the nodule sits 25 pixels (17 mm) from the new left edge, the patch reaches 24 mm
    prob = prob[:, :60, 45:]
    labels, rows = candidates(prob, np.ones(hu.shape, bool), 0.001)
    from scipy import ndimage as ndi

    whole = tuple(slice(0, n) for n in hu.shape)
    patches = candidate_patches(hu, prob, labels, whole, ndi.find_objects(labels), (2.0, 0.7, 0.7), [r["label"] for r in rows])
    assert len(patches) == len(rows)
    p = next(iter(patches.values()))
    assert p[2, :, 0].max() == 0.0  # outside the scan: -1000 HU, the bottom of the window


def _training_set(n: int, rng):
    """Round blobs (lesions) against tubes crossing the patch (vessels), with noise: a task a working
    classifier learns in a few epochs."""
    patches = np.zeros((n, 15, 32, 32), np.float32)
    y = np.zeros(n, np.float32)
    yy, xx = np.mgrid[:32, :32]
    for i in range(n):
        lesion = i % 2 == 0
        r = rng.uniform(3, 6)
        cy, cx = 16 + rng.normal(0, 1, 2)
        if lesion:
            shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        else:
            angle = rng.uniform(0, np.pi)
            shape = np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)) <= r / 2
        img = np.where(shape, 0.75, 0.1) + rng.normal(0, 0.05, (32, 32))
        patches[i, :5] = img
        patches[i, 5:10] = shape
        patches[i, 10:] = shape * 0.8
        y[i] = lesion
    features = np.tile(np.array([0.0, 0.9, 0.95, 0.6, 0.0, 0.3], np.float32), (n, 1))
    return patches.astype(np.float16), features, y


def test_classifier_learns_lesions_from_vessels_and_survives_the_payload(tmp_path):
    rng = np.random.default_rng(0)
    x, f, y = _training_set(256, rng)
    scorer = train_classifier(x, f, y, epochs=8, batch_size=32, seed=0, log=None)
    xt, ft, yt = _training_set(64, np.random.default_rng(1))
    s = scorer.score(xt, ft)
    assert s[yt == 1].min() > s[yt == 0].max() or (np.mean(s[yt == 1] > 0.5) > 0.9 and np.mean(s[yt == 0] < 0.5) > 0.9)
    path = tmp_path / "c.pt"
    torch.save(scorer.to_payload(), path)
    again = CandidateScorer.from_payload(torch.load(path, weights_only=True))
    np.testing.assert_allclose(again.score(xt, ft), s, atol=0.02)  # stored as float16
    # an ensemble of seeds scores the mean of its members, and survives the payload too
    other = train_classifier(x, f, y, epochs=8, batch_size=32, seed=1, log=None)
    both = CandidateScorer.ensemble([scorer, other])
    np.testing.assert_allclose(both.score(xt, ft), (s + other.score(xt, ft)) / 2, atol=1e-5)
    torch.save(both.to_payload(), path)
    np.testing.assert_allclose(CandidateScorer.from_payload(torch.load(path, weights_only=True)).score(xt, ft),
                               both.score(xt, ft), atol=0.02)


class _ScoreBySize:
    """Scores a candidate by the width of its patch's mask: stands in for a trained classifier to check
    how postprocess uses one."""

    def __init__(self):
        self.seen = 0

    def score(self, patches, features):
        self.seen += len(patches)
        return np.array([float((p[7].astype(np.float32) >= 0.5).sum() > 28) for p in patches])


def test_postprocess_asks_the_classifier_only_about_candidates_the_rules_keep():
    hu, prob, nodule, centre = _scan()
    prob[2, 100:103, 100:103] = 0.9  # a one-slice speck: dropped by the rules before the classifier
    lungs = hu < -500
    context = CandidateContext(hu, lungs, (2.0, 0.7, 0.7))
    scorer = _ScoreBySize()
    f = CandidateFilter(min_slices=2, min_lesion_score=0.5)
    kept = postprocess(prob, np.ones(hu.shape, bool), 0.001, PostProcess(min_volume_ml=0.0, candidate_filter=f), context, scorer)
    assert scorer.seen == 2  # nodule and vessel, not the speck
    assert kept[centre] and not kept[15, 90, 30]  # the vessel's patch is a thin disc: score 0
    # without a threshold the classifier is never asked
    scorer2 = _ScoreBySize()
    postprocess(prob, np.ones(hu.shape, bool), 0.001, PostProcess(min_volume_ml=0.0, candidate_filter=CandidateFilter(min_slices=2)),
                context, scorer2)
    assert scorer2.seen == 0


def test_feature_vector_is_finite_for_every_candidate():
    hu, prob, _, _ = _scan()
    _, rows = candidates(prob, np.ones(hu.shape, bool), 0.001, context=CandidateContext(hu, hu < -500, (2.0, 0.7, 0.7)))
    vectors = np.stack([feature_vector(r) for r in rows])
    assert vectors.shape == (len(rows), LesionClassifier().architecture["n_features"]) and np.isfinite(vectors).all()
