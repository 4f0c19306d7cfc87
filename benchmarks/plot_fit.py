"""Training figures (loss, Dice, learning rate) of a model trained by :mod:`lungseg.tumour.fit`, from
the history stored in its meta; an "epoch" is steps / 60, as in training.

    python benchmarks/plot_fit.py models/lungseg_unet.pt docs/training
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from _common import REPO  # noqa: F401  (puts the repo on sys.path)

from lungseg.tumour.fit import learning_rate, warmup_steps
from lungseg.tumour.losses import LossSchedule
from lungseg.tumour.train import History, plot_history


def history_of(meta: dict) -> History:
    fit, h = meta["fit"], meta["history"]
    steps, epochs, lr = fit["steps"], fit["epochs"], fit["lr"]
    schedule = LossSchedule(**fit["loss_schedule"])
    warmup = warmup_steps(steps)
    out = History()
    for step, loss, dice in zip(h["step"], h["loss"], h["dice"]):
        epoch = (step - 1) * epochs // steps
        rate = learning_rate(step - 1, steps, lr, warmup)  # the rate of the step that ended the record
        dw, bw = schedule.weights(epoch)
        out.append(epoch=round(step * epochs / steps, 2), loss=loss, val_loss=None, dice=dice, val_dice=None, lr=rate,
                   dice_weight=dw, bce_weight=bw, seconds=0.0)
    return out


def main():
    model, out = Path(sys.argv[1]), Path(sys.argv[2])
    meta = torch.load(model, map_location="cpu", weights_only=True)["meta"]
    history = history_of(meta)
    written = plot_history(history, out, self_contained_html=False)
    (model.with_suffix(".history.json")).write_text(json.dumps(history.as_dict(), indent=1))
    print("\n".join(str(p) for p in written.values()))


if __name__ == "__main__":
    main()
