"""Small image helpers shared by the study pages (the case viewer lives in ``lungseg_app.viewer``)."""

from __future__ import annotations

import numpy as np
from PIL import Image
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


def slice_with_outline(hu2d: np.ndarray, mask2d: np.ndarray | None, rgb, spacing_yx=(1.0, 1.0),
                       width: float = 1500.0, level: float = -600.0, display_px: int = 512,
                       resample=Image.NEAREST) -> Image.Image:
    """One axial slice, windowed, with ``mask2d``'s outline (2 px: the edge and its inner neighbours)
    burnt in, resized to square millimetres with its longer side ``display_px``."""
    g = window_u8(hu2d, width, level)
    img = np.repeat(g[..., None], 3, axis=-1)
    if mask2d is not None and mask2d.any():
        edge = outline(mask2d[None].astype(bool))[0]
        img[edge | (ndi.binary_dilation(edge) & mask2d.astype(bool))] = rgb
    pil = Image.fromarray(img, "RGB")
    sy, sx = spacing_yx
    h_mm, w_mm = hu2d.shape[0] * sy, hu2d.shape[1] * sx
    scale = display_px / max(h_mm, w_mm)
    return pil.resize((max(1, int(round(w_mm * scale))), max(1, int(round(h_mm * scale)))), resample)
