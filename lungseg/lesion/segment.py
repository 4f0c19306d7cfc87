"""Click-to-segment: one click (a point in mm) → the lesion under it, on the volume's own grid.

The network sees a patch of fixed size on a fixed millimetre grid (:class:`ClickGrid`) centred on the
click, whatever the scan's spacing.  Large lesions: the field of view grows.  The first pass uses the
finest grid (30 mm across); while the lesion under the click touches a face of the patch that lies
inside the scan, the pass is repeated with every spacing doubled (60, 120, 240 mm), so a 7 cm
primary is contoured on a 3 mm grid that holds all of it.  The probability of the last pass is
interpolated back onto the scan's voxels and the connected part under the click is kept.

``torch`` is imported only when a predictor is built (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lungseg.errors import InputError
from lungseg.imaging.volume import Volume
from lungseg.lesion.patch import PatchGrid, patch_faces_inside, patch_to_volume, sample_patch, touches_faces

DEFAULT_LESION_MODEL = Path(__file__).resolve().parents[2] / "models" / "lesion_click.pt"
CONNECT_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class ClickGrid:
    """The model's patch: ``shape`` voxels of ``spacing_zyx`` mm at scale 1, grown by ``scales``."""

    spacing_zyx: tuple[float, float, float] = (1.25, 0.75, 0.75)
    shape: tuple[int, int, int] = (24, 40, 40)
    scales: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    hu_window: tuple[float, float] = (-1000.0, 400.0)

    def patch(self, centre_zyx_mm, scale: float) -> PatchGrid:
        return PatchGrid(tuple(float(c) for c in centre_zyx_mm), tuple(s * scale for s in self.spacing_zyx), self.shape)

    def normalise(self, hu: np.ndarray) -> np.ndarray:
        lo, hi = self.hu_window
        return ((np.clip(hu, lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)).astype(np.float32)

    def as_dict(self) -> dict:
        return {"spacing_zyx": list(self.spacing_zyx), "shape": list(self.shape), "scales": list(self.scales),
                "hu_window": list(self.hu_window)}

    @classmethod
    def from_dict(cls, d: dict) -> "ClickGrid":
        return cls(tuple(d["spacing_zyx"]), tuple(int(v) for v in d["shape"]), tuple(d["scales"]), tuple(d["hu_window"]))


@dataclass
class LesionResult:
    """The lesion under one click, on the grid of the volume it was asked on."""

    mask: np.ndarray  # bool, the volume's shape
    point_mm: tuple[float, float, float]
    volume_ml: float
    longest_axial_diameter_mm: float
    equivalent_diameter_mm: float  # of the sphere with the same volume
    field_of_view_mm: float  # in-plane width of the last patch
    larger_than_view: bool  # still touching the largest patch: the contour may be cut
    seconds: float
    extent_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # bounding box, x × y × z
    slices: tuple[int, int] | None = None  # first and last axial slice (0-based) of the lesion
    nothing_here: str = ""  # why the click gave no lesion although the model found something nearby

    @property
    def found(self) -> bool:
        return bool(self.volume_ml > 0)

    @property
    def warnings(self) -> list[str]:
        """Plain warnings when the result is unlikely to be one lesion (see :func:`plausibility`)."""
        return plausibility(self)

    def summary(self) -> str:
        if not self.found:
            return self.nothing_here or "no lesion under the click"
        s = (f"{self.volume_ml:.2f} ml, longest axial diameter {self.longest_axial_diameter_mm:.1f} mm, "
             f"equivalent diameter {self.equivalent_diameter_mm:.1f} mm (field of view {self.field_of_view_mm:.0f} mm)")
        s += ", extent {:.0f} × {:.0f} × {:.0f} mm (x × y × z)".format(*self.extent_mm)
        s += "; larger than the largest field of view, contour may be cut" if self.larger_than_view else ""
        return s + "".join(f"; {w}" for w in self.warnings)


@dataclass(frozen=True)
class PlausibleLesion:
    """What one click's lesion is expected to be: at most ``max_volume_ml`` and ``max_extent_mm`` across
    (a primary lung tumour rarely exceeds either), and it holds the clicked voxel."""

    max_volume_ml: float = 300.0
    max_extent_mm: float = 120.0
    click_tolerance_mm: float = 3.0  # a click this close to the lesion's edge still names it


def plausibility(result: LesionResult, click_zyx=None, limits: PlausibleLesion = PlausibleLesion()) -> list[str]:
    """Plain warnings about a clicked lesion that is unlikely to be one: over ``max_volume_ml``, wider than
    ``max_extent_mm`` in any direction, or not holding the clicked voxel ``click_zyx`` (canonical [z, y, x]
    indices; default: the voxel of ``result.point_mm`` is not known here, so that test needs it).  Empty
    for a plausible result and for no result."""
    if not result.found:
        return []
    out = []
    if result.volume_ml > limits.max_volume_ml:
        out.append(f"it is {result.volume_ml:.0f} ml, more than {limits.max_volume_ml:.0f} ml")
    widest = max(result.extent_mm)
    if widest > limits.max_extent_mm:
        out.append(f"it spans {widest:.0f} mm, more than {limits.max_extent_mm / 10:.0f} cm "
                   "({:.0f} × {:.0f} × {:.0f} mm)".format(*result.extent_mm))
    if click_zyx is not None:
        z, y, x = (int(round(float(v))) for v in click_zyx)
        inside = all(0 <= c < n for c, n in zip((z, y, x), result.mask.shape)) and bool(result.mask[z, y, x])
        if not inside:
            out.append("it does not contain the clicked point")
    return out


def extent_mm(mask: np.ndarray, volume: Volume) -> tuple[float, float, float]:
    """The bounding box of ``mask`` in mm, (x, y, z); zeros for an empty mask."""
    where = [np.flatnonzero(mask.any(axis=a)) for a in ((0, 1), (0, 2), (1, 2))]  # x, y, z
    if any(len(w) == 0 for w in where):
        return 0.0, 0.0, 0.0
    return tuple(float((w[-1] - w[0] + 1) * s) for w, s in zip(where, volume.spacing))


def check_point(volume: Volume, point_mm) -> np.ndarray:
    """The click as continuous [z, y, x] indices; a point outside the volume is an InputError."""
    p = np.asarray(point_mm, dtype=float).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"a click needs three finite coordinates x,y,z in mm, got {point_mm!r}")
    idx = volume.physical_to_index(p)[0]
    if np.any(idx < -0.5) or np.any(idx > np.asarray(volume.shape) - 0.5):
        lo = volume.index_to_physical(np.zeros(3))[0]
        hi = volume.index_to_physical(np.asarray(volume.shape) - 1.0)[0]
        box = ", ".join(f"{min(a, b):.1f}..{max(a, b):.1f}" for a, b in zip(lo, hi))
        raise InputError(f"the point ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm lies outside the volume (x, y, z extent {box} mm)")
    return idx


