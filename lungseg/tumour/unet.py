"""A small slice-wise 2D U-Net for lung-tumour segmentation (seed: 2D U-Net on axial slices).

The network takes normalised axial slices ``[batch, channels, height, width]`` (see
:mod:`lungseg.imaging.harmonise`, air = 0) and returns one logit map per output channel (no sigmoid).
Height and width must be divisible by ``2 ** depth``; :func:`pad_to_multiple` pads a slice with
the air value and :func:`crop_to_size` removes that padding from the output.

With the defaults (``base_channels=16, depth=4``: 16-32-64-128 channels and a 256-channel
bottleneck) the model has about 1.9 M parameters: ≈ 7.8 MB in float32, ≈ 3.9 MB in float16.

Saved weights (:func:`save_model`) are a plain dict ``{"state_dict": ..., "meta": ...}`` that loads
with ``torch.load(path, weights_only=True)``; ``meta["architecture"]`` rebuilds the network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

NormKind = Literal["batch", "group"]


@dataclass(frozen=True)
class UNetConfig:
    """The constructor arguments of :class:`UNet2D` (stored with saved weights)."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 16
    depth: int = 4
    norm: NormKind = "batch"
    dropout: float = 0.0  # dropout probability in the bottleneck only

    def as_dict(self) -> dict:
        return asdict(self)


def _norm_layer(kind: NormKind, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = 8 if channels % 8 == 0 else 1
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, dropout: float = 0.0):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers += [
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        ]
        super().__init__(*layers)


class UNet2D(nn.Module):
    """2D U-Net: ``depth`` max-pool downsamplings, transposed-convolution upsamplings, skip
    concatenations, a 1×1 convolution head that outputs logits.

    Level ``k`` (0-based) has ``base_channels * 2**k`` channels; the bottleneck has
    ``base_channels * 2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        depth: int = 4,
        norm: NormKind = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.config = UNetConfig(in_channels, out_channels, base_channels, depth, norm, dropout)
        widths = [base_channels * 2**level for level in range(depth + 1)]

        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoders.append(ConvBlock(channels, width, norm))
            channels = width
        self.bottleneck = ConvBlock(widths[-2], widths[-1], norm, dropout)

        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(ConvBlock(2 * widths[level], widths[level], norm))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2 ** depth``)."""
        return 2**self.config.depth

    @property
    def architecture(self) -> dict:
        """Constructor arguments as a JSON-friendly dict."""
        return self.config.as_dict()

    @classmethod
    def from_architecture(cls, architecture: dict) -> "UNet2D":
        return cls(**architecture)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"input size {height}×{width} is not divisible by {multiple}; pad it with pad_to_multiple"
            )
        skips = []
        features = images
        for encoder in self.encoders:
            features = encoder(features)
            skips.append(features)
            features = F.max_pool2d(features, 2)
        features = self.bottleneck(features)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            features = decoder(torch.cat([upsample(features), skip], dim=1))
        return self.head(features)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pad_to_multiple(
    images: torch.Tensor, multiple: int, fill_value: float = 0.0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two axes at the bottom and right up to multiples of ``multiple``.

    The padding is ``fill_value`` (default 0.0, the air value of the model window). Returns the
    padded tensor and the original ``(height, width)`` for :func:`crop_to_size`.
    """
    height, width = images.shape[-2:]
    pad_height = (-height) % multiple
    pad_width = (-width) % multiple
    if pad_height or pad_width:
        images = F.pad(images, (0, pad_width, 0, pad_height), mode="constant", value=fill_value)
    return images, (height, width)


def crop_to_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``size = (height, width)``."""
    return images[..., : size[0], : size[1]]


def save_model(model: UNet2D, path: str | Path, meta: dict | None = None, half: bool = True) -> Path:
    """Save ``{"state_dict", "meta"}`` loadable with ``torch.load(path, weights_only=True)``.

    Floating-point tensors are stored as float16 when ``half`` (halves the file size; the model
    is trained in float32 and float16 rounding of the weights does not change its masks
    meaningfully). ``meta`` must be JSON-serialisable; ``meta["architecture"]`` is filled in.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        name: (tensor.detach().to("cpu", torch.float16) if half and tensor.is_floating_point() else tensor.detach().cpu())
        for name, tensor in model.state_dict().items()
    }
    full_meta = json.loads(json.dumps(dict(meta or {})))  # only plain types survive weights_only
    full_meta["architecture"] = model.architecture
    full_meta["weights_dtype"] = "float16" if half else "float32"
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": state, "meta": full_meta}, temporary)
    temporary.replace(path)
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet2D, dict]:
    """Rebuild the network saved by :func:`save_model` (float32, eval mode) and return its meta."""
    return model_from_payload(torch.load(Path(path), map_location="cpu", weights_only=True), device)


def model_from_payload(payload: dict, device: str | torch.device = "cpu") -> tuple[UNet2D, dict]:
    """:func:`load_model` on a payload already read (a file that carries more than the network)."""
    meta = payload["meta"]
    model = UNet2D.from_architecture(meta["architecture"])
    state = {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in payload["state_dict"].items()
    }
    model.load_state_dict(state)
    return model.to(device).eval(), meta
