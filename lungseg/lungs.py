"""Classical lung-region isolation (seed section 3 and "Contributions").

``isolate(ct)`` runs, in order, each step a named function below:

1. :func:`body_and_couch`  — the CT couch is found and removed; the patient's body is kept.
2. :func:`air_components` — air-filled connected volumes inside the body.
3. :func:`grow_lungs`      — region growing and morphology: small vessels closed, adjacent
   regions connected → the tight 3D binary **lungs** mask (trachea and main bronchi removed).
4. :func:`spine_axis`      — the spine centre per axial slice: lung-window slice projected onto
   the coronal plane, 7th-order moving average, S0 = mean of the first five lung slices, then
   exponential smoothing S_t = α·x_t + (1 − α)·S_{t−1} with α = 0.3.
5. :func:`mirror_about_axis` — the lungs mask halved and flipped about the sagittal plane through
   the spine axis, united with itself.
6. :func:`dilate_in_plane` — dilation with a circle of r = 5 mm.
7. Every voxel outside the final **lung region** set to the normalised air value.

Every length is in millimetres and converted with the scan's spacing.  A scan without a couch,
two lungs or a spine in view does not fail: the result names each step it skipped and why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from lungseg.imaging.components import as_uint8, bounding_box, component_boxes, convex_hull_2d, label_components, label_slice
from lungseg.imaging.harmonise import LUNG_WINDOW, MODEL_WINDOW, HUWindow, normalise
from lungseg.imaging.volume import Volume, disk, mm_to_voxels


@dataclass(frozen=True)
class LungParams:
    """Parameters of lung isolation. Lengths in mm, areas in mm², volumes in ml."""

    body_threshold_hu: float = -500.0  # tissue vs air for the body outline
    couch_gap_mm: float = 4.0  # an in-plane opening this wide separates body from couch
    air_threshold_hu: float = -300.0  # lung parenchyma and airways lie below this
    min_lung_ml: float = 30.0  # smaller air volumes are bowel gas, noise or outside air
    second_lung_fraction: float = 0.05  # keep a separate air volume ≥ this share of the largest
    max_pure_air_fraction: float = 0.15  # above this share of voxels < −980 HU a volume is gas, not lung
    vessel_hole_mm2: float = 400.0  # in-plane holes up to this area (vessels, nodules) are filled
    closing_mm: float = 2.0  # 3D closing radius connecting adjacent regions
    airway_max_mm2: float = 1200.0  # a central air region up to this area is airway (larynx, trachea, bronchi)
    airway_dilation_mm: float = 2.0  # the trachea mask grown by this before removal (its wall)
    spine_filter_samples: int = 7  # the seed's "seventh-order moving average"
    spine_start_slices: int = 5  # S0 = mean over the first five lung slices
    spine_alpha: float = 0.3  # exponential smoothing weight
    fill_concavities: bool = True  # per-slice convex hull of each lung before mirroring (region only)
    margin_mm: float = 5.0  # the seed's circle kernel, r = 5
    window: HUWindow = MODEL_WINDOW  # normalisation of the isolated image


@dataclass
class LungResult:
    """Masks are boolean arrays ``[z, y, x]`` on the CT's canonical grid."""

    lungs: np.ndarray  # tight lungs (before flip and dilation)
    lung_region: np.ndarray  # final region: mirrored, united, dilated
    isolated: Volume  # normalised CT, outside the region set to air
    left_lung: np.ndarray  # patient left (+x in LPS)
    right_lung: np.ndarray
    body: np.ndarray
    couch: np.ndarray
    spine_x: np.ndarray  # spine-axis column per slice (NaN where not computed)
    skipped: dict[str, str] = field(default_factory=dict)  # step → reason
    params: LungParams = field(default_factory=LungParams)
    seconds: dict[str, float] = field(default_factory=dict)
    voxel_ml: float = 0.0

    @property
    def lung_volume_ml(self) -> tuple[float, float]:
        """(left, right) lung volumes in ml."""
        return float(self.left_lung.sum() * self.voxel_ml), float(self.right_lung.sum() * self.voxel_ml)

    @property
    def region_volume_ml(self) -> float:
        return float(self.lung_region.sum() * self.voxel_ml)

    def summary(self) -> str:
        left, right = self.lung_volume_ml
        text = f"lungs L {left:.0f} ml, R {right:.0f} ml; lung region {self.region_volume_ml:.0f} ml"
        if self.skipped:
            text += "; skipped: " + "; ".join(f"{k} ({v})" for k, v in self.skipped.items())
        return text

    def as_dict(self) -> dict:
        left, right = self.lung_volume_ml
        return {
            "left_lung_ml": round(left, 1),
            "right_lung_ml": round(right, 1),
            "lung_region_ml": round(self.region_volume_ml, 1),
            "skipped": dict(self.skipped),
            "params": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in asdict(self.params).items()},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _get_isolated(self: LungResult) -> Volume:
    value = self.__dict__["_isolated"]
    if callable(value):
        value = self.__dict__["_isolated"] = value()
    return value


