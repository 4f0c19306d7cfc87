"""Cohort evaluation of the automatic model, stratified as the seed's evaluation is: slice thickness,
tumour volume, and location (side, lobe, central or peripheral, contact with the mediastinum or the
chest wall).  ``python -m lungseg evaluate --cases SOURCE`` and the model card use it.

Location is measured on the reference contour, in mm:

* side: the contour's centre of mass left or right of the lungs' mid-line (patient left is +x in LPS);
* lobe: **approximated** from the height of the centre within that lung (upper, middle, lower third;
  the left lung has no middle lobe, its middle third counts as upper): there is no fissure detection;
* contact: the tissue (> −500 HU, outside the tight lungs) in a shell of ``contact_mm`` around the
  contour; the part nearer the mid-line than the tumour's centre is the mediastinum, the rest the chest
  wall; a contact counts from ``min_contact_ml``;
* central: touching the mediastinum, or the centre in the inner third of its hemithorax's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

THICKNESS_BANDS = ((0.0, 1.5, "≤ 1.5 mm"), (1.5, 3.0, "1.5–3 mm"), (3.0, float("inf"), "> 3 mm"))
VOLUME_BANDS = ((0.0, 10.0, "< 10 ml"), (10.0, 50.0, "10–50 ml"), (50.0, 150.0, "50–150 ml"), (150.0, float("inf"), "≥ 150 ml"))


@dataclass(frozen=True)
class LocationParams:
    contact_mm: float = 3.0
    min_contact_ml: float = 0.2
    tissue_hu: float = -500.0


def band(value: float, bands, upper_inclusive: bool = True) -> str:
    for lo, hi, name in bands:
        if lo < value <= hi if upper_inclusive else lo <= value < hi:
            return name
    return bands[0][2] if value <= bands[0][0] else bands[-1][2]


def tumour_location(mask: np.ndarray, lungs: np.ndarray, hu: np.ndarray, spacing_zyx,
                    params: LocationParams = LocationParams()) -> dict:
    """Side, approximate lobe, central/peripheral and contacts of a tumour mask (canonical LPS grid)."""
    if not mask.any() or not lungs.any():
        return {"side": "unknown", "lobe": "unknown", "central": None, "contact_mediastinum": None, "contact_chest_wall": None}
    cz, cy, cx = ndi.center_of_mass(mask)
    xs = np.nonzero(lungs.any(axis=(0, 1)))[0]
    midline = (xs[0] + xs[-1]) / 2
    left = cx > midline
    side_lungs = lungs.copy()
    if left:
        side_lungs[..., : int(np.ceil(midline))] = False
    else:
        side_lungs[..., int(np.floor(midline)) + 1:] = False
    zs = np.nonzero(side_lungs.any(axis=(1, 2)))[0]
    height = (cz - zs[0]) / max(zs[-1] - zs[0], 1) if zs.size else 0.5  # 0 at the base, 1 at the apex (+z superior)
    third = "upper" if height > 2 / 3 else ("middle" if height > 1 / 3 else "lower")
    lobe = ("L" + ("L" if third == "lower" else "U") if left else "R" + third[0].upper()) + "L"
    r = [max(1, int(round(params.contact_mm / s))) for s in spacing_zyx]
    box = tuple(slice(max(int(i.min()) - k, 0), int(i.max()) + k + 1) for i, k in zip(np.nonzero(mask), r))
    sub = mask[box]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    ball = (zz * spacing_zyx[0]) ** 2 + (yy * spacing_zyx[1]) ** 2 + (xx * spacing_zyx[2]) ** 2 <= params.contact_mm ** 2
    shell = ndi.binary_dilation(sub, ball) & ~sub & ~lungs[box] & (hu[box] > params.tissue_hu)
    x_index = np.arange(box[2].start, box[2].stop)[None, None, :]
    medial = shell & (np.abs(x_index - midline) < abs(cx - midline))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000
    mediastinum = bool(medial.sum() * voxel_ml >= params.min_contact_ml)
    chest_wall = bool((shell & ~medial).sum() * voxel_ml >= params.min_contact_ml)
    row = side_lungs[int(round(cz))].any(axis=0)
    width = np.nonzero(row)[0]
    lateral = (width.max() if left else width.min()) if width.size else cx
    inner = abs(cx - midline) / max(abs(lateral - midline), 1)
    return {"side": "left" if left else "right", "lobe": lobe, "central": bool(mediastinum or inner < 1 / 3),
            "contact_mediastinum": mediastinum, "contact_chest_wall": chest_wall}


def case_row(case_id: str, automatic: np.ndarray, reference: np.ndarray, ct, lungs) -> dict:
    """Dice, HD95, detection and the strata of one case (``ct`` a canonical Volume, ``lungs`` its LungResult)."""
    from lungseg.metrics import evaluate_case

    m = evaluate_case(automatic, reference, ct.spacing_zyx)
    volume = float(reference.sum() * ct.voxel_volume_ml)
    loc = tumour_location(reference, lungs.lungs, ct.array, ct.spacing_zyx)
    return m | {"case_id": case_id, "slice_thickness_mm": float(ct.spacing_zyx[0]),
                "thickness_band": band(float(ct.spacing_zyx[0]), THICKNESS_BANDS),
                "reference_ml": round(volume, 2), "volume_band": band(volume, VOLUME_BANDS, upper_inclusive=False),
                "reference_in_region": round(float((reference & lungs.lung_region).sum() / max(1, reference.sum())), 4),
                **loc, "location": "central" if loc["central"] else "peripheral"}


STRATA = ("thickness_band", "volume_band", "location", "lobe", "contact_mediastinum", "contact_chest_wall")


def group_summary(rows: list[dict]) -> dict:
    tp = sum(r["lesion_true_positives"] for r in rows)
    fn = sum(r["lesion_false_negatives"] for r in rows)
    return {"cases": len(rows),
            "median_dice": float(np.median([r["dice"] for r in rows])) if rows else None,
            "median_hd95_mm": float(np.median([r["hd95_mm"] for r in rows])) if rows else None,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "false_lesions_per_scan": sum(r["lesion_false_positives"] for r in rows) / len(rows) if rows else None}


def stratified(rows: list[dict]) -> dict:
    """The whole cohort's summary and one per value of each stratum."""
    out = {"all": group_summary(rows)}
    for key in STRATA:
        values = sorted({str(r[key]) for r in rows})
        out[key] = {v: group_summary([r for r in rows if str(r[key]) == v]) for v in values}
    return out
