"""What the viewer shows of a case, in one place: the adapter from the app's case object."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lungseg.imaging.volume import Volume

LAYER_COLOURS = {  # layer → RGB, in drawing order (later on top)
    "lung region": (70, 150, 255),
    "automatic tumour": (255, 60, 60),
    "manual contour": (255, 215, 0),
}
DEFAULT_OPACITY = {"lung region": 0.35, "automatic tumour": 0.9, "manual contour": 0.9}


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
    """The one function that reads the app's case object (``lungseg_app.cases.Case`` today; repoint
    it at ``lungseg.case.Case`` when that lands: ``case.ct.volume``, ``case.lungs.lung_region``,
    ``case.automatic.mask``, ``case.manual.mask``/``.name``, lesions from the automatic contour)."""
    layers: dict[str, np.ndarray | None] = {"lung region": case.result.lungs.lung_region}
    if case.result.tumour is not None:
        layers["automatic tumour"] = case.result.tumour
    if case.manual_mask is not None:
        layers["manual contour"] = case.manual_mask
    what, rows = case.lesions()
    return ViewerCase(key=case.key, label=case.label, volume=case.loaded.volume, layers=layers,
                      manual_name=case.manual_name, lesions=rows, lesion_source=what,
                      notes=tuple(case.result.notes) + tuple(case.loaded.warnings))
