"""Training the click-to-segment model on the LIDC-IDRI train patients (never the validation ones).

    python -m lungseg train-lesion ../shared/data/lidc-nodules --out models/lesion_click.pt \
        [--large-lesions ../shared/data] [--steps 1500] [--z-kernel 3] [--threads 1]

Every crop is loaded once into memory at its own spacing.  A training sample is a click inside the
nodule (the evaluation click, or a random voxel of the nodule's inner half), a patch sampled around it
on the model's millimetre grid at the scale the predictor would reach for that lesion (sometimes one
step finer, so the net also learns to run into the patch border), small scale, flip and HU jitter.
The loss (BCE + soft Dice) counts only patch voxels inside the crop: a crop cut tight in z says
nothing about what lies beyond it.

Large lesions: with ``--large-lesions DIR`` the GTVs of LUNG1-002 and LUNG1-003 (reference masks in
``DIR/reference``) join as extra cases, so the coarse fields of view see real primaries.  LUNG1-001
is never used: it is the held-out large-lesion check.  Deterministic for a given seed and thread count.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lungseg.lesion.lidc import load_crop, nodules_in, read_nodules
from lungseg.lesion.patch import resample_axis_aligned, sample_patch
from lungseg.lesion.segment import ClickGrid, click_inside

LARGE_LESION_CASES = (("LUNG1-002", "GTV-1"), ("LUNG1-003", "GTV-1"), ("LUNG1-003", "GTV-2"), ("LUNG1-003", "GTV-3"))


@dataclass
class Case:
    name: str
    hu: np.ndarray  # float32 (z, y, x), origin at 0 mm
    mask: np.ndarray  # float32 0/1
    spacing_zyx: np.ndarray
    clicks_mm: np.ndarray  # (n, 3) candidate clicks (z, y, x mm); row 0 = the evaluation click
    scale: float  # the field-of-view scale the predictor would reach


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_size: int = 12
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    z_kernel: int = 3
    channels: tuple[int, ...] = (8, 16, 32, 64)
    seed: int = 0
    threads: int = 1
    warmup_steps: int = 50
    ema_decay: float = 0.99
    checkpoint_every: int = 50
    large_lesion_fraction: float = 0.08
    finer_scale_probability: float = 0.25
    scale_jitter: float = 0.2  # log-uniform ±
    grid: ClickGrid = field(default_factory=ClickGrid)


def policy_scale(mask: np.ndarray, spacing_zyx, click_zyx_mm, grid: ClickGrid) -> float:
    """The first scale whose patch holds the whole lesion with one voxel to spare."""
    pts = np.argwhere(mask > 0.5) * spacing_zyx
    reach = np.abs(pts - click_zyx_mm).max(axis=0)
    for s in grid.scales:
        half = (np.asarray(grid.shape) // 2 - 1) * np.asarray(grid.spacing_zyx) * s
        if np.all(reach < half):
            return s
    return grid.scales[-1]


def candidate_clicks(mask: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    first = np.asarray(click_inside(mask > 0.5, spacing_zyx), float)
    depth = ndi.distance_transform_edt(mask > 0.5, sampling=spacing_zyx)
    inner = np.argwhere(depth >= 0.5 * depth.max())
    return np.vstack([first[None], inner.astype(float)]) * spacing_zyx


def make_case(name: str, hu: np.ndarray, mask: np.ndarray, spacing_zyx, grid: ClickGrid) -> Case:
    spacing_zyx = np.asarray(spacing_zyx, float)
    clicks = candidate_clicks(mask, spacing_zyx)
    scale = policy_scale(mask, spacing_zyx, clicks[0], grid)
    return Case(name, hu.astype(np.float32), mask.astype(np.float32), spacing_zyx, clicks, scale)


def load_lidc_cases(root, grid: ClickGrid, side: str = "train") -> list[Case]:
    cases = []
    for n in nodules_in(read_nodules(root), side):
        volume, mask = load_crop(n)
        cases.append(make_case(n.crop, volume.array, mask, volume.spacing_zyx, grid))
    return cases


def load_large_lesion_cases(data_dir, grid: ClickGrid) -> list[Case]:
    """LUNG1-002/003 GTVs as cases: a region around each GTV, pre-smoothed to its working scale's grid."""
    import SimpleITK as sitk

    from lungseg.imaging.io import load_ct, to_canonical

    data_dir = Path(data_dir)
    cases, loaded = [], {}
    for case_id, roi in LARGE_LESION_CASES:
        if case_id not in loaded:
            loaded[case_id] = load_ct(data_dir / f"{case_id}.zip").volume
        volume = loaded[case_id]
        ref = to_canonical(sitk.ReadImage(str(data_dir / "reference" / f"{case_id}_{roi}.nii.gz")))
        mask = ref.array > 0
        if mask.shape != volume.shape:
            raise ValueError(f"{case_id} {roi}: reference mask {mask.shape} is not on the CT grid {volume.shape}")
        spacing = np.asarray(volume.spacing_zyx, float)
        rough = make_case(roi, np.zeros((1, 1, 1)), mask, spacing, grid)
        target = np.asarray(grid.spacing_zyx) * rough.scale * 0.8  # the finest jittered grid
        target = np.minimum(np.maximum(target, spacing), spacing * 4)
        # the region the coarsest patch at this scale can reach, with a margin, on the finest grid used
        half = np.asarray(grid.shape) * np.asarray(grid.spacing_zyx) * rough.scale * 1.5
        centre = rough.clicks_mm[0]
        coords = [np.arange(max(0.0, centre[a] - half[a]), min((volume.shape[a] - 1) * spacing[a], centre[a] + half[a]), target[a]) / spacing[a]
                  for a in range(3)]
        hu = resample_axis_aligned(volume.array.astype(np.float32), coords)
        sub = resample_axis_aligned(mask.astype(np.float32), coords, antialias=False) > 0.5
        cases.append(make_case(f"{case_id}_{roi}", hu, sub, target, grid))
    return cases


