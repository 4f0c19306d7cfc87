"""Training loop for the slice-wise 2D U-Net on in-memory slice data.

Data: per case a pair ``(image_slices float32 [N, H, W] in [0, 1], mask_slices bool [N, H, W])``
— axial, lung-isolated, normalised slices (:mod:`lungseg.imaging.harmonise`, air = 0). Every slice that
contains tumour is used each epoch; tumour-free slices are negatives, ``negative_ratio`` of them
per positive slice (default 0.5: one negative per two positives), redrawn every epoch.

Crop policy for training (``crop_size`` pixels square, default 256): a window that contains a
random tumour pixel for positive slices or a random non-air pixel for negatives, so crops rarely
consist of air only; slices smaller than the crop are padded with air. ``crop_size=None`` trains
on whole slices padded to a common size. Validation always uses whole slices.

Determinism: everything random (initial weights, negatives, crops, batch order, augmentation,
dropout) is drawn from generators seeded by ``(seed, epoch)``, so a run resumed from its
checkpoint continues exactly as the uninterrupted run would (bit-exact on CPU; on CUDA also set
``deterministic=True``).

Outputs in ``out_path`` (a directory): ``checkpoint.pt`` (every epoch), ``history.json`` (every
epoch), ``model.pt`` (final weights) and ``model_best.pt`` (best validation Dice), the latter two
written by :func:`lungseg.tumour.unet.save_model`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lungseg.tumour.augment import Augmentation, augment_batch
from lungseg.imaging.harmonise import MODEL_WINDOW, HUWindow
from lungseg.tumour.losses import DiceBCELoss, LossSchedule
from lungseg.tumour.unet import UNet2D, UNetConfig, save_model

SliceCase = tuple[np.ndarray, np.ndarray]  # (image_slices [N, H, W] float32, mask_slices [N, H, W] bool)

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.json"
FINAL_MODEL_NAME = "model.pt"
BEST_MODEL_NAME = "model_best.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the model meta)."""

    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_scheduler: Literal["cosine", "plateau"] = "cosine"  # cosine: to lr/100 over `epochs`
    plateau_patience: int = 5  # epochs without val-loss improvement before halving the lr
    schedule: LossSchedule = field(default_factory=LossSchedule)
    augmentation: Augmentation | None = field(default_factory=Augmentation)
    negative_ratio: float = 0.5  # tumour-free slices per tumour slice, redrawn every epoch
    positives_per_epoch: int | None = None  # a random subset of the tumour slices per epoch (None = all)
    crop_size: int | None = 256  # pixels; None = whole slices
    unet: UNetConfig = field(default_factory=UNetConfig)
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    amp: bool = True  # mixed precision, only on CUDA
    amp_dtype: Literal["auto", "bfloat16", "float16"] = "auto"  # auto = bf16 where supported
    channels_last: bool = True  # only on CUDA
    deterministic: bool = False  # CUDA: deterministic kernels (slower)
    grad_clip_norm: float | None = 1.0
    num_workers: int = 0
    window: HUWindow = MODEL_WINDOW  # recorded in the model meta; slices must already use it
    in_plane_spacing_mm: tuple[float, float] | None = None  # recorded: the slices' (y, x) spacing

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class History:
    """Per-epoch record; ``val_*`` are None without validation data."""

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)
    val_dice: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    dice_weight: list[float] = field(default_factory=list)
    bce_weight: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def append(self, **values) -> None:
        for item in fields(self):
            getattr(self, item.name).append(values[item.name])

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def best_epoch(self) -> int | None:
        """Epoch with the highest validation Dice (None without validation)."""
        scored = [(v, e) for e, v in zip(self.epoch, self.val_dice) if v is not None]
        return max(scored)[1] if scored else None

    def as_dict(self) -> dict:
        return {item.name: list(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "History":
        return cls(**{item.name: list(values.get(item.name, [])) for item in fields(cls)})

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(self.as_dict(), indent=1))
        temporary.replace(path)
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- data ---------------------------------------------------------------------------------------


class SliceDataset(Dataset):
    """Positive slices plus ``negative_ratio`` negatives per positive, as ``(image, mask)`` tensors
    of shape ``[1, size, size]`` (float32; mask 0/1).

    ``random_crop=True``: the training crop policy of the module docstring, redrawn per
    ``(seed, epoch, item)``. ``random_crop=False``: whole slices (``crop_size`` ignored) padded at
    the bottom/right with air to a common size that is a multiple of ``size_multiple``.
    Call :meth:`set_epoch` at the start of each epoch to redraw negatives and crops.
    """

    def __init__(
        self,
        cases: Sequence[SliceCase],
        negative_ratio: float = 0.5,
        crop_size: int | None = 256,
        size_multiple: int = 16,
        seed: int = 0,
        random_crop: bool = True,
        fill_value: float = 0.0,
        positives_per_epoch: int | None = None,
    ):
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.positives: list[tuple[int, int]] = []
        self.negatives: list[tuple[int, int]] = []
        for case_index, (images, masks) in enumerate(cases):
            images = np.asarray(images, dtype=np.float32)
            masks = np.asarray(masks, dtype=bool)
            if images.ndim != 3 or images.shape != masks.shape:
                raise ValueError(f"case {case_index}: images {images.shape} and masks {masks.shape} must be [N, H, W] alike")
            self.images.append(images)
            self.masks.append(masks)
            has_tumour = masks.any(axis=(1, 2))
            self.positives += [(case_index, int(k)) for k in np.flatnonzero(has_tumour)]
            self.negatives += [(case_index, int(k)) for k in np.flatnonzero(~has_tumour)]
        if not self.positives and not self.negatives:
            raise ValueError("no slices given")
        if crop_size is not None and crop_size % size_multiple:
            raise ValueError(f"crop_size {crop_size} must be a multiple of {size_multiple}")
        self.negative_ratio = negative_ratio
        self.positives_per_epoch = positives_per_epoch
        self.crop_size = crop_size if random_crop else None
        self.random_crop = random_crop and crop_size is not None
        self.seed = seed
        self.fill_value = fill_value
        heights = [im.shape[1] for im in self.images]
        widths = [im.shape[2] for im in self.images]
        self.padded_size = (
            int(math.ceil(max(heights) / size_multiple) * size_multiple),
            int(math.ceil(max(widths) / size_multiple) * size_multiple),
        )
        self.epoch = -1
        self.items: list[tuple[int, int]] = []
        self.set_epoch(0)

    @property
    def positive_count(self) -> int:
        if self.positives_per_epoch is None:
            return len(self.positives)
        return min(len(self.positives), self.positives_per_epoch)

    @property
    def negative_count(self) -> int:
        if not self.positives:
            return len(self.negatives)
        return min(len(self.negatives), int(round(self.negative_ratio * self.positive_count)))

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's negatives (and, through the epoch, its crops)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch, 0])
        chosen = np.sort(rng.choice(len(self.negatives), self.negative_count, replace=False))
        positives = self.positives
        if self.positive_count < len(self.positives):
            picked = np.sort(np.random.default_rng([self.seed, epoch, 5]).choice(len(self.positives), self.positive_count, replace=False))
            positives = [self.positives[i] for i in picked]
        self.items = positives + [self.negatives[i] for i in chosen]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        case_index, slice_index = self.items[index]
        image = self.images[case_index][slice_index]
        mask = self.masks[case_index][slice_index]
        if self.random_crop:
            rng = np.random.default_rng([self.seed, self.epoch, 1, index])
            image, mask = self._random_crop(image, mask, rng)
        else:
            image, mask = self._pad(image, mask, self.padded_size)
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(mask.astype(np.float32))[None]

    def _pad(self, image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        pad = ((0, max(size[0] - image.shape[0], 0)), (0, max(size[1] - image.shape[1], 0)))
        if pad[0][1] or pad[1][1]:
            image = np.pad(image, pad, constant_values=self.fill_value)
            mask = np.pad(mask, pad, constant_values=False)
        return image, mask

    def _random_crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = self.crop_size
        image, mask = self._pad(image, mask, (size, size))
        anchors = np.flatnonzero(mask) if mask.any() else np.flatnonzero(image > self.fill_value + 1e-3)
        anchor = np.unravel_index(int(rng.choice(anchors)), mask.shape) if anchors.size else None
        starts = []
        for axis in range(2):
            last_start = image.shape[axis] - size
            if anchor is None:
                starts.append(int(rng.integers(0, last_start + 1)))
            else:
                low = max(0, anchor[axis] - size + 1)
                high = min(anchor[axis], last_start)
                starts.append(int(rng.integers(low, high + 1)))
        window = (slice(starts[0], starts[0] + size), slice(starts[1], starts[1] + size))
        return image[window], mask[window]


# --- the loop -----------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not config.amp or device.type != "cuda":
        return None
    if config.amp_dtype == "float16":
        return torch.float16
    if config.amp_dtype == "bfloat16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class _DiceCounter:
    """Global hard Dice (threshold 0.5) accumulated over batches."""

    def __init__(self):
        self.intersection = 0.0
        self.total = 0.0

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        predicted = logits.detach() > 0
        reference = target > 0.5
        self.intersection += float((predicted & reference).sum())
        self.total += float(predicted.sum() + reference.sum())

    @property
    def value(self) -> float:
        return 1.0 if self.total == 0 else 2.0 * self.intersection / self.total


def _seed_from(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seeded_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed_from(*keys))


def _to_device(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def evaluate(
    model: UNet2D,
    dataset: SliceDataset,
    loss_fn: DiceBCELoss,
    epoch: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """``(mean loss, global hard Dice)`` of ``model`` on every item of ``dataset``."""
    model.eval()
    counter = _DiceCounter()
    loss_sum, count = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.inference_mode():
        for images, masks in loader:
            images = _to_device(images, device, channels_last)
            masks = masks.to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
            loss_sum += float(loss_fn(logits.float(), masks, epoch)) * images.shape[0]
            count += images.shape[0]
            counter.add(logits, masks)
    return loss_sum / max(count, 1), counter.value


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    if config.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1), eta_min=config.lr / 100.0)
    if config.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=config.plateau_patience)
    raise ValueError(f"lr_scheduler must be 'cosine' or 'plateau', got {config.lr_scheduler!r}")


def _atomic_torch_save(payload: dict, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def train(
    config: TrainConfig,
    train_data: Sequence[SliceCase],
    val_data: Sequence[SliceCase] | None,
    out_path: str | Path,
    resume: bool = True,
    progress: bool = True,
    case_ids: Sequence[str] | None = None,
    extra_meta: dict | None = None,
    max_epochs_this_call: int | None = None,
) -> History:
    """Train a :class:`UNet2D` and return its :class:`History`.

    ``out_path`` is a directory (created if needed). With ``resume`` and an existing
    ``checkpoint.pt`` there, training continues after the last completed epoch (the checkpoint's
    architecture must match ``config.unet``). ``case_ids`` (the training cases) and
    ``extra_meta`` (JSON-serialisable) are stored in the saved model's meta.
    ``max_epochs_this_call`` stops early (checkpoint and ``model.pt`` written as usual) so a long
    run can be split over time-boxed sessions and resumed; the schedules follow ``config.epochs``.
    """
    out_dir = Path(out_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    channels_last = config.channels_last and on_cuda
    amp_dtype = _amp_dtype(config, device)
    if on_cuda:
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.backends.cudnn.deterministic = config.deterministic

    torch.manual_seed(config.seed)
    model = UNet2D(**asdict(config.unet)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = DiceBCELoss(config.schedule)
    history = History()
    start_epoch = 0
    best_val_dice = -1.0

    checkpoint_path = out_dir / CHECKPOINT_NAME
    if resume and checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if checkpoint["config"]["unet"] != config.as_dict()["unet"]:
            raise ValueError(
                f"checkpoint {checkpoint_path} is for architecture {checkpoint['config']['unet']}, "
                f"not {config.as_dict()['unet']}; use another out_path or resume=False"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = int(checkpoint["epoch"])
        history = History.from_dict(checkpoint["history"])
        best_val_dice = float(checkpoint.get("best_val_dice", -1.0))

    multiple = model.size_multiple
    train_set = SliceDataset(train_data, config.negative_ratio, config.crop_size, multiple, config.seed, random_crop=True,
                             positives_per_epoch=config.positives_per_epoch)
    val_set = (
        SliceDataset(val_data, config.negative_ratio, None, multiple, config.seed, random_crop=False)
        if val_data
        else None
    )
    meta = {
        "window": config.window.as_dict(),
        "air_value": config.window.air_value,
        "in_plane_spacing_mm": list(config.in_plane_spacing_mm) if config.in_plane_spacing_mm else None,
        "crop_policy": {
            "train_crop_size": config.crop_size,
            "negative_ratio": config.negative_ratio,
            "inference": f"whole slices padded with air to a multiple of {multiple}",
        },
        "training_cases": list(case_ids) if case_ids is not None else None,
        "train_config": config.as_dict(),
        "torch_version": torch.__version__,
        **(extra_meta or {}),
    }

    stop_epoch = config.epochs if max_epochs_this_call is None else min(config.epochs, start_epoch + max_epochs_this_call)
    epochs = tqdm(range(start_epoch, stop_epoch), initial=start_epoch, total=config.epochs, desc="epochs", disable=not progress)
    for epoch in epochs:
        started = time.perf_counter()
        torch.manual_seed(_seed_from(config.seed, epoch, 2))  # dropout and anything else global
        train_set.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            shuffle=True,
            generator=_seeded_generator(config.seed, epoch, 3),
            drop_last=len(train_set) > config.batch_size,  # no tiny last batch for BatchNorm
            num_workers=config.num_workers,
            pin_memory=on_cuda,
        )
        augment_generator = _seeded_generator(config.seed, epoch, 4)
        dice_weight, bce_weight = config.schedule.weights(epoch)
        learning_rate = optimizer.param_groups[0]["lr"]

        model.train()
        counter = _DiceCounter()
        loss_sum, count = 0.0, 0
        for images, masks in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress):
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if config.augmentation is not None:
                images, masks = augment_batch(images, masks, config.augmentation, augment_generator)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
            loss = loss_fn(logits.float(), masks, epoch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += float(loss.detach()) * images.shape[0]
            count += images.shape[0]
            counter.add(logits, masks)
        train_loss = loss_sum / max(count, 1)

        val_loss = val_dice = None
        if val_set is not None:
            val_loss, val_dice = evaluate(model, val_set, loss_fn, epoch, config.batch_size, device, amp_dtype, channels_last)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss if val_loss is not None else train_loss)
        else:
            scheduler.step()

        history.append(
            epoch=epoch,
            loss=train_loss,
            val_loss=val_loss,
            dice=counter.value,
            val_dice=val_dice,
            lr=learning_rate,
            dice_weight=dice_weight,
            bce_weight=bce_weight,
            seconds=time.perf_counter() - started,
        )
        if val_dice is not None and val_dice > best_val_dice:
            best_val_dice = val_dice
            save_model(model, out_dir / BEST_MODEL_NAME, {**meta, "epochs_trained": epoch + 1, "val_dice": val_dice})
        _atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "history": history.as_dict(),
                "best_val_dice": best_val_dice,
                "config": config.as_dict(),
            },
            checkpoint_path,
        )
        history.save_json(out_dir / HISTORY_NAME)
        epochs.set_postfix(loss=f"{train_loss:.4f}", val_dice="-" if val_dice is None else f"{val_dice:.3f}")

    history.save_json(out_dir / HISTORY_NAME)
    save_model(
        model,
        out_dir / FINAL_MODEL_NAME,
        {**meta, "epochs_trained": len(history), "val_dice": history.val_dice[-1] if len(history) else None},
    )
    return history


# --- figures ------------------------------------------------------------------------------------


def plot_history(history: History, out_dir: str | Path, self_contained_html: bool = True) -> dict[str, Path]:
    """Write the three training figures — loss, Dice, learning rate — as PNG (matplotlib, Agg)
    and interactive HTML (plotly). Returns ``{"loss_png": ..., "loss_html": ..., ...}``.

    ``self_contained_html=True`` embeds plotly.js in every HTML file (≈ 4.7 MB each, opens
    offline anywhere); ``False`` writes one ``plotly.min.js`` next to them instead (still offline,
    but the files must stay together). A dashed line marks each change of the loss weights.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import plotly.graph_objects as go

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = list(history.epoch)
    weights = history.dice_weight
    switches = [epochs[i] for i in range(1, len(epochs)) if weights[i] != weights[i - 1]]
    panels = {
        "loss": ("Loss (Dice + BCE)", {"train": history.loss, "validation": history.val_loss}, "linear"),
        "dice": ("Dice (threshold 0.5)", {"train": history.dice, "validation": history.val_dice}, "linear"),
        "learning_rate": ("Learning rate", {"learning rate": history.lr}, "log"),
    }
    written: dict[str, Path] = {}
    include_js: bool | str = True if self_contained_html else "directory"
    for name, (title, series, scale) in panels.items():
        present = {label: values for label, values in series.items() if any(v is not None for v in values)}

        figure = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for label, values in present.items():
            points = [(e, v) for e, v in zip(epochs, values) if v is not None]
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None, label=label)
        for switch in switches:
            axes.axvline(switch, color="grey", linestyle="--", linewidth=1)
        axes.set_xlabel("epoch")
        axes.set_title(title)
        if scale == "log" and all(v > 0 for values in present.values() for v in values if v is not None):
            axes.set_yscale("log")
        if present:
            axes.legend()
        axes.grid(alpha=0.3)
        figure.tight_layout()
        written[f"{name}_png"] = out_dir / f"{name}.png"
        figure.savefig(written[f"{name}_png"])

        plot = go.Figure()
        for label, values in present.items():
            points = [(e, v) for e, v in zip(epochs, values) if v is not None]
            plot.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=label))
        for switch in switches:
            plot.add_vline(x=switch, line_dash="dash", line_color="grey")
        plot.update_layout(title=title, xaxis_title="epoch", template="plotly_white")
        if scale == "log":
            plot.update_yaxes(type="log")
        written[f"{name}_html"] = out_dir / f"{name}.html"
        plot.write_html(written[f"{name}_html"], include_plotlyjs=include_js, full_html=True)
    return written
