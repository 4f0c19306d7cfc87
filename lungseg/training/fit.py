"""Fit the automatic model's U-Net from a training pack (:mod:`lungseg.training.pack`), on the GPU
when there is one.  Needs only PyTorch, NumPy and SciPy.

Samples are made on the fly by :func:`lungseg.tumour.paste.make_sample` in data-loader workers (2.5D:
the slice and its neighbours as channels; real lesions pasted into real lungs), then the seed's
augmentation (shift, rotation, zoom) is applied to the batch on the device.  Loss: Dice + BCE, the
Dice term privileged (0.9 / 0.1) for the first 50 of 60 epochs, 0.5 / 0.5 after; an epoch is
``steps / 60`` optimiser steps.  AdamW with a linear warm-up and a cosine decay to 1 %; bf16 autocast
on a GPU.

Sample ``i`` of the run is made from the seed and ``i`` alone, and the augmentation's generator, the
weights and the optimiser are checkpointed together, so a run killed and resumed from its checkpoint
ends with the weights an uninterrupted run with the same seed ends with.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lungseg.tumour.augment import Augmentation, augment_batch
from lungseg.tumour.losses import DiceBCELoss, LossSchedule
from lungseg.tumour.paste import PasteParams, make_sample, sprite_bank
from lungseg.tumour.unet import UNet2D, UNetConfig, save_model

EPOCHS = 60
VERSION = "real-lesions-2"


class PastedSamples(Dataset):
    """Samples ``first`` … ``length - 1`` of a run; sample ``i`` depends on ``(seed, i)`` only."""

    def __init__(self, hosts, bank, params: PasteParams, seed: int, length: int, first: int = 0):
        self.hosts, self.bank, self.params, self.seed, self.length, self.first = hosts, bank, params, seed, length, first

    def __len__(self):
        return self.length - self.first

    def __getitem__(self, i):
        image, target = make_sample(self.hosts, self.bank, np.random.default_rng([self.seed, self.first + i]), self.params)
        return torch.from_numpy(image), torch.from_numpy(target[None].astype(np.float32))


def learning_rate(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 1 % of ``lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def warmup_steps(steps: int) -> int:
    return min(200, steps // 10)


@dataclass(frozen=True)
class Variant:
    """One network trained on the shared batches: width and 2.5D context."""

    base_channels: int = 16
    context: int = 1

    @property
    def name(self) -> str:
        return f"b{self.base_channels}c{self.context}"

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """``b16c1`` → base 16 channels, one neighbour slice each side."""
        base, context = text.lstrip("b").split("c")
        return cls(int(base), int(context))


@dataclass(frozen=True)
class FitParams:
    steps: int = 3500
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    workers: int = 4  # data-loader processes making samples (0: in the training process)
    budget_s: float | None = None  # cap on the wall time: the remaining steps are cut (never added)
    checkpoint_every: int = 25  # steps
    log_every: int = 25  # steps
    variants: tuple[Variant, ...] = (Variant(),)
    paste: PasteParams = field(default_factory=PasteParams)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def fit(pack: str | Path, hosts: list[str], out: str | Path, params: FitParams = FitParams(), device: str = "auto",
        resume: bool = True, log=print, stop_after: int | None = None) -> list[Path]:
    """Train every variant on the same batches; one ``out/VARIANT/model.pt`` each, or ``out/model.pt``
    with one variant.  ``out/checkpoint.pt`` holds the run's state every ``checkpoint_every`` steps and
    is picked up when ``resume``.  ``stop_after`` ends the process's work after that many steps (tests)."""
    from lungseg.training.pack import load

    t0 = time.perf_counter()
    out = Path(out)
    variants = list(params.variants)
    paste = replace(params.paste, context=max(v.context for v in variants))
    all_hosts, nodules, info = load(pack)
    chosen = [all_hosts[h] for h in hosts]
    bank = sprite_bank(nodules, chosen, np.random.default_rng([params.seed, 99]))
    log(f"{len(chosen)} hosts ({', '.join(hosts)}), sprites: " + ", ".join(f"{k} {len(v)}" for k, v in bank.items()))
    dev = _device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    nets = []
    for v in variants:
        torch.manual_seed(params.seed)
        model = UNet2D(**asdict(UNetConfig(in_channels=2 * v.context + 1, base_channels=v.base_channels))).to(dev)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        nets.append({"variant": v, "model": model,
                     "optimiser": torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=1e-4),
                     "history": {"step": [], "loss": [], "dice": []}, "running": [0.0, 0.0, 0.0]})
    generator = torch.Generator().manual_seed(params.seed)
    steps, step, count, budget_checked = params.steps, 0, 0, False
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        step, steps, count, budget_checked = state["step"], state["steps"], state["count"], state["budget_checked"]
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for net, saved in zip(nets, state["nets"]):
            net["model"].load_state_dict(saved["model"])
            net["optimiser"].load_state_dict(saved["optimiser"])
            net["history"], net["running"] = saved["history"], saved["running"]
        log(f"resumed from {checkpoint} at step {step}/{steps}")
    schedule = LossSchedule()
    loss_fn = DiceBCELoss(schedule)
    augmentation = Augmentation()
    loader = DataLoader(PastedSamples(chosen, bank, paste, params.seed, steps * params.batch_size, step * params.batch_size),
                        batch_size=params.batch_size, num_workers=params.workers, pin_memory=cuda, drop_last=True,
                        persistent_workers=False, prefetch_factor=4 if params.workers else None)
    warmup = warmup_steps(steps)
    started, first_step = time.perf_counter(), step
    timed_from = None

    def save_checkpoint():
        state = {"step": step, "steps": steps, "count": count, "budget_checked": budget_checked,
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "nets": [{"model": n["model"].state_dict(), "optimiser": n["optimiser"].state_dict(),
                           "history": n["history"], "running": n["running"]} for n in nets]}
        tmp = checkpoint.with_suffix(".tmp")
        out.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        tmp.replace(checkpoint)

    for images, targets in loader:
        if step >= steps or (stop_after is not None and step - first_step >= stop_after):
            break
        if step - first_step == 10:
            timed_from = time.perf_counter()
        if params.budget_s and not budget_checked and step - first_step == 30:  # timed after worker start, autotuning
            per_step = (time.perf_counter() - timed_from) / 20
            steps = min(steps, max(step + 10, int((params.budget_s - (time.perf_counter() - t0)) / per_step) + step))
            warmup = min(warmup, warmup_steps(steps))
            budget_checked = True
            log(f"{per_step * 1000:.0f} ms per step: {steps} steps in the budget of {params.budget_s:.0f} s")
        epoch = step * EPOCHS // steps
        rate = learning_rate(step, steps, params.lr, warmup)
        images = images.to(dev, non_blocking=True)
        targets = targets.to(dev, non_blocking=True)
        images, targets = augment_batch(images, targets, augmentation, generator)
        reference = targets > 0.5
        for net in nets:
            c, k = paste.context, net["variant"].context
            x = images[:, c - k:c + k + 1]
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            for group in net["optimiser"].param_groups:
                group["lr"] = rate
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                logits = net["model"](x)
            loss = loss_fn(logits.float(), targets, epoch)
            net["optimiser"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net["model"].parameters(), 1.0)
            net["optimiser"].step()
            predicted = logits.detach() > 0
            r = net["running"]
            r[0] += float(loss.detach())
            r[1] += float((predicted & reference).sum())
            r[2] += float(predicted.sum() + reference.sum())
        count += 1
        step += 1
        if step % params.log_every == 0 or step == steps:
            line = []
            for net in nets:
                r, h = net["running"], net["history"]
                h["step"].append(step)
                h["loss"].append(r[0] / count)
                h["dice"].append(2 * r[1] / max(r[2], 1))
                line.append(f"{net['variant'].name} loss {h['loss'][-1]:.4f} dice {h['dice'][-1]:.3f}")
                net["running"] = [0.0, 0.0, 0.0]
            count = 0
            elapsed = time.perf_counter() - started
            left = elapsed / max(step - first_step, 1) * (steps - step)
            log(f"step {step}/{steps} epoch {epoch} lr {rate:.2e} {elapsed:.0f} s, about {_eta(left)} left | " + " | ".join(line))
        if step % params.checkpoint_every == 0 and step < steps:
            save_checkpoint()
    if step < steps:  # stopped early on purpose (stop_after): keep the state for a resume
        save_checkpoint()
        return []
    seconds = time.perf_counter() - t0
    paths = []
    for net in nets:
        v = net["variant"]
        out_dir = out / v.name if len(nets) > 1 else out
        meta = {"version": VERSION, "in_plane_mm": info["in_plane_mm"], "context_slices": v.context,
                "window": info["window"], "air_value": 0.0, "training_hosts": hosts,
                "lidc_train_nodules": info["nodules"], "lidc_train_patients": info["nodule_patients"],
                "paste": asdict(replace(paste, context=v.context)), "sprites": {k: len(b) for k, b in bank.items()},
                "fit": {"steps": step, "batch_size": params.batch_size, "lr": params.lr, "epochs": EPOCHS, "seed": params.seed,
                        "variants_trained_together": [n["variant"].name for n in nets],
                        "loss_schedule": schedule.as_dict(), "augmentation": augmentation.as_dict(),
                        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "mixed_precision": "bf16" if cuda else None,
                        "workers": params.workers, "seconds": round(seconds, 1), "torch": torch.__version__},
                "history": net["history"]}
        paths.append(save_model(net["model"], out_dir / "model.pt", meta))
        log(f"wrote {paths[-1]} after {step} steps in {seconds:.0f} s")
    checkpoint.unlink(missing_ok=True)
    return paths


def main(argv=None):
    """One fit as its own process: ``python -m lungseg.training.fit PACK --hosts A B --out DIR`` (the
    recipe runs the folds and the final model side by side this way on a GPU)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description="fit the U-Net from a training pack")
    ap.add_argument("pack")
    ap.add_argument("--hosts", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", required=True, help="FitParams as JSON")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = json.loads(args.params)
    params = FitParams(**{**raw, "variants": tuple(Variant(**v) for v in raw["variants"]),
                          "paste": PasteParams(**raw["paste"])})
    fit(args.pack, args.hosts, args.out, params, args.device, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
