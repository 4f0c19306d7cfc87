import math

import pytest
import torch

from lungseg.tumour.losses import DiceBCELoss, LossSchedule, soft_dice_loss


def test_schedule_switches_at_epoch_50():
    schedule = LossSchedule()
    assert schedule.weights(0) == (0.9, 0.1)
    assert schedule.weights(49) == (0.9, 0.1)
    assert schedule.weights(50) == (0.5, 0.5)
    assert schedule.weights(200) == (0.5, 0.5)


def test_custom_schedule():
    schedule = LossSchedule(dice_weight_early=1.0, bce_weight_early=0.0, dice_weight_late=0.3, bce_weight_late=0.7, switch_epoch=5)
    assert schedule.weights(4) == (1.0, 0.0)
    assert schedule.weights(5) == (0.3, 0.7)


def test_soft_dice_by_hand():
    logits = torch.zeros(1, 1, 2, 4)  # p = 0.5 everywhere
    target = torch.tensor([[[[1, 1, 0, 0], [1, 1, 0, 0]]]], dtype=torch.float32)
    # intersection 2, sum p 4, sum t 4: 1 - (4 + 1) / (8 + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(4 / 9, abs=1e-6)


def test_perfect_and_empty_predictions_have_no_dice_loss():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    assert soft_dice_loss(torch.where(target > 0, 50.0, -50.0), target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(2, 1, 8, 8)
    assert soft_dice_loss(torch.full_like(empty, -50.0), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_combined_loss_uses_the_epoch_weights():
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 16, 16)
    target = (torch.rand(4, 1, 16, 16) > 0.7).float()
    loss = DiceBCELoss()
    dice, bce = loss.components(logits, target)
    assert loss(logits, target, epoch=10).item() == pytest.approx((0.9 * dice + 0.1 * bce).item(), rel=1e-6)
    assert loss(logits, target, epoch=60).item() == pytest.approx((0.5 * dice + 0.5 * bce).item(), rel=1e-6)
    _, bce_at_zero = loss.components(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert bce_at_zero.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_loss_has_gradients_and_accepts_bool_targets():
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.rand(2, 1, 8, 8) > 0.5
    DiceBCELoss()(logits, target, epoch=0).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        DiceBCELoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4))
