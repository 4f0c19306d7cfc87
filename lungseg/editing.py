"""Editing a mask slice by slice: the edits' wire format, the brush, the threshold brush and interpolation.

Pure functions on bool arrays [z, y, x] (the case's canonical grid); storing the result as a new version of
a structure is :mod:`lungseg.structures`' part.

**Edits on the wire** (what the viewer's JavaScript sends; :func:`decode_deltas`): JSON text, a list of
per-slice deltas::

    [{"axis": "axial", "index": K, "box": [a0, b0, a1, b1], "added": "<base64>", "removed": "<base64>"}, ...]

``axis``: ``"axial"`` (``index`` = z; the box is [y0, x0, y1, x1]), ``"coronal"`` (index = y; box
[z0, x0, z1, x1]) or ``"sagittal"`` (index = x; box [z0, y0, z1, y1]), on the case's canonical grid
[z, y, x], stops exclusive.  ``added`` / ``removed``: base64 of ``numpy.packbits(region.ravel())`` of the
box's bool region (C order, first voxel in the most significant bit, the last byte zero-padded); ``""``
means nothing.  Applied in order, each as ``new = (old | added) & ~removed`` on its slice.  A brush stroke
of 10 mm on a 0.98 mm grid is a box of about 11×11 voxels: 16 bytes of bits, ~60 bytes of JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from lungseg.errors import InputError

#: HU ranges of the threshold brush (like Slicer's threshold paint).  Solid tumour: soft tissue from fat's
#: upper edge to enhancing tissue, leaving out lung (< -100 HU) and bone / calcification (> 250 HU).
#: Ground glass: hazy lung opacity, denser than aerated lung (about -850 HU) and thinner than soft tissue.
SOLID_TUMOUR_HU = (-100.0, 250.0)
GROUND_GLASS_HU = (-750.0, -300.0)
HU_PRESETS = {"solid tumour": SOLID_TUMOUR_HU, "ground glass": GROUND_GLASS_HU}


AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass(frozen=True, eq=False)
class SliceDelta:
    """An edit on one slice: ``added`` and ``removed`` are bool arrays of the ``box`` ([a0, b0, a1, b1] in
    the slice's own two axes, stops exclusive); applied as ``(old | added) & ~removed``."""

    axis: str
    index: int
    box: tuple[int, int, int, int]
    added: np.ndarray
    removed: np.ndarray

    def bounds(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(start, stop) of the delta's voxels in [z, y, x], stops exclusive."""
        a0, b0, a1, b1 = self.box
        ax = AXES[self.axis]
        rest = [i for i in range(3) if i != ax]
        start, stop = [0, 0, 0], [0, 0, 0]
        start[ax], stop[ax] = self.index, self.index + 1
        start[rest[0]], stop[rest[0]] = a0, a1
        start[rest[1]], stop[rest[1]] = b0, b1
        return tuple(start), tuple(stop)

    def region(self, offset: Sequence[int] = (0, 0, 0)):
        """The index of the delta's slice box in an array whose first voxel lies at ``offset``."""
        start, stop = self.bounds()
        ax = AXES[self.axis]
        return tuple(start[i] - offset[i] if i == ax else slice(start[i] - offset[i], stop[i] - offset[i])
                     for i in range(3))


def _b64_bits(bits: np.ndarray) -> str:
    if not bits.any():
        return ""
    return base64.b64encode(np.packbits(bits.ravel()).tobytes()).decode("ascii")


def encode_deltas(deltas: Iterable[SliceDelta]) -> str:
    """The wire form of ``deltas`` (see the module docstring)."""
    return json.dumps([{"axis": d.axis, "index": int(d.index), "box": [int(v) for v in d.box],
                        "added": _b64_bits(np.asarray(d.added, bool)), "removed": _b64_bits(np.asarray(d.removed, bool))}
                       for d in deltas], separators=(",", ":"))


def decode_deltas(payload: str | bytes, shape: tuple[int, int, int] | None = None) -> list[SliceDelta]:
    """Per-slice deltas from their wire form; with ``shape`` (the case's grid) every box is checked to lie in it.
    A malformed payload is an :class:`InputError` naming the first bad delta."""
    try:
        items = json.loads(payload)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InputError("edits: not JSON (expected a list of per-slice deltas)") from None
    if not isinstance(items, list):
        raise InputError("edits: expected a list of per-slice deltas")
    out = []
    for i, d in enumerate(items, start=1):
        what = f"edit {i}"
        if not isinstance(d, Mapping):
            raise InputError(f"{what}: expected an object with axis, index, box, added, removed")
        axis = d.get("axis", "axial")
        if axis not in AXES:
            raise InputError(f"{what}: axis {axis!r}: choose axial, coronal or sagittal")
        try:
            index = int(d["index"])
            box = tuple(int(v) for v in d["box"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{what}: needs a whole-number index and a box [a0, b0, a1, b1]") from None
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1] or min(box) < 0:
            raise InputError(f"{what}: box {list(box)} is not [a0, b0, a1, b1] with a0 < a1 and b0 < b1")
        if shape is not None:
            ax = AXES[axis]
            rest = [shape[j] for j in range(3) if j != ax]
            if not 0 <= index < shape[ax] or box[2] > rest[0] or box[3] > rest[1]:
                raise InputError(f"{what}: slice {index} box {list(box)} lies outside the case's grid {tuple(shape)}")
        size = (box[2] - box[0], box[3] - box[1])
        n = size[0] * size[1]
        planes = []
        for part in ("added", "removed"):
            text = d.get(part) or ""
            if not text:
                planes.append(np.zeros(size, bool))
                continue
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise InputError(f"{what}: {part} is not base64") from None
            if len(raw) != (n + 7) // 8:
                raise InputError(f"{what}: {part} holds {len(raw)} bytes, a box of {n} voxels needs {(n + 7) // 8}")
            planes.append(np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool).reshape(size))
        out.append(SliceDelta(axis, index, box, planes[0], planes[1]))
    return out


def delta_between(before: np.ndarray, after: np.ndarray, axis: str = "axial", index: int = 0) -> SliceDelta | None:
    """The delta turning slice ``before`` into ``after`` (2-D bool), cropped to the changed box; None if equal."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    changed = before ^ after
    if not changed.any():
        return None
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    a0, a1, b0, b1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = (slice(a0, a1), slice(b0, b1))
    return SliceDelta(axis, int(index), (a0, b0, a1, b1), (after & ~before)[box], (before & ~after)[box])


def deltas_between(before: np.ndarray, after: np.ndarray) -> list[SliceDelta]:
    """The axial deltas turning the 3-D mask ``before`` into ``after``."""
    diff = np.flatnonzero((np.asarray(before, bool) ^ np.asarray(after, bool)).any(axis=(1, 2)))
    return [delta_between(before[k], after[k], "axial", int(k)) for k in diff]


def apply_deltas(mask: np.ndarray, deltas: Iterable[SliceDelta], offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """``mask`` (whose first voxel lies at ``offset`` of the grid) with ``deltas`` applied in order (a new array)."""
    out = np.array(mask, dtype=bool, copy=True)
    for d in deltas:
        start, stop = d.bounds()
        if any(a - o < 0 or b - o > n for a, b, o, n in zip(start, stop, offset, out.shape)):
            raise InputError(f"an edit on {d.axis} slice {d.index}: box {list(d.box)} lies outside the grid")
        region = d.region(offset)
        target = out[region]
        if target.shape != d.added.shape or target.shape != d.removed.shape:
            raise InputError(f"an edit on {d.axis} slice {d.index}: box {list(d.box)} does not fit the grid {out.shape}")
        out[region] = (target | d.added) & ~d.removed
    return out


def interpolate_slices(mask: np.ndarray, edited_slices: Sequence[int],
                       spacing_yx: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Interpolation of the contour between edited axial slices (shape-based: the signed distance maps of
    each pair of consecutive edited slices, SimpleITK's SignedMaurerDistanceMap, blended linearly).

    The edited slices are kept as they are; each slice between two consecutive edited ones that both hold a
    contour, and that was not edited itself, gets the interpolated shape added to what it holds.  Slices
    outside the edited range are unchanged.  ITK's morphological contour interpolator is not wrapped by
    SimpleITK 2.5, and the ``itk`` package that has it is 1.6 GB and needs ~50 s for its first call.
    """
    import SimpleITK as sitk

    mask = np.asarray(mask, bool)
    edited = sorted({int(k) for k in edited_slices if 0 <= int(k) < mask.shape[0]})
    out = mask.copy()
    with_contour = [k for k in edited if mask[k].any()]
    if len(with_contour) < 2:
        return out
    sub = mask[with_contour]
    ys, xs = np.flatnonzero(sub.any(axis=(0, 2))), np.flatnonzero(sub.any(axis=(0, 1)))
    y0, y1 = max(int(ys[0]) - 2, 0), min(int(ys[-1]) + 3, mask.shape[1])
    x0, x1 = max(int(xs[0]) - 2, 0), min(int(xs[-1]) + 3, mask.shape[2])

    def signed_distance(k: int) -> np.ndarray:  # mm, negative inside
        image = sitk.GetImageFromArray(mask[k, y0:y1, x0:x1].astype(np.uint8))
        image.SetSpacing((float(spacing_yx[1]), float(spacing_yx[0])))
        return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                                   squaredDistance=False, useImageSpacing=True))

    done = set(edited)
    for a, b in zip(with_contour, with_contour[1:]):
        if b - a < 2 or any(k in done for k in range(a + 1, b)):
            continue
        da, db = signed_distance(a), signed_distance(b)
        for k in range(a + 1, b):
            t = (k - a) / (b - a)
            out[k, y0:y1, x0:x1] |= (1.0 - t) * da + t * db <= 0.0
    return out


