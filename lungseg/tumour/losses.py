"""Dice + BCE loss with the seed's schedule: the Dice term is privileged for the first epochs.

Default weights (:class:`LossSchedule`):

* epochs ``0 … switch_epoch − 1`` (the first 50 epochs, epochs counted from 0):
  ``0.9 · Dice loss + 0.1 · BCE``;
* from epoch ``switch_epoch`` (50) on: ``0.5 · Dice loss + 0.5 · BCE``.

The Dice term is a soft Dice over the whole batch (all pixels of all slices pooled, with a smooth
term of 1), so batches that mix tumour slices and tumour-free negative slices give a stable
value, and an all-negative batch predicted all-negative has Dice loss ≈ 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class LossSchedule:
    """Weights of the Dice and BCE terms before and after ``switch_epoch`` (0-based epochs)."""

    dice_weight_early: float = 0.9
    bce_weight_early: float = 0.1
    dice_weight_late: float = 0.5
    bce_weight_late: float = 0.5
    switch_epoch: int = 50

    def weights(self, epoch: int) -> tuple[float, float]:
        """``(dice_weight, bce_weight)`` for 0-based ``epoch``: early weights while
        ``epoch < switch_epoch``, late weights from ``switch_epoch`` on."""
        if epoch < self.switch_epoch:
            return self.dice_weight_early, self.bce_weight_early
        return self.dice_weight_late, self.bce_weight_late

    def as_dict(self) -> dict:
        return asdict(self)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 − (2·Σ p·t + smooth) / (Σ p + Σ t + smooth)`` with ``p = sigmoid(logits)``, the sums
    running over every pixel of the batch. Computed in float32."""
    probabilities = torch.sigmoid(logits.float())
    target = target.float()
    intersection = (probabilities * target).sum()
    total = probabilities.sum() + target.sum()
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


class DiceBCELoss(nn.Module):
    """``dice_weight(epoch) · soft Dice loss + bce_weight(epoch) · BCE with logits``.

    ``forward(logits, target, epoch)``: ``logits`` and ``target`` have the same shape; ``target``
    is 0/1 (bool or float). ``pos_weight`` (optional) up-weights tumour pixels in the BCE term.
    """

    def __init__(self, schedule: LossSchedule = LossSchedule(), smooth: float = 1.0, pos_weight: float | None = None):
        super().__init__()
        self.schedule = schedule
        self.smooth = smooth
        self.pos_weight = pos_weight

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unweighted ``(dice_loss, bce)`` terms."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.float()
        dice = soft_dice_loss(logits, target, self.smooth)
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = torch.tensor(self.pos_weight, device=logits.device, dtype=torch.float32)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight)
        return dice, bce

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        dice_weight, bce_weight = self.schedule.weights(epoch)
        dice, bce = self.components(logits, target)
        return dice_weight * dice + bce_weight * bce
