"""Connected components of binary masks, on every core.

``scipy.ndimage.label`` runs on one core and costs about as much as importing it; ITK labels a 3D
volume on every core and OpenCV a 2D slice with its statistics.  Labels are numbered 1…n (their
order is not ``scipy``'s: callers go by size, position or a voxel inside, never by number).
"""

from __future__ import annotations

import cv2
import numpy as np
import SimpleITK as sitk


def as_uint8(mask: np.ndarray) -> np.ndarray:
    """A bool or 0/1 mask as C-contiguous uint8, without a copy when it is already bool and contiguous."""
    mask = np.ascontiguousarray(mask)
    return mask.view(np.uint8) if mask.dtype == bool else (mask != 0).astype(np.uint8)


def label_components(mask: np.ndarray, corners: bool = False) -> tuple[np.ndarray, int]:
    """Components of a 3D mask: (uint32 labels 1…n, background 0; n).

    Face-connected (6 neighbours) by default; ``corners=True`` joins voxels that touch at an edge or
    corner too (26 neighbours), as ``scipy.ndimage.label`` with a 3×3×3 structure does.
    """
    if mask.size == 0:
        return np.zeros(mask.shape, np.uint32), 0
    image = sitk.ConnectedComponent(sitk.GetImageFromArray(as_uint8(mask)), corners)
    labels = np.asarray(_ImageBuffer(image))
    return labels, int(labels.max())


class _ImageBuffer:
    """A read-only NumPy view of an ITK image that keeps the image alive.

    ``GetArrayFromImage`` copies the labels (4 bytes a voxel: 300 MB for a 512² × 300 scan, and as
    long again in page faults); a bare ``GetArrayViewFromImage`` dangles once the image is freed.
    The array made from this object holds it, and with it the image, as its base.
    """

    def __init__(self, image: sitk.Image):
        self.image = image
        self.__array_interface__ = sitk.GetArrayViewFromImage(image).__array_interface__


def bounding_box(mask: np.ndarray, pad: int | tuple[int, ...] = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every set voxel of ``mask``, grown by ``pad`` voxels (one number,
    or one per axis) and cut to the array; None when the mask is empty."""
    pads = (pad,) * mask.ndim if isinstance(pad, int) else tuple(pad)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        box.append(slice(max(0, int(idx[0]) - pads[axis]), min(mask.shape[axis], int(idx[-1]) + 1 + pads[axis])))
    return tuple(box)


def component_boxes(labels: np.ndarray, n: int) -> list[tuple[slice, ...] | None]:
    """Bounding box of each label 1…n as a tuple of slices (None for a label with no voxels)."""
    boxes: list[tuple[slice, ...] | None] = [None] * n
    if n == 0:
        return boxes
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOff()
    stats.ComputeFeretDiameterOff()
    stats.ComputeOrientedBoundingBoxOff()
    stats.Execute(sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint32)))
    d = labels.ndim
    for i in stats.GetLabels():
        if 1 <= i <= n:
            box = stats.GetBoundingBox(i)  # ITK order: x, y, z starts, then sizes
            start, size = box[:d][::-1], box[d:][::-1]
            boxes[i - 1] = tuple(slice(int(a), int(a) + int(k)) for a, k in zip(start, size))
    return boxes


def label_slice(mask2d: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Edge-connected (4-neighbour) components of one 2D slice: (int32 labels, n, pixel count per
    label, (x, y) centroid per label); index 0 of the last two is the background."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(as_uint8(mask2d), connectivity=4, ltype=cv2.CV_32S)
    return labels, n - 1, stats[:, cv2.CC_STAT_AREA], centroids


def convex_hull_2d(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of (row, col) points, in the same (row, col) order."""
    hull = cv2.convexHull(np.ascontiguousarray(points[:, ::-1], dtype=np.float32))
    return hull[:, 0, ::-1].astype(float)
