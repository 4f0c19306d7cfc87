"""The images behind a preference-study case: its CT, its manual contour and its automatic one.

No Streamlit here: the app pages, the ``export --db`` CLI and tests share it.

A study case records where its material comes from in its metadata (``CaseSpec.metadata.extra``)::

    {"source": "demo" | "/abs/path/to/LUNG1-001.zip",
     "roi": "GTV-1",                       # the structure-set ROI used as the manual contour
     "automatic": "model" | "perturbed-manual"}

``automatic = "model"``: the automatic contour is the shipped tumour model's output
(:func:`lungseg.tumour.segment.load_default_predictor` on :func:`lungseg.pipeline.process_case`).

``automatic = "perturbed-manual"``: **a stand-in, for demos and tests only** — used when no
model is installed.  The "automatic" contour is then the manual one dilated in-plane and shifted
by a few voxels (:func:`perturb`), so the study machinery can be exercised end to end.  The study
setup page says so in the case list and the metadata keeps the label, so a report can never pass
such a study off as a model evaluation.

For the demo phantom the "manual" contour is the phantom's known true tumour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from scipy import ndimage as ndi

from lungseg.errors import LungsegError

DEMO_SOURCE = "demo"
AUTO_MODEL = "model"
AUTO_PERTURBED = "perturbed-manual"
AUTO_KINDS = {
    AUTO_MODEL: "tumour model output",
    AUTO_PERTURBED: "stand-in: manual contour dilated and shifted (no model installed; demo/test only)",
}


@dataclass
class Material:
    case_id: str
    loaded: Any  # lungseg.imaging.io.LoadedCT
    manual: np.ndarray  # bool [z, y, x]
    automatic: np.ndarray  # bool [z, y, x]
    automatic_kind: str
    roi: str | None

    def mask(self, source: str) -> np.ndarray:
        if source == "automatic":
            return self.automatic
        if source == "manual":
            return self.manual
        raise LungsegError(f"no contour {source!r}: choose automatic or manual")

    def contour_slices(self) -> list[int]:
        """Axial slices where either contour has voxels."""
        both = self.manual | self.automatic
        return [int(k) for k in np.flatnonzero(both.reshape(both.shape[0], -1).any(axis=1))]


def perturb(mask: np.ndarray, grow: int = 2, shift_yx: tuple[int, int] = (2, 3)) -> np.ndarray:
    """The stand-in "automatic" contour: ``mask`` dilated in-plane by ``grow`` voxels and shifted."""
    out = np.asarray(mask, bool)
    if grow:
        st = np.zeros((3, 3, 3), bool)
        st[1] = ndi.generate_binary_structure(2, 1)
        out = ndi.binary_dilation(out, structure=st, iterations=grow)
    dy, dx = shift_yx
    shifted = np.zeros_like(out)
    ny, nx = out.shape[1:]
    shifted[:, max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)] = \
        out[:, max(-dy, 0):ny - max(dy, 0), max(-dx, 0):nx - max(dx, 0)]
    return shifted


def demo_loaded():
    """The synthetic phantom as a LoadedCT and its true tumour mask."""
    from lungseg.imaging.phantom import demo_case

    return demo_case()


def default_predictor():
    """The shipped model or None (never raises)."""
    try:
        from lungseg.tumour.segment import load_default_predictor

        return load_default_predictor()
    except Exception:  # noqa: BLE001 - no model (or no torch): callers fall back
        return None


def load_material(
    case_id: str,
    meta: Mapping[str, Any],
    *,
    load_ct: Callable[[Path], Any] | None = None,
    predict: Callable[[Any], np.ndarray | None] | None = None,
) -> Material:
    """The CT and both contours of a study case from its metadata.

    ``load_ct(path)`` and ``predict(loaded)`` may be given to reuse caches (the app does);
    by default :func:`lungseg.imaging.io.load_ct` and the shipped model via :func:`process_case`.
    """
    source = str(meta.get("source") or "")
    kind = str(meta.get("automatic") or AUTO_PERTURBED)
    if kind not in AUTO_KINDS:
        raise LungsegError(f"case {case_id}: unknown automatic contour kind {kind!r}")
    roi = meta.get("roi")
    if source == DEMO_SOURCE:
        loaded, manual = demo_loaded()
    elif source:
        from lungseg.imaging.io import find_structure_set, load_ct as _load_ct, load_rtstruct

        path = Path(source)
        if not path.exists():
            raise LungsegError(f"case {case_id}: its source is no longer available")
        loaded = (load_ct or _load_ct)(path)
        ss = find_structure_set(loaded)
        if ss is None or not roi:
            raise LungsegError(f"case {case_id}: no structure set with the manual contour")
        manual = np.asarray(load_rtstruct(ss.path, loaded, str(roi)), bool)
    else:
        raise LungsegError(f"case {case_id}: the study does not record where its images are")
    if kind == AUTO_MODEL:
        if predict is None:
            def predict(ld):  # noqa: E306
                from lungseg.pipeline import process_case

                predictor = default_predictor()
                if predictor is None:
                    return None
                return process_case(ld, predictor=predictor).tumour
        auto = predict(loaded)
        if auto is None:
            raise LungsegError(f"case {case_id}: the tumour model is not available to recompute its contour")
        automatic = np.asarray(auto, bool)
    else:
        automatic = perturb(manual)
    return Material(case_id, loaded, manual, automatic, kind, roi)


def accepted_review(reviews: list[Mapping[str, Any]], case_id: str) -> Mapping[str, Any] | None:
    """The latest review of ``case_id``, by a rater or an admin (rows of ``StudyStore.reviews_table``).

    ``reviews_table`` lists the newest first; on equal times the earlier row (the newer record) wins.
    """
    rows = [r for r in reviews if str(r["case_id"]) == str(case_id)]
    return max(rows, key=lambda r: r["reviewed_at"]) if rows else None


def case_spec(case_id: str, meta: Mapping[str, Any], **load_kwargs):
    """A :class:`~lungseg.study.CaseSpec` for a case: contoured slices and stratification metadata."""
    from lungseg.study import CaseMetadata, CaseSpec

    mat = load_material(case_id, meta, **load_kwargs)
    if not mat.manual.any():
        raise LungsegError(f"case {case_id}: the manual contour is empty")
    v = mat.loaded.volume
    info = {**dict(meta), "automatic_description": AUTO_KINDS[mat.automatic_kind],
            "slice_thickness_mm": mat.loaded.info.get("slice_thickness_mm") or v.spacing[2],
            "tumour_volume_ml": round(float(mat.manual.sum()) * v.voxel_volume_ml, 3)}
    return CaseSpec(case_id, tuple(mat.contour_slices()), CaseMetadata.from_dict(info)), mat
