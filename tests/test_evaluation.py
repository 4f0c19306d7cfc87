"""Cohort evaluation strata: location of a tumour (side, lobe, central/peripheral, contacts) and bands."""

from __future__ import annotations

import numpy as np

from lungseg.evaluation import THICKNESS_BANDS, VOLUME_BANDS, band, stratified, tumour_location

SPACING = (3.0, 1.0, 1.0)


def _chest():
    """Two box lungs either side of a mediastinum, tissue (40 HU) everywhere else; [z, y, x], +z superior,
    +x patient left (LPS)."""
    hu = np.full((30, 60, 100), 40, np.int16)
    lungs = np.zeros(hu.shape, bool)
    lungs[3:27, 10:50, 10:40] = True  # right lung (x < 50)
    lungs[3:27, 10:50, 60:90] = True  # left lung
    hu[lungs] = -850
    return hu, lungs


def test_a_tumour_against_the_mediastinum_is_central_and_touches_it():
    hu, lungs = _chest()
    tumour = np.zeros(hu.shape, bool)
    tumour[20:24, 25:32, 60:66] = True  # left lung, upper part, against its medial wall (x = 60)
    lungs_without = lungs & ~tumour
    loc = tumour_location(tumour, lungs_without, hu, SPACING)
    assert loc == {"side": "left", "lobe": "LUL", "central": True, "contact_mediastinum": True, "contact_chest_wall": False}


def test_a_tumour_at_the_lateral_chest_wall_low_in_the_right_lung_is_peripheral():
    hu, lungs = _chest()
    tumour = np.zeros(hu.shape, bool)
    tumour[5:8, 25:32, 10:15] = True  # right lung, base, against the lateral wall (x = 10)
    loc = tumour_location(tumour, lungs & ~tumour, hu, SPACING)
    assert loc == {"side": "right", "lobe": "RLL", "central": False, "contact_mediastinum": False, "contact_chest_wall": True}


def test_bands_and_strata():
    assert band(3.0, THICKNESS_BANDS) == "1.5–3 mm" and band(1.0, THICKNESS_BANDS) == "≤ 1.5 mm"
    assert band(155.8, VOLUME_BANDS, upper_inclusive=False) == "≥ 150 ml" and band(8.7, VOLUME_BANDS, False) == "< 10 ml"
    base = {"lesion_false_negatives": 0, "hd95_mm": 5.0, "thickness_band": "1.5–3 mm", "contact_mediastinum": True,
            "contact_chest_wall": False, "lobe": "LUL", "location": "central"}
    rows = [base | {"dice": 0.8, "lesion_true_positives": 1, "lesion_false_positives": 2, "volume_band": "≥ 150 ml"},
            base | {"dice": 0.2, "lesion_true_positives": 0, "lesion_false_negatives": 1, "lesion_false_positives": 0,
                    "volume_band": "< 10 ml"}]
    s = stratified(rows)
    assert s["all"]["cases"] == 2 and s["all"]["sensitivity"] == 0.5 and s["all"]["false_lesions_per_scan"] == 1.0
    assert s["volume_band"]["< 10 ml"]["median_dice"] == 0.2 and s["volume_band"]["≥ 150 ml"]["sensitivity"] == 1.0
