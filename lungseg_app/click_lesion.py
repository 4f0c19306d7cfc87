"""Click-to-segment in the viewer: a click on a fully open case gives the lesion under it
(:func:`lungseg.lesion.segment_at` with the model held once per process), shown as the viewer's
"clicked lesion" layer until the reviewer adds it to the automatic contour (stored with the case's
review: :func:`lungseg.review.add_lesion`) or discards it (nothing stored).  Lesions already added show
as the "added lesions" layer and in the lesion table.

The click is read from the component's state *before* the component is drawn, so the contour goes out
with the same rerun that received the click (one round trip, not two).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import numpy as np
import streamlit as st

from lungseg import review
from lungseg.errors import LungsegError

from . import state

PENDING = "viewer_clicked_lesion"  # {"case": key, "seq": (token, seq), "result": LesionResult | None, "error"}
HANDLED = "viewer_segmented_click"  # (token, seq) of the last click segmented
_ADDED: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (case key, review id) → union of added lesions
_LOCK = threading.Lock()


def _store():
    from .study_ui import get_store

    return get_store()


def latest_review(case):
    return review.latest(_store(), case)


def segment_new_click(case, token: str, value: dict | None) -> None:
    """Segment the click in the component's ``value`` if it is new and on this case (``token``: the
    case's folder token the component reports clicks under)."""
    if not value or value.get("reason") != "click" or value.get("case") != token or not value.get("click"):
        return
    seq = (token, value.get("seq"))
    if st.session_state.get(HANDLED) == seq:
        return  # segmented already: later reruns (Discard, Add, other widgets) see the same value
    st.session_state[HANDLED] = seq
    predictor, note = state.lesion_predictor_and_note()
    entry = {"case": case.key, "seq": seq, "result": None, "error": None,
             "point_mm": tuple(float(v) for v in value["click"]["mm"])}
    if predictor is None:
        entry["error"] = note
    else:
        try:
            entry["result"] = predictor.segment(case.volume, entry["point_mm"])
        except LungsegError as exc:
            entry["error"] = str(exc)
    st.session_state[PENDING] = entry


def pending(case) -> dict | None:
    held = st.session_state.get(PENDING)
    return held if held is not None and held.get("case") == case.key else None


def discard() -> None:
    st.session_state.pop(PENDING, None)


def added_union(case, latest) -> np.ndarray | None:
    """The union of the added lesions of ``latest``, the same array object for the same review (the
    viewer writes a layer's file again only for a new array)."""
    if latest is None or not latest.added:
        return None
    key = (case.key, latest.id)
    with _LOCK:
        hit = _ADDED.get(key)
        if hit is not None:
            _ADDED.move_to_end(key)
            return hit
    mask = review.added_mask(case, latest)
    with _LOCK:
        _ADDED[key] = mask
        while len(_ADDED) > 8:
            _ADDED.popitem(last=False)
    return mask


def with_click_layers(vc, case, latest):
    """``vc`` with the "added lesions" and "clicked lesion" layers where they have voxels."""
    layers = dict(vc.layers)
    added = added_union(case, latest)
    if added is not None:
        layers["added lesions"] = added
    held = pending(case)
    if held is not None and held["result"] is not None and held["result"].found:
        layers["clicked lesion"] = held["result"].mask
    return dataclasses.replace(vc, layers=layers)


def lesion_rows(vc, case, latest) -> list[dict]:
    """The viewer's lesion table: the automatic (or manual) lesions, then those added by click."""
    rows = [{"lesion": str(r["lesion"]), "how": vc.lesion_source, "side": r["side"], "volume (ml)": r["volume_ml"],
             "longest axial diameter (mm)": r["longest_axial_diameter_mm"],
             "slices": f"{r['first_slice'] + 1}–{r['last_slice'] + 1}", "centre slice": r["centroid_slice"] + 1}
            for r in vc.lesions]
    for r in review.added_lesion_rows(case, latest):
        rows.append({"lesion": r["lesion"], "how": f"added by click ({r['added_by']})", "side": r["side"],
                     "volume (ml)": r["volume_ml"], "longest axial diameter (mm)": r["longest_axial_diameter_mm"],
                     "slices": f"{r['first_slice'] + 1}–{r['last_slice'] + 1}", "centre slice": r["centroid_slice"] + 1})
    return rows


def show_controls(case, user, key: str = "viewer_click") -> None:
    """The clicked lesion's measurements and its two buttons (inside the viewer's fragment)."""
    held = pending(case)
    if held is None:
        return
    x, y, z = held["point_mm"]
    where = f"({x:.1f}, {y:.1f}, {z:.1f}) mm"
    if held["error"]:
        st.caption(f"Click-to-segment at {where}: {held['error']}")
        return
    result = held["result"]
    if not result.found:
        st.caption(f"No lesion under the click at {where}.")
        return
    cut = " · larger than the largest field of view: the contour may be cut" if result.larger_than_view else ""
    st.markdown(f"**Clicked lesion** (green): {result.volume_ml:.2f} ml · longest axial diameter "
                f"{result.longest_axial_diameter_mm:.1f} mm · equivalent diameter {result.equivalent_diameter_mm:.1f} mm"
                f" · slices {_slices(result.mask)}{cut} · segmented in {result.seconds:.2f} s")
    left, right, _ = st.columns([2, 1, 5])
    if left.button("Add to automatic contour", key=f"{key}_add", type="primary"):
        try:
            saved = review.add_lesion(_store(), case, user, result.mask, result.point_mm)
        except LungsegError as exc:
            st.error(str(exc))
            return
        discard()
        st.session_state["viewer_click_added"] = f"Added lesion {saved.added[-1].label} by {saved.reviewer} at {saved.decided_at}."
        st.rerun(scope="app")  # the review panel (outside the fragment) lists it too
    right.button("Discard", key=f"{key}_discard", on_click=discard)


def _slices(mask: np.ndarray) -> str:
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    return f"{zs[0] + 1}–{zs[-1] + 1}"
