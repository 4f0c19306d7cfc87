"""Small image helpers shared by the study pages (the case viewer lives in ``lungseg_app.viewer``)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def window_u8(arr: np.ndarray, width: float, level: float) -> np.ndarray:
    lo = level - width / 2.0
    out = (arr.astype(np.float32) - lo) * (255.0 / max(float(width), 1.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """In-plane boundary of a [z, y, x] mask (each axial slice on its own)."""
    if not mask.any():
        return mask
    eroded = ndi.binary_erosion(mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool), border_value=0)
    return mask & ~eroded
