"""Shared pieces of the study pages: the store, the opened study cases (cached), blinded slice panels.

Blinding rule for the rating page: nothing sent to the browser may tell which side is which.
Panels are built by :func:`panel_pair_html` from two PNG data URIs only; both panels get the same
markup, the same colour and line style, and neutral text.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from lungseg.case import Case, CaseMemory
from lungseg.study import StudyError, StudyStore, default_db_path
from lungseg.study.cases import contour_slices, open_study_case, study_case_source

from . import render, state

CONTOUR_RGB = (255, 40, 40)  # one colour for both contours on the rating page
DEFAULT_WIDTH, DEFAULT_LEVEL = 1500, -600


@st.cache_resource(show_spinner=False)
def _store(path: str) -> StudyStore:
    return StudyStore(path)


def signed_in_rater(store: StudyStore, kind: str):
    """The rater signed in by the page's personal link (``?token=...``) and their study, which must be of
    ``kind`` ("preference": the Rate page, "contouring": the Contour page); otherwise the page says why (no
    link, a revoked, expired or unknown one, the other page's link) and stops."""
    from lungseg.study import AuthError, authenticate_rater

    token = st.query_params.get("token", "")
    if not token:
        st.info("Open this page with the personal link you were sent.")
        st.stop()
    try:
        session = authenticate_rater(store, token)
        study = store.study_for(session)
    except AuthError as exc:
        st.error(f"This link cannot be used: {exc}.")
        st.stop()
    if study.kind != kind:
        page = "Contour" if study.kind == "contouring" else "Rate"
        st.info(f"This link belongs to a {study.kind} study: open it on the [{page} page]({page}?token={token}).")
        st.stop()
    return session, study


def get_store() -> StudyStore:
    """The study database ($LUNGSEG_DB or data/lungseg.db), one connection per server process."""
    return _store(str(default_db_path()))


# ------------------------------------------------------------------------------------ study cases


@dataclass(frozen=True, eq=False)
class StudyCase:
    """A study case as the study pages show it: the opened (immutable) case and its contoured slices."""

    case_id: str
    case: Case
    slices: tuple[int, ...]

    @property
    def loaded(self):
        return self.case.ct

    @property
    def automatic(self) -> np.ndarray:
        return self.case.contour("automatic").mask

    @property
    def manual(self) -> np.ndarray:
        return self.case.contour("manual").mask

    def contour_slices(self) -> list[int]:
        return list(self.slices)


def case_meta(store: StudyStore, study_id: int, case_id: str) -> dict:
    for row in store.cases(study_id):
        if row["case_id"] == case_id:
            return row["metadata"]
    raise StudyError(f"case {case_id} is not in this study")


def material(store: StudyStore, study_id: int, case_id: str) -> StudyCase:
    """Study case ``case_id`` opened as the study recorded it (raises a one-line StudyError if it cannot be)."""
    meta = case_meta(store, study_id, case_id)
    source = study_case_source(meta)
    memory = state.memory()  # the server's immutable cases, shared with the viewer
    try:
        key = CaseMemory.key_of(source, meta.get("model_version"))
    except OSError:
        raise StudyError(f"case {case_id}: its images are no longer available") from None
    case = memory.get(key)
    if case is None:
        case = open_study_case(case_id, meta, cache=state.result_cache())
        memory.put(key, case)
    return StudyCase(case_id, case, tuple(contour_slices(case)))


def data_folder_cases() -> list[Path]:
    """The cases in the app's data folder (zips, image files, DICOM folders)."""
    from lungseg_app.cases import list_data_folder

    return list_data_folder()


def model_version_or_none() -> str | None:
    """The shipped tumour model's version, or None when no model can be loaded."""
    from lungseg.case import model_version

    predictor, _ = state.predictor_and_note()
    return None if predictor is None else model_version(predictor)


# ------------------------------------------------------------------------------------ images


def slice_png(arr2d: np.ndarray, mask2d: np.ndarray | None, width: float, level: float,
              rgb=CONTOUR_RGB, spacing_yx=(1.0, 1.0), display_px: int = 512) -> str:
    """One axial slice, windowed, with ``mask2d``'s outline burnt in, as a PNG data URI."""
    pil = render.slice_with_outline(arr2d, mask2d, rgb, spacing_yx, width, level, display_px)
    b = io.BytesIO()
    pil.save(b, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode("ascii")


def pair_images(mat: StudyCase, k: int, first: np.ndarray, second: np.ndarray, width: float, level: float) -> tuple[str, str]:
    arr = mat.loaded.volume.array[k]
    sx, sy, _ = mat.loaded.volume.spacing
    return (slice_png(arr, first[k], width, level, spacing_yx=(sy, sx)),
            slice_png(arr, second[k], width, level, spacing_yx=(sy, sx)))


_PANEL = ('<div class="pnl" style="flex:1;min-width:0;text-align:center">'
          '<img src="{src}" alt="CT slice with a contour" style="width:100%;max-width:560px;'
          'image-rendering:pixelated;border:1px solid #444"></div>')


def panel_pair_html(left_src: str, right_src: str) -> str:
    """Two panels with identical markup (only the image data differs)."""
    return ('<div class="pair" style="display:flex;gap:16px;align-items:flex-start">'
            + _PANEL.format(src=left_src) + _PANEL.format(src=right_src) + "</div>")


def labelled_pair_html(items: list[tuple[str, str]]) -> str:
    """Side-by-side panels with captions (the review page, not blinded)."""
    cells = "".join(
        f'<div style="flex:1;min-width:0;text-align:center"><div style="font-weight:600;margin-bottom:4px">{cap}</div>'
        f'<img src="{src}" alt="{cap}" style="width:100%;max-width:560px;border:1px solid #444"></div>'
        for cap, src in items)
    return f'<div style="display:flex;gap:16px;align-items:flex-start">{cells}</div>'


def window_controls(prefix: str) -> tuple[float, float]:
    """Shared window width/level (default W1500 / L−600)."""
    c1, c2 = st.columns(2)
    width = c1.number_input("Window width (HU)", 1, 5000, DEFAULT_WIDTH, step=50, key=f"{prefix}_ww")
    level = c2.number_input("Window level (HU)", -1500, 3000, DEFAULT_LEVEL, step=10, key=f"{prefix}_wl")
    return float(width), float(level)


# ------------------------------------------------------------------------------------ admin helpers


def pick_study(store: StudyStore, key: str = "study_pick"):
    studies = store.studies()
    if not studies:
        st.info("No study yet: create one on the Study setup page.")
        st.stop()
    names = [s.name for s in studies]
    current = st.session_state.get("study_name")
    index = names.index(current) if current in names else len(names) - 1
    name = st.selectbox("Study", names, index=index, key=key)
    st.session_state["study_name"] = name
    return store.study(name)
