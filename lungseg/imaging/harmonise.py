"""CT harmonisation (seed section 2): one routine, every parameter recorded, shared by training
and inference so the model always sees the same intensities."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lungseg.imaging.volume import Volume


@dataclass(frozen=True)
class HUWindow:
    """Clip HU to ``[low, high]`` and map linearly to ``[0, 1]``.

    The default ``[-1000, 150]`` keeps air at exactly 0 and everything denser than soft tissue
    saturated, the window the tumour model is trained on.
    """

    low: float = -1000.0
    high: float = 150.0

    @property
    def air_value(self) -> float:
        """The normalised value of air (−1000 HU): what lies outside the lung region."""
        return float(np.clip((-1000.0 - self.low) / (self.high - self.low), 0.0, 1.0))

    @classmethod
    def from_width_level(cls, width: float, level: float) -> "HUWindow":
        return cls(level - width / 2.0, level + width / 2.0)

    def as_dict(self) -> dict:
        return asdict(self)


LUNG_WINDOW = HUWindow.from_width_level(1500, -600)  # [-1350, 150], the seed's "lung image"
MODEL_WINDOW = HUWindow()


def normalise(hu: np.ndarray, window: HUWindow = MODEL_WINDOW) -> np.ndarray:
    """HU → float32 in [0, 1] for ``window``."""
    out = np.asarray(hu, dtype=np.float32) - np.float32(window.low)
    out *= np.float32(1.0 / (window.high - window.low))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def to_hu(raw: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Stored values → HU (DICOM rescale); values below −1024 (outside the scan circle) → −1024."""
    hu = np.asarray(raw, dtype=np.float32) * np.float32(slope) + np.float32(intercept)
    np.maximum(hu, -1024.0, out=hu)
    return hu


@dataclass(frozen=True)
class Harmonised:
    """A normalised volume and the parameters that made it."""

    volume: Volume  # float32 in [0, 1]
    window: HUWindow

    @property
    def parameters(self) -> dict:
        return {"window": self.window.as_dict(), "air_value": self.window.air_value}


def harmonise(ct: Volume, window: HUWindow = MODEL_WINDOW) -> Harmonised:
    """HU volume → normalised volume on the same grid, with its parameters."""
    return Harmonised(ct.with_array(normalise(ct.array, window)), window)
