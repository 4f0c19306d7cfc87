"""Real nodules (LIDC-IDRI crops) placed into the real lungs of another scan.

A crop and its outline are resampled onto the host scan's spacing (averaging along z, as a
thicker slice would), then pasted at a plausible place: inside the host's tight lungs, away from
the hilum's vessels (low local mean HU) and from the host's own lesions, a share of them touching
the pleura.  The boundary is blended with a Gaussian ramp so that no step edge betrays the paste.
Used to train the automatic model on real lesion appearance, and to test it on nodules of
validation patients placed into a held-out patient's lungs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungseg.imaging.volume import mm_to_voxels


@dataclass(frozen=True)
class PlacementParams:
    """Where and how nodules are placed. Lengths in mm."""

    interior_margin_mm: float = 3.0  # an interior nodule keeps this much lung around it
    juxtapleural_share: float = 0.25  # share of nodules whose centre sits close to the pleura
    max_local_mean_hu: float = -650.0  # the hilum and vessel bundles are denser than this
    local_mean_mm: float = 12.0  # in-plane window of that local mean
    lesion_gap_mm: float = 10.0  # distance kept from the host's lesions and earlier nodules
    blend_sigma_mm: float = 0.8  # in-plane width of the blended boundary
    attempts: int = 30


def resample_crop(hu: np.ndarray, mask: np.ndarray, spacing_zyx, target_zyx) -> tuple[np.ndarray, np.ndarray]:
    """A crop resampled to ``target_zyx`` spacing: HU averaged over the target slice thickness."""
    factors = np.asarray(spacing_zyx, float) / np.asarray(target_zyx, float)
    hu_s, m_s = hu.astype(np.float32), mask.astype(np.float32)
    for axis, f in enumerate(factors):
        width = int(round(1.0 / f)) if f < 1 else 1
        if width > 1:  # a coarser voxel averages what it covers (partial volume), as the scanner would
            hu_s = ndi.uniform_filter1d(hu_s, width, axis=axis, mode="nearest")
            m_s = ndi.uniform_filter1d(m_s, width, axis=axis, mode="constant")
    out_shape = np.maximum(np.round(np.asarray(hu.shape) * factors).astype(int), 1)
    zoom = out_shape / np.asarray(hu.shape)
    hu_r = ndi.zoom(hu_s, zoom, order=1, prefilter=False)
    m_r = ndi.zoom(m_s, zoom, order=1, prefilter=False)
    out_mask = m_r >= 0.5
    if not out_mask.any():  # a nodule thinner than one target slice keeps its densest slice
        out_mask = m_r >= 0.5 * m_r.max()
    return hu_r, out_mask


def _trim(hu: np.ndarray, mask: np.ndarray, pad: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(mask)
    box = tuple(slice(max(int(i.min()) - p, 0), min(int(i.max()) + 1 + p, n)) for i, p, n in zip(idx, pad, mask.shape))
    return hu[box], mask[box]


def candidate_centres(hu: np.ndarray, lungs: np.ndarray, avoid: np.ndarray, spacing_zyx,
                      params: PlacementParams = PlacementParams()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance to the pleura in mm inside the lungs, mask of allowed centres, local mean HU)."""
    sz, sy, sx = spacing_zyx
    dist = ndi.distance_transform_edt(lungs, sampling=spacing_zyx).astype(np.float32)
    w = max(mm_to_voxels(params.local_mean_mm, min(sy, sx)), 3)
    local = ndi.uniform_filter(np.clip(hu, -1000, 200).astype(np.float32), size=(1, w, w))
    far = np.ones_like(lungs)
    if avoid.any():
        far = ndi.distance_transform_edt(~avoid, sampling=spacing_zyx) > params.lesion_gap_mm
    allowed = lungs & far & (local < params.max_local_mean_hu)
    return dist, allowed, local


