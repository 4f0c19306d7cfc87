"""Insert synthetic lung tumours into a real (tumour-free) chest CT, with their ground-truth mask.

Each call inserts 1–3 lesions (``TumourSpec.lesion_count_range``) of these kinds:

* ``lobulated`` — solid nodule/mass whose radius varies with a few smooth lobes;
* ``spiculated`` — lobulated solid body plus thin tapering spicules radiating outward;
* ``part_solid`` — ground-glass component (−500 … −300 HU, vessels stay visible through it) with a
  solid core of 30–60 % of the lesion diameter;
* ``juxtapleural`` — lobulated solid lesion centred close to the costal pleura (lateral, anterior
  or posterior lung wall) so that its broad base touches the chest wall;
* ``hilar`` — lobulated solid lesion touching the mediastinal (medial) lung border.

The interior kinds lie inside the lung mask; juxtapleural and hilar lesions touch the border and
may extend at most ``border_overlap_mm`` beyond it (into pleura / mediastinum), so they are mostly
inside the lungs. Diameters are drawn log-uniformly in ``diameter_range_mm`` (5–80 mm: small
nodules are more common) and converted to voxels with the anisotropic spacing; a lesion that
does not fit is shrunk until it does (or skipped below the minimum diameter).

Image model: solid tissue has a per-lesion mean drawn in ``solid_hu_range`` (0–60 HU) plus
spatially correlated texture; the lesion's binary shape is Gaussian-smoothed (``edge_blur_mm``,
at least half a voxel per axis, which stands in for partial volume in thick slices) into an
occupancy in [0, 1] that blends tumour and background HU; Gaussian noise with the standard
deviation estimated from the lung parenchyma is added where the tumour replaced background so the
noise level matches. The ground-truth mask is ``occupancy > 0.5`` (for part-solid lesions the
whole lesion, ground glass included, as in clinical GTVs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy import ndimage

from lungseg.errors import InputError
from lungseg.imaging.volume import Volume


class LesionKind(str, Enum):
    LOBULATED = "lobulated"
    SPICULATED = "spiculated"
    PART_SOLID = "part_solid"
    JUXTAPLEURAL = "juxtapleural"
    HILAR = "hilar"


BORDER_KINDS = (LesionKind.JUXTAPLEURAL, LesionKind.HILAR)
MAX_LOBE_DENT = 0.35  # relative radius limits of the lobulated surface
MAX_LOBE_BULGE = 0.6


@dataclass(frozen=True)
class TumourSpec:
    """What to insert. All lengths in millimetres, intensities in HU."""

    kinds: tuple[LesionKind, ...] = tuple(LesionKind)
    kind_weights: tuple[float, ...] | None = None  # relative frequency per kind; None = equal
    lesion_count_range: tuple[int, int] = (1, 3)  # inclusive
    diameter_range_mm: tuple[float, float] = (5.0, 80.0)  # log-uniform
    solid_hu_range: tuple[float, float] = (0.0, 60.0)  # per-lesion mean of solid tissue
    texture_sd_hu: float = 12.0
    texture_correlation_mm: float = 2.0
    ground_glass_hu_range: tuple[float, float] = (-500.0, -300.0)
    solid_core_fraction_range: tuple[float, float] = (0.3, 0.6)  # part-solid core / lesion diameter
    elongation_range: tuple[float, float] = (0.8, 1.25)  # ellipsoid semi-axis factors (volume kept)
    lobe_amplitude_range: tuple[float, float] = (0.08, 0.3)  # relative radius change per lobe
    lobe_count_range: tuple[int, int] = (4, 9)
    spicule_count_range: tuple[int, int] = (12, 30)
    spicule_length_fraction_range: tuple[float, float] = (0.5, 1.5)  # beyond the surface, × radius
    spicule_width_mm_range: tuple[float, float] = (1.5, 3.5)  # at the base
    edge_blur_mm: float = 1.0  # Gaussian sigma of the occupancy
    min_edge_blur_voxels: float = 0.5
    border_overlap_mm: float = 2.0  # juxtapleural/hilar: how far beyond the lung mask they may reach
    min_separation_mm: float = 5.0  # gap between the nominal spheres of two lesions
    shrink_factor: float = 0.8  # diameter multiplier when a lesion does not fit
    max_attempts: int = 30

    def __post_init__(self):
        if not self.kinds:
            raise ValueError("TumourSpec.kinds is empty")
        if self.kind_weights is not None and len(self.kind_weights) != len(self.kinds):
            raise ValueError("TumourSpec.kind_weights needs one weight per kind")
        low, high = self.diameter_range_mm
        if not 0 < low <= high:
            raise ValueError(f"diameter_range_mm must satisfy 0 < low <= high, got {self.diameter_range_mm}")


@dataclass(frozen=True)
class InsertedLesion:
    kind: LesionKind
    centre_zyx: tuple[int, int, int]  # voxel index of the nominal centre
    diameter_mm: float  # nominal (sphere-equivalent before lobes and spicules)
    voxel_count: int  # voxels in the ground-truth mask
    solid_mean_hu: float


@dataclass(frozen=True)
class InsertionResult:
    hu: np.ndarray  # float32 [z, y, x]
    mask: np.ndarray  # bool [z, y, x], union of all inserted lesions
    lesions: list[InsertedLesion] = field(default_factory=list)


# --- public entry points -----------------------------------------------------------------------


def insert_tumours(
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    lungs: np.ndarray,
    rng: np.random.Generator,
    spec: TumourSpec = TumourSpec(),
) -> tuple[np.ndarray, np.ndarray]:
    """Insert 1–3 synthetic tumours into ``hu`` (not modified) inside ``lungs``.

    Returns ``(new_hu float32 [z, y, x], tumour_mask bool [z, y, x])``. See
    :func:`insert_tumours_detailed` for the per-lesion record.
    """
    result = insert_tumours_detailed(hu, spacing_zyx, lungs, rng, spec)
    return result.hu, result.mask


def insert_tumours_into_volume(
    ct: Volume, lungs: np.ndarray, rng: np.random.Generator, spec: TumourSpec = TumourSpec()
) -> tuple[Volume, np.ndarray]:
    """:func:`insert_tumours` for a :class:`Volume` in HU; returns the new volume and the mask."""
    new_hu, mask = insert_tumours(ct.array, ct.spacing_zyx, lungs, rng, spec)
    return ct.with_array(new_hu), mask


def insert_tumours_detailed(
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    lungs: np.ndarray,
    rng: np.random.Generator,
    spec: TumourSpec = TumourSpec(),
) -> InsertionResult:
    """Like :func:`insert_tumours`, also listing every inserted lesion.

    Raises :class:`InputError` when the lungs are empty or have no room for even the smallest
    lesion.
    """
    hu = np.asarray(hu)
    lungs = np.asarray(lungs, dtype=bool)
    if hu.ndim != 3 or hu.shape != lungs.shape:
        raise InputError(f"CT {hu.shape} and lung mask {lungs.shape} must be 3D arrays of one shape")
    if not lungs.any():
        raise InputError("the lung mask is empty, so there is nowhere to insert a tumour")
    spacing = np.asarray(spacing_zyx, dtype=float)

    out = np.asarray(hu, dtype=np.float32).copy()
    mask = np.zeros(hu.shape, dtype=bool)
    noise_sd = estimate_noise_sd(out, lungs)

    crop = _lung_crop(lungs, spacing, spec)
    placement = _Placement(lungs[crop], spacing, spec)
    out_crop, mask_crop = out[crop], mask[crop]  # views: writes go to ``out`` and ``mask``
    offset = np.array([s.start for s in crop])

    weights = np.ones(len(spec.kinds)) if spec.kind_weights is None else np.asarray(spec.kind_weights, float)
    weights = weights / weights.sum()
    wanted = int(rng.integers(spec.lesion_count_range[0], spec.lesion_count_range[1] + 1))
    lesions: list[InsertedLesion] = []
    placed_spheres: list[tuple[np.ndarray, float]] = []  # (centre in crop voxels, radius mm)
    attempts = 0
    while len(lesions) < wanted and attempts < spec.max_attempts:
        attempts += 1
        kind = spec.kinds[int(rng.choice(len(spec.kinds), p=weights))]
        low, high = spec.diameter_range_mm
        diameter = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        found = placement.find_centre(kind, diameter, placed_spheres, rng)
        if found is None:
            continue
        centre, diameter = found
        rendered = _render_lesion(
            out_crop, placement.lungs, placement.allowed_region(kind), spacing, kind, centre, diameter, noise_sd, rng, spec
        )
        if rendered is None:
            continue
        box, new_hu, lesion_mask, solid_mean = rendered
        out_crop[box] = new_hu
        mask_crop[box] |= lesion_mask
        placed_spheres.append((centre, diameter / 2.0))
        lesions.append(
            InsertedLesion(kind, tuple(int(v) for v in centre + offset), diameter, int(lesion_mask.sum()), solid_mean)
        )
    if not lesions:
        raise InputError(
            f"no room for a {spec.diameter_range_mm[0]:g} mm lesion of kinds "
            f"{[k.value for k in spec.kinds]} in these lungs"
        )
    return InsertionResult(out, mask, lesions)


def estimate_noise_sd(hu: np.ndarray, lungs: np.ndarray, max_slices: int = 24) -> float:
    """Noise standard deviation (HU) of the lung parenchyma.

    Robust (MAD) spread of the in-plane high-pass residual ``hu − G_1px * hu`` over eroded lung
    voxels of up to ``max_slices`` slices, corrected for the part of white noise the filter keeps.
    """
    inner = ndimage.binary_erosion(lungs, structure=np.ones((1, 5, 5), bool))
    slices = np.flatnonzero(inner.any(axis=(1, 2)))
    if slices.size == 0:
        return 0.0
    slices = slices[np.linspace(0, slices.size - 1, min(max_slices, slices.size)).round().astype(int)]
    samples = []
    for k in slices:
        image = hu[k].astype(np.float32)
        residual = image - ndimage.gaussian_filter(image, 1.0)
        samples.append(residual[inner[k]])
    values = np.concatenate(samples)
    mad_sd = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    impulse = np.zeros((9, 9), np.float64)
    impulse[4, 4] = 1.0
    kernel = ndimage.gaussian_filter(impulse, 1.0)
    kept_fraction = np.sqrt((1.0 - kernel[4, 4]) ** 2 + (kernel**2).sum() - kernel[4, 4] ** 2)
    return mad_sd / float(kept_fraction)


# --- placement ----------------------------------------------------------------------------------


def _lung_crop(lungs: np.ndarray, spacing: np.ndarray, spec: TumourSpec) -> tuple[slice, ...]:
    """Bounding box of the lungs plus room for the border shell and the edge blur."""
    margin_mm = spec.border_overlap_mm + 4.0 * spec.edge_blur_mm
    crop = []
    for axis in range(3):
        present = np.flatnonzero(lungs.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = int(np.ceil(margin_mm / spacing[axis])) + 2
        crop.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, lungs.shape[axis])))
    return tuple(crop)


class _Placement:
    """Distance maps of the (cropped) lungs used to choose lesion centres.

    Holes inside the lungs of an axial slice (vessels or airways left out of the lung mask) are
    filled first: they count as lung for placement, and tumours may engulf them.
    """

    def __init__(self, lungs: np.ndarray, spacing: np.ndarray, spec: TumourSpec):
        lungs = np.stack([ndimage.binary_fill_holes(axial) for axial in lungs])
        self.lungs = lungs
        self.spacing = spacing
        self.spec = spec
        self.depth_mm = ndimage.distance_transform_edt(lungs, sampling=spacing).astype(np.float32)
        outside_mm = ndimage.distance_transform_edt(~lungs, sampling=spacing)
        self.shell_region = lungs | (outside_mm <= spec.border_overlap_mm)
        self.midline_x = float(np.nonzero(lungs)[2].mean())

    def allowed_region(self, kind: LesionKind) -> np.ndarray:
        return self.shell_region if kind in BORDER_KINDS else self.lungs

    def find_centre(
        self,
        kind: LesionKind,
        diameter_mm: float,
        placed: list[tuple[np.ndarray, float]],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, float] | None:
        """A voxel centre for ``kind`` at ``diameter_mm``, shrinking the lesion until it fits."""
        while diameter_mm >= self.spec.diameter_range_mm[0] - 1e-9:
            candidates = self._candidates(kind, diameter_mm / 2.0, placed, rng)
            if candidates.shape[0]:
                return candidates[int(rng.integers(candidates.shape[0]))], diameter_mm
            diameter_mm *= self.spec.shrink_factor
        return None

    def _candidates(
        self, kind: LesionKind, radius_mm: float, placed: list[tuple[np.ndarray, float]], rng: np.random.Generator
    ) -> np.ndarray:
        if kind in BORDER_KINDS:
            finest = float(self.spacing.min())
            # depth runs to the nearest non-lung voxel centre, about half a voxel beyond the wall;
            # the nominal sphere then crosses the wall by 0.3–0.7 of its radius
            low = max(0.3 * radius_mm + finest / 2.0, finest)
            high = max(0.7 * radius_mm + finest / 2.0, low)
            eligible = (self.depth_mm >= low) & (self.depth_mm <= high)
        else:
            eligible = self.depth_mm >= 1.1 * radius_mm
        flat = np.flatnonzero(eligible)
        if flat.size > 20000:
            flat = rng.choice(flat, 20000, replace=False)
        points = np.stack(np.unravel_index(flat, eligible.shape), axis=1)
        for centre, other_radius in placed:
            gap = np.linalg.norm((points - centre) * self.spacing, axis=1)
            points = points[gap >= radius_mm + other_radius + self.spec.min_separation_mm]
        if kind in BORDER_KINDS and points.shape[0]:
            points = points[self._facing(points, kind)]
        return points

    def _facing(self, points: np.ndarray, kind: LesionKind) -> np.ndarray:
        """Which points have their nearest lung border on the chest wall (juxtapleural) or on
        the medial, mediastinal side (hilar); the direction to the border is −∇depth."""
        gradient = np.zeros(points.shape, dtype=float)
        upper = np.array(self.depth_mm.shape) - 1
        for axis in range(3):
            step = np.zeros(3, dtype=int)
            step[axis] = 1
            ahead = np.minimum(points + step, upper)
            behind = np.maximum(points - step, 0)
            rise = self.depth_mm[tuple(ahead.T)] - self.depth_mm[tuple(behind.T)]
            run = (ahead[:, axis] - behind[:, axis]).clip(min=1) * self.spacing[axis]
            gradient[:, axis] = rise / run
        toward_border = -gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-9)
        medial_sign = np.sign(self.midline_x - points[:, 2])
        medial = toward_border[:, 2] * medial_sign
        in_plane = np.abs(toward_border[:, 0]) <= 0.5
        if kind is LesionKind.HILAR:
            return in_plane & (medial >= 0.6)
        return in_plane & ((medial <= -0.3) | (np.abs(toward_border[:, 1]) >= 0.7))


# --- rendering ----------------------------------------------------------------------------------


def _random_unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(count, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _lobulated_radius(directions: np.ndarray, radius_mm: float, rng: np.random.Generator, spec: TumourSpec) -> np.ndarray:
    """Radius (mm) per unit direction ``[..., 3]``: the nominal radius plus von Mises-shaped lobes,
    each lobe's mean over the sphere removed so the mean radius stays ``radius_mm``."""
    count = int(rng.integers(spec.lobe_count_range[0], spec.lobe_count_range[1] + 1))
    axes = _random_unit_vectors(count, rng)
    amplitudes = rng.uniform(*spec.lobe_amplitude_range, size=count) * rng.choice([-1.0, 1.0], size=count, p=[0.3, 0.7])
    sharpness = rng.uniform(3.0, 10.0, size=count)
    relative = np.zeros(directions.shape[:-1], dtype=np.float32)
    for axis, amplitude, kappa in zip(axes, amplitudes, sharpness):
        cosine = directions @ axis.astype(np.float32)
        mean_on_sphere = (1.0 - np.exp(-2.0 * kappa)) / (2.0 * kappa)
        relative += np.float32(amplitude) * (np.exp(kappa * (cosine - 1.0)) - np.float32(mean_on_sphere))
    return radius_mm * (1.0 + np.clip(relative, -MAX_LOBE_DENT, MAX_LOBE_BULGE))


