"""Physical-space patches around a click: the model's fixed millimetre grid and the way back.

Everything here works on canonical (axis-aligned, LPS) volumes, so resampling is separable: one
linear interpolation along each axis in turn, which is exact trilinear interpolation and much
cheaper than a general ``map_coordinates``.  A patch is ``shape`` voxels (z, y, x) of
``spacing_zyx`` millimetres with the click at voxel ``shape // 2``; beyond the volume the edge
voxels are repeated (a small crop given as the whole input is padded this way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class PatchGrid:
    """Where a patch lies in patient space: ``shape`` voxels of ``spacing_zyx`` mm, click at ``shape // 2``."""

    centre_zyx_mm: tuple[float, float, float]
    spacing_zyx: tuple[float, float, float]
    shape: tuple[int, int, int]

    def axis_mm(self, axis: int) -> np.ndarray:
        n = self.shape[axis]
        return self.centre_zyx_mm[axis] + (np.arange(n) - n // 2) * self.spacing_zyx[axis]


def volume_axis_mm(origin_zyx: np.ndarray, spacing_zyx: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    return origin_zyx[axis] + np.arange(shape[axis]) * spacing_zyx[axis]


def _interp_axis(arr: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``arr`` at continuous indices ``coords`` along ``axis`` (edge values repeated)."""
    n = arr.shape[axis]
    c = np.clip(coords, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    w = (c - i0).astype(np.float32)
    shape = [1] * arr.ndim
    shape[axis] = len(coords)
    w = w.reshape(shape)
    return np.take(arr, i0, axis=axis) * (1.0 - w) + np.take(arr, i1, axis=axis) * w


def resample_axis_aligned(array: np.ndarray, coords: list[np.ndarray], antialias: bool = True) -> np.ndarray:
    """``array`` (z, y, x) sampled at the continuous index vectors ``coords[axis]`` (a separable grid).

    Only the part of ``array`` that the coordinates reach is read; when the target step is more than
    1.5 source voxels the source is smoothed first along that axis (Gaussian, against aliasing).
    """
    coords = [np.asarray(c, dtype=np.float64) for c in coords]
    steps = [abs(c[1] - c[0]) if len(c) > 1 else 1.0 for c in coords]
    sigmas = [0.4 * s if (antialias and s > 1.5) else 0.0 for s in steps]
    box, shifted = [], []
    for axis, c in enumerate(coords):  # read only what the coordinates reach (plus the filter's support)
        margin = int(np.ceil(3 * sigmas[axis])) + 2
        n = array.shape[axis]
        lo = int(np.clip(np.floor(c.min()) - margin, 0, n - 1))
        hi = int(np.clip(np.ceil(c.max()) + margin + 1, lo + 1, n))
        box.append(slice(lo, hi))
        shifted.append(c - lo)
    out = array[tuple(box)].astype(np.float32)
    for axis in sorted(range(3), key=lambda a: -steps[a]):  # the strongest reduction first: less to filter next
        if sigmas[axis] > 0 and out.shape[axis] > 1:
            out = ndi.gaussian_filter1d(out, sigmas[axis], axis=axis, mode="nearest", truncate=3.0)
        out = _interp_axis(out, shifted[axis], axis)
    return out


def sample_patch(array: np.ndarray, origin_zyx, spacing_zyx, grid: PatchGrid, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(values, inside): the patch's voxels (float32) and which of them lie inside the volume."""
    origin_zyx, spacing_zyx = np.asarray(origin_zyx, float), np.asarray(spacing_zyx, float)
    coords, inside = [], []
    for axis in range(3):
        c = (grid.axis_mm(axis) - origin_zyx[axis]) / spacing_zyx[axis]
        coords.append(c)
        inside.append((c >= -0.5) & (c <= array.shape[axis] - 0.5))
    values = resample_axis_aligned(array, coords, antialias)
    inside_mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    return values.astype(np.float32, copy=False), inside_mask


def patch_faces_inside(array_shape, origin_zyx, spacing_zyx, grid: PatchGrid) -> list[tuple[int, int]]:
    """The (axis, side) faces of the patch that lie inside the volume (side 0 = low, 1 = high).

    A mask touching such a face may continue beyond the patch; touching a face that is already past
    the volume's edge means nothing (the volume ends there).
    """
    faces = []
    for axis in range(3):
        mm = grid.axis_mm(axis)
        first = origin_zyx[axis]
        last = origin_zyx[axis] + (array_shape[axis] - 1) * spacing_zyx[axis]
        if mm[0] > first + 0.5 * spacing_zyx[axis]:
            faces.append((axis, 0))
        if mm[-1] < last - 0.5 * spacing_zyx[axis]:
            faces.append((axis, 1))
    return faces


def touches_faces(mask: np.ndarray, faces: list[tuple[int, int]], depth: int = 1) -> bool:
    for axis, side in faces:
        index = slice(0, depth) if side == 0 else slice(mask.shape[axis] - depth, mask.shape[axis])
        sl = [slice(None)] * 3
        sl[axis] = index
        if mask[tuple(sl)].any():
            return True
    return False


def patch_to_volume(values: np.ndarray, grid: PatchGrid, array_shape, origin_zyx, spacing_zyx) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The patch's ``values`` interpolated onto the volume voxels it covers: (bounding box, array), or None."""
    box, coords = [], []
    for axis in range(3):
        mm = volume_axis_mm(np.asarray(origin_zyx, float), np.asarray(spacing_zyx, float), array_shape, axis)
        c = (mm - grid.centre_zyx_mm[axis]) / grid.spacing_zyx[axis] + grid.shape[axis] // 2
        covered = np.flatnonzero((c >= 0) & (c <= grid.shape[axis] - 1))
        if len(covered) == 0:
            return None
        lo, hi = int(covered[0]), int(covered[-1]) + 1
        box.append(slice(lo, hi))
        coords.append(c[lo:hi])
    return tuple(box), resample_axis_aligned(values, coords, antialias=False)