def paste(hu: np.ndarray, label: np.ndarray, crop_hu: np.ndarray, crop_mask: np.ndarray, centre: tuple[int, int, int],
          spacing_zyx, params: PlacementParams = PlacementParams()) -> bool:
    """Blend the crop into ``hu`` (in place) with its mask's centroid at ``centre``; False if it does not fit."""
    c = np.round(ndi.center_of_mass(crop_mask)).astype(int)
    start = np.asarray(centre) - c
    stop = start + np.asarray(crop_mask.shape)
    if (start < 0).any() or (stop > np.asarray(hu.shape)).any():
        return False
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    if label[box][crop_mask].any():
        return False
    sigma = (0.3, params.blend_sigma_mm / spacing_zyx[1], params.blend_sigma_mm / spacing_zyx[2])
    weight = np.clip(ndi.gaussian_filter(crop_mask.astype(np.float32), sigma) * 1.6, 0.0, 1.0)
    weight[crop_mask] = np.maximum(weight[crop_mask], 0.9)
    host = hu[box].astype(np.float32)
    delta = crop_hu - host
    delta[~crop_mask] = np.maximum(delta[~crop_mask], 0.0)  # outside the nodule only brighten (pleura, vessels stay)
    hu[box] = host + weight * delta
    label[box] |= crop_mask
    return True


@dataclass
class HostSites:
    """Precomputed per host scan: distance to the pleura (mm) and where a nodule centre may go."""

    dist_mm: np.ndarray
    allowed: np.ndarray

    @classmethod
    def of(cls, hu, lungs, host_lesions, spacing_zyx, params: PlacementParams = PlacementParams()) -> "HostSites":
        dist, allowed, _ = candidate_centres(hu, lungs, host_lesions, spacing_zyx, params)
        return cls(dist, allowed)


def place_nodules(hu: np.ndarray, sites: HostSites, spacing_zyx,
                  crops: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
                  params: PlacementParams = PlacementParams()) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Place each (HU, mask) crop, already on the host's spacing, into a copy of ``hu``.

    Returns (new HU float32, mask of the placed nodules, one record per placed nodule).  A crop
    that finds no place after ``params.attempts`` tries is skipped (recorded with ``placed=False``).
    """
    out = hu.astype(np.float32).copy()
    placed = np.zeros(hu.shape, bool)
    dist, allowed = sites.dist_mm, sites.allowed.copy()
    records = []
    for k, (c_hu, c_mask) in enumerate(crops):
        c_hu, c_mask = _trim(c_hu, c_mask, (1, 3, 3))
        radius = (3.0 * c_mask.sum() * float(np.prod(spacing_zyx)) / (4 * np.pi)) ** (1 / 3)
        juxta = rng.random() < params.juxtapleural_share
        if juxta:
            ok = allowed & (dist >= 0.3 * radius) & (dist <= 0.8 * radius + spacing_zyx[1])
        else:
            ok = allowed & (dist >= radius + params.interior_margin_mm)
        flips = [a for a in (1, 2) if rng.random() < 0.5]
        if flips:
            c_hu, c_mask = np.flip(c_hu, flips).copy(), np.flip(c_mask, flips).copy()
        done = False
        options = np.flatnonzero(ok)
        for _ in range(params.attempts if options.size else 0):
            centre = np.unravel_index(int(rng.choice(options)), hu.shape)
            if paste(out, placed, c_hu, c_mask, centre, spacing_zyx, params):
                done = True
                gap = [mm_to_voxels(params.lesion_gap_mm + radius, s) for s in spacing_zyx]
                allowed[tuple(slice(max(c - g, 0), c + g + 1) for c, g in zip(centre, gap))] = False
                records.append({"index": k, "centre_voxel": [int(v) for v in centre], "radius_mm": round(float(radius), 1),
                                "juxtapleural": juxta, "placed": True})
                break
        if not done:
            records.append({"index": k, "placed": False})
    return out, placed, records