def component_at(mask: np.ndarray, zyx: tuple[int, int, int], search_voxels: int = 3) -> np.ndarray:
    """The 26-connected component of ``mask`` holding voxel ``zyx``, else the one nearest to it within
    ``search_voxels``; empty if none."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    labels, _ = ndi.label(mask, structure=CONNECT_26)
    z, y, x = (int(v) for v in zyx)
    if labels[z, y, x]:
        return labels == labels[z, y, x]
    r = search_voxels
    lo = [max(0, c - r) for c in (z, y, x)]
    window = labels[lo[0]: z + r + 1, lo[1]: y + r + 1, lo[2]: x + r + 1]
    hits = np.argwhere(window > 0)
    if len(hits) == 0:
        return np.zeros_like(mask, dtype=bool)
    d = ((hits + lo - np.array([z, y, x])) ** 2).sum(axis=1)
    nz, ny, nx = hits[int(np.argmin(d))]
    return labels == window[nz, ny, nx]


def measure(mask: np.ndarray, volume: Volume) -> tuple[float, float, float]:
    """(volume ml, longest axial diameter mm, equivalent-sphere diameter mm) of a canonical mask."""
    from lungseg.tumour.lesions import longest_axial_diameter_mm

    n = int(np.count_nonzero(mask))  # a sum over a full-CT bool mask costs several times more
    if n == 0:
        return 0.0, 0.0, 0.0
    ml = n * volume.voxel_volume_ml
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    sy, sx = volume.spacing[1], volume.spacing[0]
    longest = max(longest_axial_diameter_mm(mask[k], (sy, sx)) for k in zs)
    return ml, longest, float((6.0 * ml * 1000.0 / np.pi) ** (1.0 / 3.0))


class LesionPredictor:
    """The click-to-segment model, loaded once and reused for every click."""

    def __init__(self, path: str | Path = DEFAULT_LESION_MODEL, threads: int | None = None):
        import torch

        from lungseg.lesion.net import load_net

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: lesion model weights not found")
        if threads:
            torch.set_num_threads(threads)
        self.net, self.meta = load_net(path)
        self.grid = ClickGrid.from_dict(self.meta["grid"])
        self.path = path
        self._torch = torch

    def probability(self, hu_patch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(self.grid.normalise(hu_patch))[None, None]
        with torch.inference_mode():
            return torch.sigmoid(self.net(x))[0, 0].numpy()

    def segment(self, volume: Volume, point_mm) -> LesionResult:
        t0 = time.perf_counter()
        if not volume.is_canonical:
            raise InputError("the volume is not in canonical orientation; load it with lungseg.imaging.io.load_ct")
        idx = check_point(volume, point_mm)
        click_zyx = np.asarray(point_mm, float)[::-1]
        origin_zyx = np.asarray(volume.origin, float)[::-1]
        spacing_zyx = np.asarray(volume.spacing_zyx, float)
        centre = tuple(s // 2 for s in self.grid.shape)

        kept = None  # (patch grid, probability, component) of the last pass that found the lesion
        touching = False
        for scale in self.grid.scales:
            patch = self.grid.patch(click_zyx, scale)
            hu, _ = sample_patch(volume.array, origin_zyx, spacing_zyx, patch)
            prob = self.probability(hu)
            component = component_at(prob > 0.5, centre)
            if not component.any():
                break  # nothing at this scale: keep the finer result (or none)
            kept = (patch, prob, component)
            touching = touches_faces(component, patch_faces_inside(volume.shape, origin_zyx, spacing_zyx, patch))
            if not touching:
                break

        mask = np.zeros(volume.shape, dtype=bool)
        fov = self.grid.shape[2] * self.grid.spacing_zyx[2]
        if kept is not None:
            patch, prob, component = kept
            fov = patch.shape[2] * patch.spacing_zyx[2]
            near = ndi.binary_dilation(component, structure=CONNECT_26, iterations=2)
            mapped = patch_to_volume(np.where(near, prob, 0.0).astype(np.float32), patch, volume.shape, origin_zyx, spacing_zyx)
            if mapped is not None:
                box, values = mapped
                local_click = tuple(int(np.clip(round(i) - b.start, 0, b.stop - b.start - 1)) for i, b in zip(idx, box))
                mask[box] = component_at(values > 0.5, local_click, search_voxels=max(3, int(np.ceil(3 * scale))))
                if not mask[box].any() and (values > 0.5).any():  # a lesion thinner than the scan's voxels
                    mask[box] = values > 0.5
        nothing_here = ""
        if mask.any() and not _near_click(mask, idx, volume, PlausibleLesion().click_tolerance_mm):
            zs = np.flatnonzero(mask.any(axis=(1, 2)))
            nothing_here = (f"no lesion at the click: what the model found nearby ({mask.sum() * volume.voxel_volume_ml:.2f}"
                            f" ml, slices {zs[0] + 1}–{zs[-1] + 1}) does not contain the clicked point")
            mask = np.zeros(volume.shape, dtype=bool)
        ml, longest, equivalent = measure(mask, volume)
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        return LesionResult(mask, tuple(float(v) for v in point_mm), ml, longest, equivalent, fov,
                            bool(kept is not None and touching and mask.any()), time.perf_counter() - t0,
                            extent_mm(mask, volume), (int(zs[0]), int(zs[-1])) if len(zs) else None, nothing_here)


def _near_click(mask: np.ndarray, idx, volume: Volume, tolerance_mm: float) -> bool:
    """Whether the clicked voxel is in ``mask`` or within ``tolerance_mm`` of one of its voxels."""
    c = np.clip(np.round(idx).astype(int), 0, np.asarray(mask.shape) - 1)
    if mask[tuple(c)]:
        return True
    spacing = np.asarray(volume.spacing_zyx, float)
    r = np.ceil(tolerance_mm / spacing).astype(int)
    lo, hi = np.maximum(c - r, 0), np.minimum(c + r + 1, mask.shape)
    near = np.argwhere(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]) + lo
    return bool(len(near)) and bool((((near - c) * spacing) ** 2).sum(axis=1).min() <= tolerance_mm ** 2)


_default: dict[str, LesionPredictor] = {}


def default_predictor() -> LesionPredictor:
    if "model" not in _default:
        _default["model"] = LesionPredictor(DEFAULT_LESION_MODEL)
    return _default["model"]


def segment_at(volume: Volume, point_mm, predictor: LesionPredictor | None = None) -> LesionResult:
    """The lesion under the click ``point_mm`` (x, y, z in LPS mm, SimpleITK physical point)."""
    return (predictor or default_predictor()).segment(volume, point_mm)


# --------------------------------------------------------------------------------------------
# the classical baseline and the evaluation click


@dataclass(frozen=True)
class ThresholdBaseline:
    threshold_hu: float = -500.0
    search_mm: float = 2.0  # a click just off the bright part still picks it


def threshold_component_at(volume: Volume, point_mm, params: ThresholdBaseline = ThresholdBaseline()) -> np.ndarray:
    """Voxels above ``threshold_hu`` connected (26) to the click: the classical one-click contour."""
    idx = np.round(check_point(volume, point_mm)).astype(int)
    idx = np.clip(idx, 0, np.asarray(volume.shape) - 1)
    search = max(1, int(round(params.search_mm / min(volume.spacing))))
    return component_at(volume.array > params.threshold_hu, tuple(idx), search_voxels=search)


def click_inside(mask: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> tuple[int, int, int]:
    """The mask's centre of mass rounded to a voxel, moved to the nearest mask voxel (in mm) if outside."""
    pts = np.argwhere(mask)
    if len(pts) == 0:
        raise InputError("empty reference mask: no click can be placed")
    com = pts.mean(axis=0)
    rounded = tuple(int(v) for v in np.round(com))
    if mask[rounded]:
        return rounded
    d = (((pts - com) * np.asarray(spacing_zyx)) ** 2).sum(axis=1)
    return tuple(int(v) for v in pts[int(np.argmin(d))])
