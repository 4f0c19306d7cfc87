"""The click-to-segment network: a small U-Net on a patch centred on the click.

``z_kernel`` chooses the kind: 3 gives a 3D network (3×3×3 convolutions, pooling in z too); 1 gives
a slice-wise 2D network (1×3×3 convolutions, in-plane pooling only) on the same patch, so the two can
be compared on the same data by changing one number.  Saved as ``{"state_dict", "meta"}`` loadable
with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class LesionNetConfig:
    channels: tuple[int, ...] = (8, 16, 32, 64)
    z_kernel: int = 3  # 3: 3D; 1: slice-wise 2D

    @property
    def levels(self) -> int:
        return len(self.channels)


def _block(cin: int, cout: int, kz: int) -> nn.Sequential:
    k, p = (kz, 3, 3), (kz // 2, 1, 1)
    return nn.Sequential(
        nn.Conv3d(cin, cout, k, padding=p, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, k, padding=p, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
    )


class LesionNet(nn.Module):
    def __init__(self, config: LesionNetConfig = LesionNetConfig()):
        super().__init__()
        self.config = config
        ch, kz = config.channels, config.z_kernel
        pool = (2, 2, 2) if kz == 3 else (1, 2, 2)
        self.down = nn.ModuleList([_block(1 if i == 0 else ch[i - 1], ch[i], kz) for i in range(len(ch))])
        self.pool = nn.MaxPool3d(pool)
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i + 1], ch[i], pool, stride=pool) for i in range(len(ch) - 1)])
        self.merge = nn.ModuleList([_block(2 * ch[i], ch[i], kz) for i in range(len(ch) - 1)])
        self.head = nn.Conv3d(ch[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for i in reversed(range(len(self.up))):
            x = self.merge[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)


def save_net(net: LesionNet, path: str | Path, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in net.state_dict().items()}
    full = json.loads(json.dumps(meta))
    full["architecture"] = {"channels": list(net.config.channels), "z_kernel": net.config.z_kernel}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": state, "meta": full}, tmp)
    tmp.replace(path)
    return path


def load_net(path: str | Path) -> tuple[LesionNet, dict]:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    meta = payload["meta"]
    arch = meta["architecture"]
    net = LesionNet(LesionNetConfig(tuple(arch["channels"]), int(arch["z_kernel"])))
    net.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()})
    return net.eval(), meta
