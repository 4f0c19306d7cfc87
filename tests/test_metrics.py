import math

import numpy as np
import pytest

from lungseg.metrics import (
    dice,
    evaluate_case,
    hd95,
    lesion_detection,
    surface_dice,
    surface_distances,
    surface_voxels,
    volume_difference,
)

LINE_SPACING = (3.0, 2.0, 1.5)  # z, y, x mm


def lines():
    """Reference: 10 voxels along x; prediction: the same line two voxels longer. One voxel thick
    in z and y, so every voxel is a surface voxel."""
    ref = np.zeros((1, 1, 14), bool)
    pred = np.zeros((1, 1, 14), bool)
    ref[0, 0, :10] = True
    pred[0, 0, :12] = True
    return pred, ref


def test_dice_by_hand():
    pred = np.zeros((2, 3, 3), bool)
    ref = np.zeros((2, 3, 3), bool)
    pred[0, 0, :] = True
    pred[1, 0, 0] = True  # 4 voxels
    ref[0, 0, :] = True
    ref[1, 1, :] = True  # 6 voxels, 3 shared
    assert dice(pred, ref) == pytest.approx(2 * 3 / 10)


def test_line_case_by_hand():
    pred, ref = lines()
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, LINE_SPACING)
    assert sorted(pred_to_ref) == [0.0] * 10 + [1.5, 3.0]
    assert np.all(ref_to_pred == 0.0)
    # P95 of [0 ×10, 1.5, 3.0], linear: rank 0.95 × 11 = 10.45 → 1.5 + 0.45 × 1.5
    assert hd95(pred, ref, LINE_SPACING) == pytest.approx(2.175)
    # within 2 mm: 11 of 12 prediction voxels and all 10 reference voxels
    assert surface_dice(pred, ref, LINE_SPACING, 2.0) == pytest.approx(21 / 22)
    assert surface_dice(pred, ref, LINE_SPACING, 3.0) == pytest.approx(1.0)
    assert dice(pred, ref) == pytest.approx(20 / 22)


def test_anisotropic_spacing_decides_the_distance():
    ref = np.zeros((3, 5, 5), bool)
    pred = np.zeros((3, 5, 5), bool)
    ref[0] = True
    pred[1] = True  # one slice higher
    thick = (2.5, 0.7, 0.7)
    assert hd95(pred, ref, thick) == pytest.approx(2.5)
    assert surface_dice(pred, ref, thick, 2.0) == 0.0
    assert surface_dice(pred, ref, thick, 3.0) == 1.0
    thin = (1.0, 0.7, 0.7)
    assert hd95(pred, ref, thin) == pytest.approx(1.0)
    assert surface_dice(pred, ref, thin, 2.0) == 1.0
    assert dice(pred, ref) == 0.0


def test_surface_is_the_erosion_border():
    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    assert surface_voxels(cube).sum() == 125 - 27
    touching_edge = np.ones((3, 3, 3), bool)
    assert surface_voxels(touching_edge).sum() == 26  # outside the array is background


def test_shifted_cube_hd95_and_symmetry():
    ref = np.zeros((10, 10, 10), bool)
    ref[2:7, 2:7, 2:7] = True
    pred = np.roll(ref, 2, axis=2)  # shifted by 2 voxels along x
    spacing = (2.0, 1.0, 0.5)
    # every surface voxel has a surface voxel of the other cube within 2 × 0.5 mm = 1 mm
    assert hd95(pred, ref, spacing) == pytest.approx(1.0)
    assert hd95(pred, ref, spacing) == hd95(ref, pred, spacing)
    assert surface_dice(pred, ref, spacing, 1.0) == 1.0
    assert surface_dice(pred, ref, spacing, 0.4) < 1.0


def test_result_does_not_depend_on_the_array_around_the_masks():
    pred, ref = lines()
    big_pred = np.zeros((9, 9, 30), bool)
    big_ref = np.zeros((9, 9, 30), bool)
    big_pred[4:5, 4:5, 8:22] = pred
    big_ref[4:5, 4:5, 8:22] = ref
    assert evaluate_case(big_pred, big_ref, LINE_SPACING) == evaluate_case(pred, ref, LINE_SPACING)


def test_empty_masks():
    empty = np.zeros((4, 4, 4), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    both_empty = evaluate_case(empty, empty, (1, 1, 1))
    assert (both_empty["dice"], both_empty["hd95_mm"], both_empty["surface_dice"]) == (1.0, 0.0, 1.0)
    assert both_empty["volume_difference_percent"] == 0.0
    for pred, ref in ((empty, full), (full, empty)):
        one_empty = evaluate_case(pred, ref, (1, 1, 1))
        assert one_empty["dice"] == 0.0
        assert math.isinf(one_empty["hd95_mm"])
        assert one_empty["surface_dice"] == 0.0
    assert math.isinf(evaluate_case(full, empty, (1, 1, 1))["volume_difference_percent"])


def test_volume_difference_by_hand():
    pred, ref = lines()
    volumes = volume_difference(pred, ref, LINE_SPACING)  # voxel = 9 mm³
    assert volumes.pred_ml == pytest.approx(0.108)
    assert volumes.ref_ml == pytest.approx(0.090)
    assert volumes.difference_ml == pytest.approx(0.018)
    assert volumes.difference_percent == pytest.approx(20.0)


def test_lesion_detection_with_26_connectivity():
    ref = np.zeros((8, 8, 8), bool)
    ref[1:3, 1:3, 1:3] = True  # lesion A
    ref[5:7, 5:7, 1:3] = True  # lesion B
    pred = np.zeros_like(ref)
    pred[2:4, 2:4, 2:4] = True  # overlaps A
    pred[5, 1, 6] = True  # false positive: two voxels that touch only at a corner ...
    pred[6, 2, 7] = True  # ... form one 26-connected lesion
    result = lesion_detection(pred, ref)
    assert (result.reference_lesions, result.predicted_lesions) == (2, 2)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 1, 1)
    assert result.detected_reference_lesions == 1


def test_evaluate_case_collects_everything():
    pred, ref = lines()
    result = evaluate_case(pred, ref, LINE_SPACING)
    assert result["dice"] == pytest.approx(20 / 22)
    assert result["hd95_mm"] == pytest.approx(2.175)
    assert result["surface_dice"] == pytest.approx(21 / 22)
    assert result["surface_dice_tolerance_mm"] == 2.0
    assert result["volume_difference_percent"] == pytest.approx(20.0)
    assert (result["lesion_true_positives"], result["lesion_false_positives"], result["lesion_false_negatives"]) == (1, 0, 0)


def test_two_dimensional_masks_and_bad_input():
    ref = np.zeros((6, 6), bool)
    ref[1:4, 1:4] = True
    pred = np.roll(ref, 1, axis=0)
    assert hd95(pred, ref, (2.0, 1.0)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        hd95(pred, ref, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        dice(pred, ref[:5])