def _elongate(offsets_mm: np.ndarray, rng: np.random.Generator, spec: TumourSpec) -> np.ndarray:
    """Offsets in the frame of a randomly oriented ellipsoid of unit volume ratio, so a sphere
    in the returned coordinates is an ellipsoid of the same volume in the image."""
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    semi_axes = rng.uniform(*spec.elongation_range, size=3)
    semi_axes /= np.prod(semi_axes) ** (1.0 / 3.0)
    transform = (rotation / semi_axes[None, :]) @ rotation.T
    return (offsets_mm @ transform.astype(np.float32)).astype(np.float32)


def _spicules(offsets_mm: np.ndarray, radius_mm: float, rng: np.random.Generator, spec: TumourSpec) -> np.ndarray:
    """Thin cones from inside the body outward, tapering to a point."""
    count = int(rng.integers(spec.spicule_count_range[0], spec.spicule_count_range[1] + 1))
    inside = np.zeros(offsets_mm.shape[:-1], dtype=bool)
    squared_distance = (offsets_mm**2).sum(axis=-1)
    for axis in _random_unit_vectors(count, rng):
        length = radius_mm * rng.uniform(*spec.spicule_length_fraction_range) + 2.0
        half_width = rng.uniform(*spec.spicule_width_mm_range) / 2.0
        start = 0.3 * radius_mm  # well inside the body, so the strand is attached to it
        along = offsets_mm @ axis.astype(np.float32)
        across = np.sqrt(np.maximum(squared_distance - along**2, 0.0))
        taper = 1.0 - (along - start) / (radius_mm + length - start)
        # square root: the strand stays visible for most of its length, then ends sharply
        inside |= (along >= start) & (taper >= 0.0) & (across <= half_width * np.sqrt(np.clip(taper, 0.0, 1.0)))
    return inside