def sample(case: Case, grid: ClickGrid, config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised HU, label, inside) for one training patch."""
    click = case.clicks_mm[0] if rng.random() < 0.4 else case.clicks_mm[rng.integers(len(case.clicks_mm))]
    click = click + rng.uniform(-0.5, 0.5, 3) * case.spacing_zyx
    scale = case.scale
    if scale > grid.scales[0] and rng.random() < config.finer_scale_probability:
        scale = grid.scales[grid.scales.index(scale) - 1]
    scale *= float(np.exp(rng.uniform(-config.scale_jitter, config.scale_jitter)))
    patch = grid.patch(click, scale)
    hu, inside = sample_patch(case.hu, (0, 0, 0), case.spacing_zyx, patch)
    label, _ = sample_patch(case.mask, (0, 0, 0), case.spacing_zyx, patch, antialias=False)
    hu = hu * rng.uniform(0.97, 1.03) + rng.uniform(-20, 20)
    x, y, w = grid.normalise(hu), (label > 0.5).astype(np.float32), inside.astype(np.float32)
    for axis in (1, 2):
        if rng.random() < 0.5:
            x, y, w = (np.flip(a, axis) for a in (x, y, w))
    if rng.random() < 0.5:
        x, y, w = (np.swapaxes(a, 1, 2) for a in (x, y, w))
    return np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(w)


def train(config: TrainConfig, cases: list[Case], large: list[Case], out: Path, log=print) -> dict:
    import torch

    from lungseg.lesion.net import LesionNet, LesionNetConfig, save_net

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(config.seed)
    grid = config.grid
    net = LesionNet(LesionNetConfig(tuple(config.channels), config.z_kernel))
    # the shipped weights are an exponential moving average: usable at any checkpoint, no schedule to finish
    ema = LesionNet(LesionNetConfig(tuple(config.channels), config.z_kernel))
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / config.warmup_steps))
    history, t0, running = [], time.perf_counter(), []
    net.train()
    for step in range(config.steps):
        batch = []
        for _ in range(config.batch_size):
            pool = large if (large and rng.random() < config.large_lesion_fraction) else cases
            batch.append(sample(pool[rng.integers(len(pool))], grid, config, rng))
        x, y, w = (torch.from_numpy(np.stack([b[i] for b in batch]))[:, None] for i in range(3))
        logits = net(x)
        bce = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum() / w.sum().clamp(min=1)
        p = torch.sigmoid(logits) * w
        inter = (p * y).sum(dim=(1, 2, 3, 4))
        dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3, 4)) + (y * w).sum(dim=(1, 2, 3, 4)) + 1)
        loss = bce + dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (step + 1) / (step + 10))
            for e, v in zip(ema.state_dict().values(), net.state_dict().values()):
                if e.is_floating_point():
                    e.mul_(decay).add_(v, alpha=1 - decay)
                else:
                    e.copy_(v)
        running.append(loss.item())
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            entry = {"step": step + 1, "loss": float(np.mean(running)), "seconds": round(time.perf_counter() - t0, 1)}
            history.append(entry)
            running = []
            log(json.dumps(entry))
            meta = _meta(config, cases, large, history)
            save_net(ema.eval(), out, meta)
            save_net(ema, out.parent / f"{out.stem}.step{step + 1}{out.suffix}", meta)
    return meta


def _meta(config: TrainConfig, cases: list[Case], large: list[Case], history: list[dict]) -> dict:
    return {"grid": config.grid.as_dict(), "trained_on": "LIDC-IDRI train patients (models/lidc_split.csv)"
            + (" + LUNG1-002/003 GTVs" if large else ""),
            "train_crops": len(cases), "large_lesion_cases": [c.name for c in large],
            "config": {k: v for k, v in config.__dict__.items() if k != "grid"}, "history": history,
            "version": time.strftime("%Y%m%d")}



CASE_FIELDS = ("name", "hu", "mask", "spacing_zyx", "clicks_mm", "scale")


def _save_cases(path: Path, key: str, groups: dict[str, list[Case]]) -> None:
    arrays = {"key": np.array(key)}
    for prefix, group in groups.items():
        arrays[f"{prefix}n"] = np.array(len(group))
        for i, c in enumerate(group):
            arrays.update({f"{prefix}{i}_{f}": np.asarray(getattr(c, f)) for f in CASE_FIELDS})
    partial = path.with_name(path.name + ".part.npz")
    np.savez(partial, **arrays)
    partial.replace(path)


def _read_cases(z, prefix: str) -> list[Case]:
    def case(i):
        v = {f: z[f"{prefix}{i}_{f}"] for f in CASE_FIELDS}
        return Case(str(v.pop("name")), scale=float(v.pop("scale")), **v)

    return [case(i) for i in range(int(z[f"{prefix}n"]))]


def load_cases(data, large_lesions, grid: ClickGrid, cache: Path | None) -> tuple[list[Case], list[Case]]:
    """Train crops and large-lesion cases; ``cache`` (a local .npz written here) skips reloading them."""
    key = json.dumps({"data": str(Path(data).resolve()), "large": str(large_lesions), "grid": grid.as_dict()})
    if cache and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return _read_cases(z, "c"), _read_cases(z, "L")
    cases = load_lidc_cases(data, grid, "train")
    large = load_large_lesion_cases(large_lesions, grid) if large_lesions else []
    if cache:
        _save_cases(cache, key, {"c": cases, "L": large})
    return cases, large


def main(args) -> int:
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, z_kernel=args.z_kernel, seed=args.seed,
                         threads=args.threads, learning_rate=args.lr, channels=tuple(args.channels))
    t = time.perf_counter()
    cases, large = load_cases(args.data, args.large_lesions, config.grid, Path(args.cache) if args.cache else None)
    print(f"{len(cases)} train crops, {len(large)} large-lesion cases loaded in {time.perf_counter() - t:.0f} s; "
          f"scales {dict(zip(*np.unique([c.scale for c in cases + large], return_counts=True)))}", flush=True)
    meta = train(config, cases, large, Path(args.out), log=lambda s: print(s, flush=True))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB) after {meta['history'][-1]['seconds']:.0f} s")
    return 0