def _set_isolated(self: LungResult, value) -> None:
    self.__dict__["_isolated"] = value


# ``isolated`` may be given as a Volume or as a function that makes it: the normalised image is a
# full-volume float32 array (4 bytes a voxel) that a caller wanting only the masks never pays for.
LungResult.isolated = property(_get_isolated, _set_isolated, doc=LungResult.__dataclass_fields__["isolated"].type)


# --------------------------------------------------------------------------------------------
# exact binary morphology, fast
#
# Each helper gives the same voxels as its scipy.ndimage counterpart (border value 0, 4-connected
# background for hole filling); OpenCV's SIMD kernels run an in-plane structuring element over a
# slice in well under a millisecond, where scipy's generic loop takes tens.


def _kernel(se2d: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(se2d, dtype=np.uint8)


def _per_slice(op, mask: np.ndarray, se2d: np.ndarray) -> np.ndarray:
    src, k = as_uint8(mask), _kernel(se2d)
    out = np.empty(mask.shape, np.uint8)
    for z in range(mask.shape[0]):
        op(src[z], k, dst=out[z], borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def dilate_slices(mask: np.ndarray, se2d: np.ndarray) -> np.ndarray:
    """Each axial slice dilated by the 2D structuring element ``se2d`` (outside = 0)."""
    return _per_slice(cv2.dilate, mask, se2d)


def erode_slices(mask: np.ndarray, se2d: np.ndarray) -> np.ndarray:
    """Each axial slice eroded by ``se2d``; voxels whose element reaches outside the image are removed."""
    return _per_slice(cv2.erode, mask, se2d)


def _morph3d(mask: np.ndarray, se: np.ndarray, erode: bool) -> np.ndarray:
    """3D dilation or erosion by a z-symmetric structuring element: each of its planes applied in-plane,
    shifted in z and united (dilation) or intersected (erosion; beyond the first and last slice is
    background)."""
    per_slice, combine = (erode_slices, np.logical_and) if erode else (dilate_slices, np.logical_or)
    n = se.shape[0] // 2
    out = per_slice(mask, se[n])
    for dz in range(1, n + 1):
        if not se[n + dz].any():
            continue
        plane = per_slice(mask, se[n + dz])
        combine(out[dz:], plane[:-dz], out=out[dz:])
        combine(out[:-dz], plane[dz:], out=out[:-dz])
        if erode:
            out[:dz] = False
            out[-dz:] = False
    return out


def _dilate3d(mask: np.ndarray, se: np.ndarray) -> np.ndarray:
    return _morph3d(mask, se, erode=False)


def _erode3d(mask: np.ndarray, se: np.ndarray) -> np.ndarray:
    return _morph3d(mask, se, erode=True)


def fill_holes_slices(mask: np.ndarray) -> np.ndarray:
    """Holes of each axial slice filled (background not 4-connected to the slice's border).

    Many slices at once: each slice is framed by background, the frames of a stack of slices
    touch, and one flood fill from the frame reaches exactly the outside background of every
    slice.  Stacks stay under 30,000 rows (OpenCV's flood fill goes wrong on images of 2^16 rows).
    """
    nz, ny, nx = mask.shape
    out = np.empty(mask.shape, dtype=bool)
    per_stack = max(1, 30_000 // (ny + 2))
    for z0 in range(0, nz, per_stack):
        part = mask[z0 : z0 + per_stack]
        n = part.shape[0]
        framed = np.zeros((n, ny + 2, nx + 2), np.uint8)
        framed[:, 1:-1, 1:-1] = part
        flat = framed.reshape(n * (ny + 2), nx + 2)
        reached = np.zeros((flat.shape[0] + 2, flat.shape[1] + 2), np.uint8)
        cv2.floodFill(flat, reached, (0, 0), 1, flags=4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8))
        out[z0 : z0 + n] = reached[1:-1, 1:-1].reshape(n, ny + 2, nx + 2)[:, 1:-1, 1:-1] == 0
    return out


# --------------------------------------------------------------------------------------------
# 1. body and couch


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = label_components(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def body_and_couch(hu: np.ndarray, spacing_zyx, params: LungParams = LungParams()) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The patient's body (holes filled per slice) and the CT couch beneath it.

    Works on a ~2 mm in-plane grid (the body outline needs no more).  Tissue denser than
    ``body_threshold_hu`` is opened in-plane with a disk of ``couch_gap_mm`` so that thin couch
    shells and pads touching the back come apart; the largest 3D component is the body.  Dense
    structures left outside it, below the body and wide across the image, are the couch.
    Returns full-resolution (body, couch, reason the couch step found nothing or None).
    """
    sy, sx = spacing_zyx[1], spacing_zyx[2]
    step = max(1, int(round(2.0 / min(sy, sx))))
    # the coarse grid samples every step-th pixel: threshold only those, not the whole volume
    dense = np.ascontiguousarray(hu[:, ::step, ::step]) > params.body_threshold_hu
    cy, cx = sy * step, sx * step
    se = disk(params.couch_gap_mm, (cy, cx))
    body = _largest_component(dilate_slices(erode_slices(dense, se), se))
    if not body.any():
        empty = np.zeros(hu.shape, dtype=bool)
        return empty, empty.copy(), "no body found"
    # give back what the opening shaved off the body's own edge, but nothing across the gap
    body = dilate_slices(body, se) & dense
    body = fill_holes_slices(body)

    labels, n = label_components(dense & ~dilate_slices(body, disk(cx, (cy, cx))))
    couch = np.zeros_like(body)
    if n:
        body_rows = np.nonzero(body.any(axis=(0, 2)))[0]
        body_centre_row = body_rows.mean()
        width = dense.shape[2]
        is_couch = np.zeros(n + 1, dtype=bool)
        for i, sl in enumerate(component_boxes(labels, n), start=1):
            if sl is None:
                continue
            rows, cols = sl[1], sl[2]
            wide = (cols.stop - cols.start) > 0.25 * width
            flat = (rows.stop - rows.start) * cy < 0.5 * (cols.stop - cols.start) * cx
            below = (rows.start + rows.stop) / 2 > body_centre_row
            is_couch[i] = wide and flat and below
        if is_couch.any():
            couch = is_couch[labels]
    # back to full resolution; the body is eroded by one coarse pixel so no air outside the skin
    # is taken for air inside the body
    body_inner = erode_slices(body, np.ones((3, 3), bool))
    full_body = _upsample(body_inner, step, hu.shape)
    full_couch = _upsample(couch, step, hu.shape)
    if couch.any():
        box = bounding_box(full_couch)
        full_couch[box] &= hu[box] > params.body_threshold_hu
    reason = None if couch.any() else "no couch in view"
    return full_body, full_couch, reason


def _upsample(mask: np.ndarray, step: int, shape) -> np.ndarray:
    """Each coarse pixel repeated ``step`` × ``step`` times in-plane, cut to ``shape``."""
    if step == 1:
        return mask
    nz, ny, nx = mask.shape
    out = np.empty((nz, ny, step, nx, step), dtype=bool)
    for i in range(step):  # plain strided copies: several times faster than np.repeat
        for j in range(step):
            out[:, :, i, :, j] = mask
    out = out.reshape(nz, ny * step, nx * step)
    return out if out.shape == tuple(shape) else np.ascontiguousarray(out[:, : shape[1], : shape[2]])


# --------------------------------------------------------------------------------------------
# 2. air-filled connected volumes


def air_components(hu: np.ndarray, body: np.ndarray, voxel_ml: float, params: LungParams = LungParams()) -> tuple[np.ndarray, str | None]:
    """Air-filled connected volumes inside the body that are lung.

    Lung parenchyma is air with tissue in it: almost none of its voxels read as pure air, while
    bowel and stomach gas (and air outside the patient) do, so a volume with more than
    ``max_pure_air_fraction`` of voxels below −980 HU is gas, not lung.  Of the lung-like volumes
    the largest is kept, and any other of at least ``second_lung_fraction`` of it (the other lung
    when the two do not touch) and at least ``min_lung_ml``.
    """
    air = (hu < params.air_threshold_hu) & body
    labels, n = label_components(air)
    if n == 0:
        return np.zeros_like(air), "no air inside the body"
    # counted over the air voxels only: bincount widens its input to int64, 8 bytes a voxel
    air_labels = labels[air]
    sizes = np.bincount(air_labels, minlength=n + 1).astype(float)
    sizes[0] = 0
    big = np.nonzero(sizes * voxel_ml >= params.min_lung_ml)[0]
    if len(big) == 0:
        return np.zeros_like(air), f"largest air volume {sizes.max() * voxel_ml:.0f} ml is below {params.min_lung_ml:.0f} ml"
    pure = np.bincount(air_labels[hu[air] < -980], minlength=n + 1)
    lung_like = [i for i in big if pure[i] / sizes[i] <= params.max_pure_air_fraction]
    if not lung_like:
        return np.zeros_like(air), "the air volumes inside the body are gas (bowel, stomach), not lung"
    largest = max(sizes[i] for i in lung_like)
    keep = [i for i in lung_like if sizes[i] >= params.second_lung_fraction * largest]
    lut = np.zeros(n + 1, dtype=bool)
    lut[keep] = True
    return lut[labels], None


# --------------------------------------------------------------------------------------------
# 3. region growing and morphology


def remove_airways(candidates: np.ndarray, body: np.ndarray, spacing_zyx, params: LungParams = LungParams()) -> tuple[np.ndarray, np.ndarray]:
    """Trachea and main bronchi, grown down from the apex while the airway stays small.

    On the most superior slice with air the airway is the air region near the body's centre line;
    it is followed slice by slice through overlap (region growing) until it runs into a
    lung-sized region.  Returns (lungs without airways, airway mask).
    """
    sy, sx = spacing_zyx[1], spacing_zyx[2]
    max_px = params.airway_max_mm2 / (sy * sx)
    airway = np.zeros_like(candidates)
    zs = np.nonzero(candidates.any(axis=(1, 2)))[0]
    previous = None
    for k in zs[::-1]:  # superior → inferior
        labels, n, sizes, centroids = label_slice(candidates[k])
        if previous is None:
            cols = np.nonzero(body[k].any(axis=0))[0]
            centre, width = (cols[0] + cols[-1]) / 2, cols[-1] - cols[0]
            chosen = [i for i in range(1, n + 1) if abs(centroids[i][0] - centre) < 0.1 * width]
        else:
            chosen = [t for t in np.unique(labels[previous]) if t > 0]
        if not chosen or sizes[chosen].sum() > max_px:
            break  # no airway here, or it has entered a lung
        current = np.isin(labels, chosen)
        airway[k] = current
        previous = current
    if airway.any():
        se = disk(params.airway_dilation_mm, (sy, sx))
        box = bounding_box(airway, pad=(0, se.shape[0], se.shape[1]))
        out = candidates.copy()
        out[box] &= ~dilate_slices(airway[box], se)
        return out, airway
    return candidates, airway


def grow_lungs(candidates: np.ndarray, spacing_zyx, params: LungParams = LungParams()) -> np.ndarray:
    """Morphology on the air candidates: a 3D closing of ``closing_mm`` connects adjacent regions
    and in-plane holes up to ``vessel_hole_mm2`` (vessels, small nodules) are filled."""
    if not candidates.any():
        return candidates
    sz, sy, sx = spacing_zyx
    box = bounding_box(candidates, pad=(2, mm_to_voxels(params.closing_mm, sy) + 2, mm_to_voxels(params.closing_mm, sx) + 2))
    sub = candidates[box]
    ball = _ellipsoid(params.closing_mm, (sz, sy, sx))
    closed = _erode3d(_dilate3d(sub, ball), ball) | sub
    # in-plane holes (4-connected, as scipy's fill_holes and label give them) up to the area limit
    holes = fill_holes_slices(closed) & ~closed
    max_hole_px = params.vessel_hole_mm2 / (sy * sx)
    for k in np.nonzero(holes.any(axis=(1, 2)))[0]:
        labels, _, sizes, _ = label_slice(holes[k])
        small = sizes <= max_hole_px
        small[0] = False
        closed[k] |= small[labels]
    out = np.zeros_like(candidates)
    out[box] = closed
    return out


def _ellipsoid(radius_mm: float, spacing_zyx) -> np.ndarray:
    r = [max(radius_mm / s, 0.5) for s in spacing_zyx]
    n = [int(np.floor(v)) for v in r]
    zz, yy, xx = np.mgrid[-n[0] : n[0] + 1, -n[1] : n[1] + 1, -n[2] : n[2] + 1]
    return (zz / r[0]) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2 <= 1.0


def split_left_right(lungs: np.ndarray, spine_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) lungs: patient left is +x in LPS, so columns right of the spine axis."""
    nx = lungs.shape[2]
    axis = np.where(np.isnan(spine_x), nx / 2.0, spine_x)
    first_left = np.clip(np.floor(axis).astype(int) + 1, 0, nx)  # the first column x > axis
    left = np.zeros_like(lungs)
    for k in np.nonzero(lungs.any(axis=(1, 2)))[0]:
        left[k, :, first_left[k]:] = lungs[k, :, first_left[k]:]
    return left, lungs ^ left


# --------------------------------------------------------------------------------------------
# 4. spine axis


def spine_axis(hu: np.ndarray, lungs: np.ndarray, body: np.ndarray, params: LungParams = LungParams()) -> tuple[np.ndarray, str | None]:
    """Spine-centre column per slice (NaN outside the lung slices), or (all NaN, reason).

    Each lung slice in the seed's lung window (W1500/L−600) is projected onto the coronal plane,
    i.e. summed along y, over the body behind the lungs' mid-line where the vertebra lies (so the
    heart does not pull the maximum); the profile is smoothed by a ``spine_filter_samples``-point moving
    average and the middle of its maximum plateau near the body's centre is the slice's spine point.
    """
    nz, ny, nx = hu.shape
    axis = np.full(nz, np.nan)
    zs = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if len(zs) < params.spine_start_slices:
        return axis, f"only {len(zs)} lung slices (the start point needs {params.spine_start_slices})"
    points = np.full(nz, np.nan)
    kernel = np.ones(params.spine_filter_samples) / params.spine_filter_samples
    for k in zs:
        b = body[k]
        rows = np.nonzero(b.any(axis=1))[0]
        cols = np.nonzero(b.any(axis=0))[0]
        if len(rows) == 0:
            continue
        if cols[0] <= 2 or cols[-1] >= nx - 3 or rows[0] <= 2 or rows[-1] >= ny - 3:
            continue  # body cut by the field of view: no reliable centre
        lung_rows = np.nonzero(lungs[k].any(axis=1))[0]
        mid_row = int(round(lung_rows.mean())) if len(lung_rows) else (rows[0] + rows[-1]) // 2
        slab = normalise(hu[k, mid_row : rows[-1] + 1], LUNG_WINDOW) * b[mid_row : rows[-1] + 1]
        bone = hu[k, mid_row : rows[-1] + 1] > 200
        if bone.sum() == 0:
            continue
        profile = np.convolve(slab.sum(axis=0), kernel, mode="same")
        centre = (cols[0] + cols[-1]) / 2
        half = 0.2 * (cols[-1] - cols[0])
        lo, hi = int(max(0, centre - half)), int(min(nx, centre + half + 1))
        band = profile[lo:hi]
        peak = int(np.argmax(band))
        # the maximum is a plateau (paraspinal muscle and bone both saturate the lung window):
        # take the middle of the plateau run around the peak
        top = band >= band[peak] - 0.02 * abs(band[peak])
        a = peak
        while a > 0 and top[a - 1]:
            a -= 1
        b = peak
        while b < len(band) - 1 and top[b + 1]:
            b += 1
        points[k] = lo + (a + b) / 2.0
    valid = zs[~np.isnan(points[zs])]
    if len(valid) < params.spine_start_slices:
        return axis, "spine not in view (body cut by the field of view or no bone behind the lungs)"
    s = float(np.mean(points[valid[: params.spine_start_slices]]))  # S0
    for k in range(valid[0], zs[-1] + 1):
        if not np.isnan(points[k]):
            s = params.spine_alpha * points[k] + (1 - params.spine_alpha) * s
        axis[k] = s
    return axis, None


# --------------------------------------------------------------------------------------------
# 5. mirror, 6. dilate


def mirror_about_axis(mask: np.ndarray, spine_x: np.ndarray) -> np.ndarray:
    """``mask`` united with its mirror image about the sagittal plane x = spine_x[z] of each slice."""
    out = mask.copy()
    nx = mask.shape[2]
    cols = np.arange(nx)
    for k in np.nonzero(~np.isnan(spine_x) & mask.any(axis=(1, 2)))[0]:
        src = np.rint(2 * spine_x[k] - cols).astype(int)
        valid = (src >= 0) & (src < nx)
        out[k][:, valid] |= mask[k][:, src[valid]]
    return out


def dilate_in_plane(mask: np.ndarray, radius_mm: float, spacing_zyx) -> np.ndarray:
    """Dilation of each axial slice by a circle of ``radius_mm``."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    se = disk(radius_mm, (spacing_zyx[1], spacing_zyx[2]))
    pad = (0, se.shape[0] // 2 + 1, se.shape[1] // 2 + 1)
    box = bounding_box(mask, pad=pad)
    out = np.zeros_like(mask)
    out[box] = dilate_slices(mask[box], se)
    return out


# --------------------------------------------------------------------------------------------
# the whole pipeline


def field_of_view_cut(body: np.ndarray) -> float:
    """Share of body slices where the body reaches the image edge (a cropped scan)."""
    zs = np.nonzero(body.any(axis=(1, 2)))[0]
    if len(zs) == 0:
        return 0.0
    edge = body[:, :, :3].any(axis=(1, 2)) | body[:, :, -3:].any(axis=(1, 2)) | body[:, :3, :].any(axis=(1, 2))
    return float(edge[zs].mean())


def fill_concavities(lung: np.ndarray) -> np.ndarray:
    """Each slice of one lung filled to its convex hull.

    A tumour at the hilum or against the chest wall sits in a concavity of the aerated lung; the
    hull brings it inside the region (the seed's mirroring does the same for tumours the other
    lung's shape covers).  Used for the region only, never for the tight lungs.
    """
    out = lung.copy()
    if not lung.any():
        return out
    box = bounding_box(lung)
    inner = lung[box]
    offset = np.array([box[1].start, box[2].start], dtype=float)
    rows_with = inner.any(axis=2)
    first = inner.argmax(axis=2)
    last = inner.shape[2] - 1 - inner[:, :, ::-1].argmax(axis=2)
    for j in np.nonzero(rows_with.any(axis=1))[0]:
        k = box[0].start + j
        pts = _row_extremes(rows_with[j], first[j], last[j]) + offset
        if len(pts) < 3:
            continue
        hull = convex_hull_2d(pts)
        if len(hull) < 3 or _area(hull) == 0:
            continue  # all pixels on one line: no area to fill
        _fill_convex(out[k], hull)
    return out


def _area(polygon: np.ndarray) -> float:
    y, x = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _fill_convex(image: np.ndarray, polygon: np.ndarray) -> None:
    """Set the pixels of ``image`` inside a convex ``polygon`` ((y, x) vertices, pixel units).

    The pixels :func:`lungseg.imaging.io.fill_polygons_even_odd` fills, by the same arithmetic:
    a row crossed at x_a ≤ x_b gets columns floor(x_a) + 1 … floor(x_b); a convex polygon crosses
    each row (half-open in y) exactly twice, so no cumulative sum over the image is needed.
    """
    from lungseg.imaging.io import row_crossings

    ny, nx = image.shape
    rows, cols = row_crossings(polygon, (ny, nx))
    if len(rows) == 0:
        return
    top = int(rows.min())
    lo = np.full(int(rows.max()) - top + 1, nx)
    hi = np.zeros_like(lo)
    np.minimum.at(lo, rows - top, cols)
    np.maximum.at(hi, rows - top, cols)
    left, right = int(lo.min()), int(hi.max())
    span = np.arange(left, right)
    image[top : top + len(lo), left:right] |= (span >= lo[:, None]) & (span < hi[:, None])


def _row_extremes(rows_with: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """(y, x) of the first and last pixel of each row: every pixel the convex hull can rest on."""
    rows = np.nonzero(rows_with)[0]
    a, b = first[rows], last[rows]
    two = a != b
    return np.concatenate([np.stack([rows, a], 1), np.stack([rows[two], b[two]], 1)]).astype(float)


def isolated_image(hu: np.ndarray, region: np.ndarray, window: HUWindow = MODEL_WINDOW) -> np.ndarray:
    """The normalised CT (float32) inside ``region``, the window's air value outside it."""
    out = np.full(hu.shape, window.air_value, dtype=np.float32)
    if region.any():
        box = bounding_box(region)
        inside = region[box]
        out[box][inside] = normalise(hu[box][inside], window)
    return out


def isolate(ct: Volume, params: LungParams = LungParams()) -> LungResult:
    """Lungs, lung region and the lung-isolated normalised CT of a canonical HU volume."""
    if not ct.is_canonical:
        raise ValueError("isolate() needs a canonical (LPS) volume as load_ct gives")
    hu_full = ct.array
    spacing = ct.spacing_zyx
    voxel_ml = ct.voxel_volume_ml
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        seconds[name] = now - t
        t = now

    body_full, couch, why = body_and_couch(hu_full, spacing, params)
    if why:
        skipped["couch removal"] = why
    cut = field_of_view_cut(body_full)
    if cut > 0.5:
        skipped["whole thorax"] = (f"the field of view cuts through the body on {cut:.0%} of slices; "
                                   "lung open to the image edge is not found")
    lap("body_and_couch")
    shape = hu_full.shape
    lungs_full = np.zeros(shape, dtype=bool)
    region_full = np.zeros(shape, dtype=bool)
    spine_full = np.full(shape[0], np.nan)
    if body_full.any():
        # everything after the body outline works inside the body's bounding box
        margin = mm_to_voxels(params.margin_mm, min(spacing[1:])) + 2
        box = bounding_box(body_full, pad=(0, margin, margin))
        hu, body = hu_full[box], body_full[box]
        candidates, why = air_components(hu, body, voxel_ml, params)
        if why:
            skipped["lungs"] = why
        lap("air_components")
        lungs, airway = remove_airways(candidates, body, spacing, params)
        if not airway.any() and candidates.any():
            skipped["airway removal"] = "no airway found at the top of the lungs (trachea out of view or separate)"
        lungs = grow_lungs(lungs, spacing, params) & body
        lap("grow_lungs")
        spine_x, why = spine_axis(hu, lungs, body, params)
        lap("spine_axis")
        if why:
            skipped["spine axis"] = why
            skipped["mirroring"] = "needs the spine axis"
            mirrored = lungs
        else:
            mirrored = mirror_about_axis(lungs, spine_x) & body
        lap("mirror")
        if params.fill_concavities:
            left, right = split_left_right(mirrored, spine_x)
            mirrored = (fill_concavities(left) | fill_concavities(right)) & body
        lap("fill_concavities")
        region = dilate_in_plane(mirrored, params.margin_mm, spacing)
        lap("dilate")
        lungs_full[box] = lungs
        region_full[box] = region
        spine_full = spine_x + box[2].start
        left_crop, right_crop = split_left_right(lungs, spine_x)
        left, right = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        left[box], right[box] = left_crop, right_crop
        n_left, n_right = int(np.count_nonzero(left_crop)), int(np.count_nonzero(right_crop))
    else:
        left, right = lungs_full.copy(), lungs_full.copy()
        n_left = n_right = 0
    if n_left + n_right and (n_left * voxel_ml < params.min_lung_ml or n_right * voxel_ml < params.min_lung_ml):
        skipped.setdefault("two lungs", f"only the {'left' if n_left > n_right else 'right'} lung in view")
    lap("left_right")
    return LungResult(
        lungs=lungs_full,
        lung_region=region_full,
        isolated=lambda: ct.with_array(isolated_image(hu_full, region_full, params.window)),
        left_lung=left,
        right_lung=right,
        body=body_full,
        couch=couch,
        spine_x=spine_full,
        skipped=skipped,
        params=params,
        seconds=seconds,
        voxel_ml=voxel_ml,
    )
