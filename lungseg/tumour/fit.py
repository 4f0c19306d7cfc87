"""Train the automatic model from a training pack (:mod:`lungseg.tumour.pack`), on the GPU when
there is one.  Needs only PyTorch, NumPy and SciPy.

Samples are made on the fly by :func:`lungseg.tumour.paste.make_sample` in data-loader workers
(2.5D: the slice and its neighbours as channels; real lesions pasted into real lungs), then the
seed's augmentation (shift, rotation, zoom) is applied to the batch on the device.  Loss: Dice +
BCE, the Dice term privileged (0.9 / 0.1) for the first 50 of 60 epochs, 0.5 / 0.5 after; an epoch
is ``steps / 60`` optimiser steps.  AdamW with a linear warm-up and a cosine decay to 1 %.

    python -m lungseg.tumour.fit PACK --hosts LUNG1-001 LUNG1-002 --out RUN [--variants b16c1,b16c0] [--steps 6000] [--budget-s 300]

``--budget-s`` caps the wall time: steps 50–100 are timed and the remaining steps cut (never added)
so the run ends within it; the schedules follow the new length.  Writes ``RUN/model.pt``
(:func:`lungseg.tumour.unet.save_model`, float16) and ``RUN/fit.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
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
    def __init__(self, hosts, bank, params: PasteParams, seed: int, length: int):
        self.hosts, self.bank, self.params, self.seed, self.length = hosts, bank, params, seed, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        image, target = make_sample(self.hosts, self.bank, np.random.default_rng([self.seed, i]), self.params)
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


def fit(pack: str, hosts: list[str], out: str, variants: list[Variant] = (Variant(),), steps: int = 6000,
        batch_size: int = 32, lr: float = 2e-3, params: PasteParams = PasteParams(), seed: int = 0, workers: int = 4,
        budget_s: float | None = None, device: str = "auto", log=print) -> list[Path]:
    """Train every variant on the same batches (so they compare on equal terms); one
    ``out/VARIANT/model.pt`` each, or ``out/model.pt`` when there is one variant."""
    from lungseg.tumour.pack import load

    t0 = time.perf_counter()
    params = replace(params, context=max(v.context for v in variants))
    all_hosts, nodules, info = load(pack)
    chosen = [all_hosts[h] for h in hosts]
    bank = sprite_bank(nodules, chosen, np.random.default_rng([seed, 99]))
    log(f"{len(chosen)} hosts, sprites: " + ", ".join(f"{k} {len(v)}" for k, v in bank.items())
        + f" ({time.perf_counter() - t0:.0f} s)")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    nets = []
    for v in variants:
        torch.manual_seed(seed)
        model = UNet2D(**asdict(UNetConfig(in_channels=2 * v.context + 1, base_channels=v.base_channels))).to(dev)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        nets.append({"variant": v, "model": model, "optimiser": torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4),
                     "history": {"step": [], "loss": [], "dice": []}, "running": [0.0, 0.0, 0.0]})
    schedule = LossSchedule()
    loss_fn = DiceBCELoss(schedule)
    augmentation = Augmentation()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(PastedSamples(chosen, bank, params, seed, steps * batch_size), batch_size=batch_size,
                        num_workers=workers, pin_memory=cuda, drop_last=True, persistent_workers=workers > 0,
                        prefetch_factor=4 if workers else None)
    warmup = warmup_steps(steps)
    started = time.perf_counter()
    count = step = 0
    rate = lr
    for images, targets in loader:
        if step >= steps:
            break
        if step == 50:
            at_50 = time.perf_counter()
        if step == 100 and budget_s:  # timed after the first 50 steps (worker start, cuDNN autotuning)
            per_step = (time.perf_counter() - at_50) / 50
            steps = min(steps, max(200, int((budget_s - (time.perf_counter() - t0)) / per_step) + 100))
            warmup = min(warmup, warmup_steps(steps))
            log(f"{per_step * 1000:.0f} ms per step: {steps} steps in the budget")
        epoch = step * EPOCHS // steps
        rate = learning_rate(step, steps, lr, warmup)
        images = images.to(dev, non_blocking=True)
        targets = targets.to(dev, non_blocking=True)
        images, targets = augment_batch(images, targets, augmentation, generator)
        reference = targets > 0.5
        for net in nets:
            c, k = params.context, net["variant"].context
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
        if step % 100 == 0 or step == steps:
            line = []
            for net in nets:
                r, h = net["running"], net["history"]
                h["step"].append(step)
                h["loss"].append(r[0] / count)
                h["dice"].append(2 * r[1] / max(r[2], 1))
                line.append(f"{net['variant'].name} loss {h['loss'][-1]:.4f} dice {h['dice'][-1]:.3f}")
                net["running"] = [0.0, 0.0, 0.0]
            log(f"step {step}/{steps} epoch {epoch} lr {rate:.2e} {time.perf_counter() - started:.0f} s | " + " | ".join(line))
            count = 0
    seconds = time.perf_counter() - t0
    paths = []
    for net in nets:
        v = net["variant"]
        out_dir = Path(out) / v.name if len(nets) > 1 else Path(out)
        meta = {"version": VERSION, "in_plane_mm": info["in_plane_mm"], "context_slices": v.context,
                "window": info["window"], "air_value": 0.0, "training_hosts": hosts,
                "lidc_train_nodules": info["nodules"], "lidc_train_patients": info["nodule_patients"],
                "paste": asdict(replace(params, context=v.context)), "sprites": {k: len(b) for k, b in bank.items()},
                "fit": {"steps": step, "batch_size": batch_size, "lr": lr, "epochs": EPOCHS, "seed": seed,
                        "variants_trained_together": [n["variant"].name for n in nets],
                        "loss_schedule": schedule.as_dict(), "augmentation": augmentation.as_dict(),
                        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "seconds": round(seconds, 1),
                        "torch": torch.__version__},
                "history": net["history"]}
        paths.append(save_model(net["model"], out_dir / "model.pt", meta))
        (out_dir / "fit.json").write_text(json.dumps(meta, indent=1))
        log(f"wrote {paths[-1]} after {step} steps in {seconds:.0f} s")
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pack")
    ap.add_argument("--hosts", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--variants", default="b16c1", help="comma-separated networks trained on the same batches, "
                    "e.g. b16c1,b32c1,b16c0 (base channels, context slices each side)")
    ap.add_argument("--crop", type=int, default=PasteParams.crop)
    ap.add_argument("--paste-probability", type=float, default=PasteParams.paste_probability)
    ap.add_argument("--max-pastes", type=int, default=PasteParams.max_pastes)
    ap.add_argument("--large-share", type=float, default=PasteParams.large_share)
    ap.add_argument("--gtv-slice-share", type=float, default=PasteParams.gtv_slice_share)
    ap.add_argument("--region-grow-probability", type=float, default=PasteParams.region_grow_probability)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [Variant.parse(v) for v in args.variants.split(",")]
    fit(args.pack, args.hosts, args.out, variants, args.steps, args.batch_size, args.lr, PasteParams(
        crop=args.crop, paste_probability=args.paste_probability, max_pastes=args.max_pastes, large_share=args.large_share,
        gtv_slice_share=args.gtv_slice_share, region_grow_probability=args.region_grow_probability),
        args.seed, args.workers, args.budget_s, args.device, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