def brush(volume, centre_zyx: Sequence[float], radius_mm: float) -> np.ndarray:
    """A disk of ``radius_mm`` on axial slice ``centre_zyx[0]`` (2-D bool [y, x]), mm through the spacing."""
    if not radius_mm > 0:
        raise InputError(f"brush radius {radius_mm!r} mm: give a radius above 0")
    z, y, x = (float(v) for v in centre_zyx)
    if not (0 <= round(z) < volume.shape[0] and 0 <= y < volume.shape[1] and 0 <= x < volume.shape[2]):
        raise InputError(f"brush centre {tuple(centre_zyx)} lies outside the volume {tuple(volume.shape)}")
    sx, sy = volume.spacing[0], volume.spacing[1]
    yy, xx = np.ogrid[:volume.shape[1], :volume.shape[2]]
    return ((yy - y) * sy) ** 2 + ((xx - x) * sx) ** 2 <= radius_mm ** 2


def threshold_brush(volume, centre_zyx: Sequence[float], radius_mm: float,
                    hu_range: "tuple[float, float] | str" = SOLID_TUMOUR_HU) -> np.ndarray:
    """The brush disk limited to voxels whose HU lie in ``hu_range`` (inclusive), a pair or a preset name
    (``"solid tumour"``, ``"ground glass"``): 2-D bool [y, x] of slice ``centre_zyx[0]``."""
    if isinstance(hu_range, str):
        if hu_range not in HU_PRESETS:
            raise InputError(f"HU preset {hu_range!r}: choose one of {', '.join(HU_PRESETS)}")
        hu_range = HU_PRESETS[hu_range]
    lo, hi = (float(v) for v in hu_range)
    if not lo <= hi:
        raise InputError(f"HU range ({lo:g}, {hi:g}): the lower bound must not exceed the upper")
    disk = brush(volume, centre_zyx, radius_mm)
    hu = volume.array[int(round(float(centre_zyx[0])))]
    return disk & (hu >= lo) & (hu <= hi)
