"""A synthetic chest CT with known truth: the offline demo case and a test fixture.

Body with subcutaneous fat and muscle, ribs, a spine with vertebral bodies and spinal canal,
two lungs with branching vessels, trachea, mediastinum and heart (shifted to the patient's left
so the left lung is the smaller, as in life), a CT couch under the patient, and one solid tumour
in the right lung touching the mediastinum.  HU values and noise are realistic; everything is
built in millimetres so the phantom keeps its anatomy at any spacing.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungseg.imaging.volume import Volume


@dataclass(frozen=True)
class PhantomSpec:
    shape_zyx: tuple[int, int, int] = (64, 256, 256)
    spacing_zyx: tuple[float, float, float] = (3.0, 1.4, 1.4)
    noise_hu: float = 15.0
    tumour_radius_mm: float = 16.0
    with_couch: bool = True
    with_tumour: bool = True
    seed: int = 0


@dataclass
class Phantom:
    ct: Volume  # HU, int16, canonical LPS
    lungs: np.ndarray
    left_lung: np.ndarray  # patient left, +x
    right_lung: np.ndarray
    tumour: np.ndarray
    couch: np.ndarray
    spine_x_mm: float  # x of the spine's centre line in patient space
    label: str = "demo-phantom"


def synthetic_chest_ct(spec: PhantomSpec = PhantomSpec()) -> Phantom:
    """Build the phantom described by ``spec`` (deterministic for a seed)."""
    rng = np.random.default_rng(spec.seed)
    nz, ny, nx = spec.shape_zyx
    sz, sy, sx = spec.spacing_zyx
    # patient coordinates in mm, centred in-plane; z from the lung bases (0) upward
    z = (np.arange(nz) * sz)[:, None, None]
    y = ((np.arange(ny) - ny / 2 + 0.5) * sy)[None, :, None]
    x = ((np.arange(nx) - nx / 2 + 0.5) * sx)[None, None, :]
    height = nz * sz
    t = z / height  # 0 at the bottom, 1 at the top
    hu = np.full(spec.shape_zyx, -1000.0, dtype=np.float32)

    # body: an ellipse whose size shrinks a little toward the apex; body centre at y = -10 mm
    half_w = 0.40 * nx * sx * (1 - 0.12 * t)
    half_h = 0.28 * ny * sy * (1 - 0.10 * t)
    body_cy = -0.04 * ny * sy
    r_body = ((x / half_w) ** 2 + ((y - body_cy) / half_h) ** 2)
    body = r_body <= 1.0
    hu[np.broadcast_to(body, hu.shape)] = -100.0  # fat
    muscle = ((x / (half_w - 12)) ** 2 + ((y - body_cy) / (half_h - 12)) ** 2) <= 1.0
    muscle = np.broadcast_to(muscle, hu.shape)
    hu[muscle] = 45.0
    inner_w, inner_h = half_w - 22, half_h - 22
    cavity = np.broadcast_to(((x / inner_w) ** 2 + ((y - body_cy) / inner_h) ** 2) <= 1.0, hu.shape)

    # ribs: a ring of bone segments between muscle and cavity, one every 25 mm in z
    ring = np.broadcast_to((((x / (inner_w + 6)) ** 2 + ((y - body_cy) / (inner_h + 6)) ** 2) <= 1.0) & ~cavity, hu.shape)
    rib_level = np.broadcast_to((np.mod(z, 25.0) < 9.0), hu.shape)
    front = np.broadcast_to(np.abs(x) > 18, hu.shape)
    hu[ring & rib_level & front] = 700.0

    # spine: vertebral body + canal behind the cavity's posterior wall, at the midline x = 0
    spine_y = body_cy + inner_h - 8.0
    vert = np.broadcast_to((x**2 + (y - spine_y) ** 2) <= 16.0**2, hu.shape)
    hu[vert] = 400.0
    cortex = np.broadcast_to(((x**2 + (y - spine_y) ** 2) <= 16.0**2) & ((x**2 + (y - spine_y) ** 2) >= 13.0**2), hu.shape)
    hu[cortex] = 900.0
    canal = np.broadcast_to((x**2 + (y - spine_y - 22.0) ** 2) <= 7.0**2, hu.shape)
    hu[canal] = 20.0
    lamina = np.broadcast_to(((x**2 + (y - spine_y - 22.0) ** 2) <= 12.0**2) & ~((x**2 + (y - spine_y - 22.0) ** 2) <= 7.0**2), hu.shape)
    hu[lamina] = 700.0

    # lungs: two ellipsoid-like volumes inside the cavity, the left one smaller (the heart)
    lung_w = 0.5 * inner_w - 10
    dome = 0.05 + 0.9 * np.clip(t / 0.1, 0, 1)  # rounded bases
    apex = np.sqrt(np.clip(1 - ((t - 0.05) / 0.95) ** 2 * 0.0, 0, 1)) * np.clip((1.0 - t) / 0.12, 0, 1)
    scale = np.minimum(dome, apex)
    right_cx = -(0.5 * inner_w + 2)
    left_cx = 0.5 * inner_w + 6
    lung_h = inner_h - 8
    right = (((x - right_cx) / (lung_w * scale + 1e-3)) ** 2 + ((y - body_cy) / (lung_h * scale + 1e-3)) ** 2) <= 1.0
    left = (((x - left_cx) / (0.8 * lung_w * scale + 1e-3)) ** 2 + ((y - body_cy + 6) / (0.92 * lung_h * scale + 1e-3)) ** 2) <= 1.0
    lung_zone = (t > 0.02) & (t < 0.985)
    right = np.broadcast_to(right & lung_zone, hu.shape) & cavity & ~vert
    left = np.broadcast_to(left & lung_zone, hu.shape) & cavity & ~vert
    hu[right | left] = -850.0

    # heart, left of the midline and anterior in the lower two thirds
    heart = (((x - 22) / 55.0) ** 2 + ((y - body_cy + 25) / 45.0) ** 2 + ((z - 0.32 * height) / (0.3 * height)) ** 2) <= 1.0
    heart = np.broadcast_to(heart, hu.shape) & cavity
    hu[heart] = 40.0
    left &= ~heart
    right &= ~heart

    # vessels: thin branching tubes of blood inside the lungs
    vessels = np.zeros(hu.shape, dtype=bool)
    for cx, lung in ((right_cx, right), (left_cx, left)):
        for _ in range(10):
            ang = rng.uniform(0, 2 * np.pi)
            y0 = body_cy + rng.uniform(-10, 10)
            r_mm = rng.uniform(1.0, 2.0)
            d = np.abs((x - cx * 0.35) * np.sin(ang) - (y - y0) * np.cos(ang))
            along = (x - cx * 0.35) * np.cos(ang) + (y - y0) * np.sin(ang)
            tube = (d <= r_mm) & (along > 0.55 * lung_w) & (along < 1.1 * lung_w) & (np.abs(z - rng.uniform(0.2, 0.8) * height) < rng.uniform(10, 40))
            vessels |= np.broadcast_to(tube, hu.shape) & lung
    hu[vessels] = 40.0

    # trachea in the upper third, at the midline in front of the spine
    trachea = np.broadcast_to((x**2 + (y - spine_y + 32) ** 2 <= 9.0**2) & (t > 0.62), hu.shape)
    hu[trachea] = -1000.0

    truth_right, truth_left = right.copy(), left.copy()

    tumour = np.zeros(hu.shape, dtype=bool)
    if spec.with_tumour:
        # a lobulated solid tumour in the right lung, touching the mediastinum
        tz, ty, tx = 0.55 * height, body_cy - 5.0, right_cx + 0.55 * lung_w
        rr = np.sqrt((x - tx) ** 2 + (y - ty) ** 2 + (z - tz) ** 2)
        theta = np.arctan2(y - ty, x - tx)
        lobes = 1 + 0.12 * np.sin(3 * theta) * np.cos((z - tz) / 6.0)
        tumour = (rr <= spec.tumour_radius_mm * lobes) & (right | np.broadcast_to(cavity, hu.shape)) & ~vert
        tumour &= np.broadcast_to(cavity, hu.shape) & ~heart
        texture = ndi.gaussian_filter(rng.normal(0, 25, hu.shape).astype(np.float32), 1.0)
        hu[tumour] = 35.0 + texture[tumour]
        truth_right &= ~tumour  # as in radiotherapy structure sets: lung excludes GTV

    # the couch: a curved carbon-fibre shell with foam core, 25 mm below the body
    couch = np.zeros(hu.shape, dtype=bool)
    if spec.with_couch:
        top = body_cy + 0.28 * ny * sy + 25.0
        curve = top + 0.0008 * x**2
        shell_top = (y >= curve) & (y <= curve + 2.5)
        foam = (y > curve + 2.5) & (y < curve + 22.0)
        shell_bottom = (y >= curve + 22.0) & (y <= curve + 25.0)
        span = np.abs(x) < 0.45 * nx * sx
        hu[np.broadcast_to(shell_top & span, hu.shape)] = 300.0
        hu[np.broadcast_to(foam & span, hu.shape)] = -850.0
        hu[np.broadcast_to(shell_bottom & span, hu.shape)] = 300.0
        couch = np.broadcast_to((shell_top | foam | shell_bottom) & span, hu.shape).copy()

    hu = ndi.gaussian_filter(hu, sigma=(0.0, 0.6, 0.6))  # the scanner's point spread
    hu += rng.normal(0, spec.noise_hu, hu.shape).astype(np.float32)
    arr = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    origin = (float(x.min()), float(y.min()), -300.0)
    ct = Volume(arr, (sx, sy, sz), origin)
    return Phantom(
        ct=ct,
        lungs=truth_left | truth_right,
        left_lung=truth_left,
        right_lung=truth_right,
        tumour=tumour,
        couch=couch,
        spine_x_mm=0.0,
    )


def demo_case(spec: PhantomSpec = PhantomSpec()):
    """The offline demo: the phantom as a ``LoadedCT`` and its true tumour mask (made once per process
    and spec; both arrays are read-only, so the one copy can be shared)."""
    return _demo_case(spec)


@functools.lru_cache(maxsize=2)
def _demo_case(spec: PhantomSpec):
    from lungseg.imaging.io import LoadedCT

    ph = synthetic_chest_ct(spec)
    v = ph.ct
    info = {"source": "synthetic phantom", "modality": "CT (synthetic)", "manufacturer": "lungseg", "model": "phantom",
            "slice_thickness_mm": round(v.spacing[2], 4), "n_slices": v.shape[0],
            "size_xyz": [int(s) for s in v.grid.size], "spacing_mm": [round(s, 4) for s in v.spacing]}
    truth = np.asarray(ph.tumour, bool)
    v.array.setflags(write=False)
    truth.setflags(write=False)
    return LoadedCT(v, v.grid, ph.label, info), truth
