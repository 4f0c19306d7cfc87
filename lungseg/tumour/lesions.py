"""Per-lesion measurements of a tumour mask: what a clinician reads off a report."""

from __future__ import annotations

import numpy as np

from lungseg.imaging.components import bounding_box, component_boxes, convex_hull_2d, label_components
from lungseg.imaging.volume import Volume


def longest_axial_diameter_mm(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Longest in-plane distance between two pixels of a 2D mask (pixel centres), in mm."""
    pts = np.argwhere(mask2d) * np.asarray(spacing_yx)
    if len(pts) < 2:
        return float(min(spacing_yx)) if len(pts) else 0.0
    if len(pts) > 3:
        pts = convex_hull_2d(pts)  # the farthest pair lies on the hull
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return float(d.max())


def lesion_table(mask: np.ndarray, ct: Volume, spine_x: np.ndarray | None = None, min_volume_ml: float = 0.0) -> list[dict]:
    """One row per 3D connected lesion (26-connectivity), largest first.

    Side: patient left is +x (higher column) on the canonical grid; the spine axis of the slice
    splits left from right where known, else the image centre.
    """
    outer = bounding_box(mask)
    if outer is None:
        return []
    labels, n = label_components(mask[outer], corners=True)
    rows = []
    sz, sy, sx = ct.spacing_zyx
    for i, inner in enumerate(component_boxes(labels, n), start=1):
        if inner is None:
            continue
        lesion = labels[inner] == i
        sl = tuple(slice(o.start + s.start, o.start + s.stop) for o, s in zip(outer, inner))
        vol_ml = float(lesion.sum() * ct.voxel_volume_ml)
        if vol_ml < min_volume_ml:
            continue
        zyx = np.argwhere(lesion) + [s.start for s in sl]
        centroid = zyx.mean(axis=0)
        k = int(round(centroid[0]))
        axis = np.nan if spine_x is None else spine_x[k]
        midline = ct.shape[2] / 2.0 if np.isnan(axis) else axis
        per_slice = [longest_axial_diameter_mm(lesion[j], (sy, sx)) for j in range(lesion.shape[0])]
        best = int(np.argmax(per_slice))
        rows.append(
            {
                "volume_ml": round(vol_ml, 2),
                "longest_axial_diameter_mm": round(max(per_slice), 1),
                "diameter_slice": int(sl[0].start + best),
                "first_slice": int(sl[0].start),
                "last_slice": int(sl[0].stop - 1),
                "centroid_slice": k,
                "centroid_mm": [round(float(v), 1) for v in ct.index_to_physical(centroid[None])[0]],
                "side": "left" if centroid[2] > midline else "right",
                "seed_voxel": [int(v) for v in zyx[0]],  # a voxel inside the lesion, to select it again
            }
        )
    rows.sort(key=lambda r: (-r["volume_ml"], r["first_slice"], r["seed_voxel"]))
    for n_, r in enumerate(rows, start=1):
        r["lesion"] = n_
    return rows