def _texture(shape: tuple[int, ...], spacing: np.ndarray, correlation_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with ``correlation_mm`` smoothing."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), correlation_mm / spacing)
    sd = float(field_.std())
    return field_ / sd if sd > 0 else field_


def _render_lesion(
    hu: np.ndarray,
    lungs: np.ndarray,
    allowed: np.ndarray,
    spacing: np.ndarray,
    kind: LesionKind,
    centre: np.ndarray,
    diameter_mm: float,
    noise_sd: float,
    rng: np.random.Generator,
    spec: TumourSpec,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, float] | None:
    """New HU and mask of one lesion within its bounding box, or None if nothing of it is left."""
    radius = diameter_mm / 2.0
    sigma_voxels = np.maximum(spec.edge_blur_mm / spacing, spec.min_edge_blur_voxels)
    low, high = spec.elongation_range
    reach = radius * (high / low) ** (2.0 / 3.0) * (1.0 + MAX_LOBE_BULGE)
    if kind is LesionKind.SPICULATED:
        reach = max(reach, radius * (1.0 + spec.spicule_length_fraction_range[1]) + 2.0)
    reach += 4.0 * float((sigma_voxels * spacing).max())
    box = tuple(
        slice(max(int(c) - int(np.ceil(reach / s)), 0), min(int(c) + int(np.ceil(reach / s)) + 1, n))
        for c, s, n in zip(centre, spacing, hu.shape)
    )
    offsets = np.stack(
        np.meshgrid(*[(np.arange(b.start, b.stop) - c) * s for b, c, s in zip(box, centre, spacing)], indexing="ij"),
        axis=-1,
    ).astype(np.float32)
    shape_offsets = _elongate(offsets, rng, spec)
    distance = np.linalg.norm(shape_offsets, axis=-1)
    directions = shape_offsets / np.maximum(distance, 1e-6)[..., None]

    body = distance <= _lobulated_radius(directions, radius, rng, spec)
    if kind is LesionKind.SPICULATED:
        body |= _spicules(offsets, radius, rng, spec)
    body &= allowed[box]
    occupancy = ndimage.gaussian_filter(body.astype(np.float32), sigma_voxels)
    lesion_mask = (occupancy > 0.5) & allowed[box]
    if not lesion_mask.any():
        return None
    if kind in BORDER_KINDS and not (ndimage.binary_dilation(lesion_mask) & ~lungs[box]).any():
        return None  # it must touch the lung border

    background = hu[box]
    texture = _texture(body.shape, spacing, spec.texture_correlation_mm, rng)
    solid_mean = float(rng.uniform(*spec.solid_hu_range))
    solid = solid_mean + spec.texture_sd_hu * texture
    if kind is LesionKind.PART_SOLID:
        ground_glass = rng.uniform(*spec.ground_glass_hu_range) + 2.0 * spec.texture_sd_hu * texture
        # ground glass only raises attenuation: vessels crossing it stay visible
        new_hu = background + occupancy * np.maximum(ground_glass - background, 0.0)
        core_radius = radius * rng.uniform(*spec.solid_core_fraction_range)
        core = (distance <= _lobulated_radius(directions, core_radius, rng, spec)) & body
        core_occupancy = ndimage.gaussian_filter(core.astype(np.float32), sigma_voxels)
        new_hu = new_hu + core_occupancy * (solid - new_hu)
    else:
        new_hu = background + occupancy * (solid - background)

    # the blend averages the background noise away; add back what is missing
    noise = _texture(body.shape, spacing, 0.5 * float(spacing[1:].min()), rng)
    missing = np.sqrt(np.clip(1.0 - (1.0 - occupancy) ** 2, 0.0, 1.0))
    new_hu = new_hu + noise_sd * missing * noise
    new_hu = np.maximum(new_hu, np.minimum(background, -1024.0))  # no values below the CT floor
    return box, new_hu.astype(np.float32), lesion_mask, solid_mean
