"""What the viewer shows of a case, in one place: the adapter from the app's case object."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lungseg.imaging.volume import Volume
from lungseg.structures import AUTOMATIC_RED, LUNG_BLUE, colour_of

LAYER_COLOURS = {  # layer → RGB, in drawing order (later on top); structures as lungseg.structures.colour_of
    "lung region": LUNG_BLUE,
    "automatic tumour": AUTOMATIC_RED,
    "manual contour": colour_of("GTV-1"),  # while opening; then each ROI under its own name and colour
    "added lesions": (230, 90, 255),  # added to the automatic contour by click
    "clicked lesion": (40, 235, 110),  # the lesion under the last click, not yet added or discarded
}
DEFAULT_OPACITY = {"lung region": 0.35, "automatic tumour": 0.9, "manual contour": 0.9, "added lesions": 0.9,
                   "clicked lesion": 0.95}


@dataclass(frozen=True)
class ViewerCase:
    """A case as the viewer needs it.  ``layers`` maps a layer name to its bool [z, y, x] mask, or to
    None while it is still being computed; a layer that will never exist is absent."""

    key: str  # content hash of the CT: names the browser's files
    label: str
    volume: Volume  # canonical HU volume
    layers: dict[str, np.ndarray | None] = field(default_factory=dict)
    manual_name: str | None = None
    lesions: list[dict] = field(default_factory=list)
    lesion_source: str = ""
    notes: tuple[str, ...] = ()


def lesion_start_slice(vc: ViewerCase) -> int:
    if vc.lesions:
        return int(vc.lesions[0]["centroid_slice"])
    return vc.volume.shape[0] // 2


def viewer_layers(case) -> ViewerCase:
    """The one function that reads a :class:`lungseg.case.Case`, complete or still opening
    (``case.stage`` "ct" → "lungs" → "done"): a layer still to come is listed with no mask."""
    opening = case.stage != "done"
    layers: dict[str, np.ndarray | None] = {}
    if case.lungs is not None or opening:
        layers["lung region"] = case.lungs.lung_region if case.lungs is not None else None
    if case.automatic is not None or opening:
        layers["automatic tumour"] = case.automatic.mask if case.automatic is not None else None
    if case.manual is not None or (case.stage == "ct" and case.source.manual is not None):
        layers["manual contour"] = case.manual.mask if case.manual is not None else None
    if case.automatic is not None:
        lesions, what = list(case.automatic.lesions), "automatic tumour"
    elif case.manual is not None and case.manual.lesions:
        lesions, what = list(case.manual.lesions), f"manual contour ({case.manual.name})"
    else:
        lesions, what = [], ""
    return ViewerCase(key=case.key, label=case.label, volume=case.volume, layers=layers,
                      manual_name=case.manual.name if case.manual is not None else None,
                      lesions=lesions, lesion_source=what, notes=tuple(case.notes))
