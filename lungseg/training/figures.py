"""Training figures of a fitted U-Net (loss, Dice on the pasted samples, learning rate) from the history
in its meta; an "epoch" is steps / 60, as in training."""

from __future__ import annotations

from pathlib import Path


def write_figures(meta: dict, out_dir: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lungseg.training.fit import learning_rate, warmup_steps

    fit, h = meta["fit"], meta["history"]
    steps, epochs = fit["steps"], fit["epochs"]
    x = [s * epochs / max(steps, 1) for s in h["step"]]
    rates = [learning_rate(s - 1, steps, fit["lr"], warmup_steps(steps)) for s in h["step"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, values, log in (("loss", "Loss (Dice + BCE), training samples", h["loss"], False),
                                     ("dice", "Dice (threshold 0.5), training samples", h["dice"], False),
                                     ("learning_rate", "Learning rate", rates, True)):
        figure = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(x, values, marker="o" if len(x) < 30 else None)
        axes.set_xlabel("epoch (steps / 60 of the run)")
        axes.set_title(title)
        if log and all(v > 0 for v in values):
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        figure.savefig(path)
        written.append(path)
    return written
