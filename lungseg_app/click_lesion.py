"""Click-to-segment in the viewer: a click on a fully open case gives the lesion under it
(:func:`lungseg.lesion.segment_at` with the model held once per process), shown as the viewer's
"clicked lesion" layer until the reviewer makes it a structure of its own (name and type, e.g. GTVn;
SEMIAUTOMATIC, origin "click": :func:`lungseg.structures.create_structure`) or discards it (nothing
stored).  An implausible result (:func:`plausibility`) needs an explicit confirmation.

The click is read from the component's state *before* the component is drawn, so the contour goes out
with the same rerun that received the click (one round trip, not two).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from lungseg.errors import LungsegError

from . import state

PENDING = "viewer_clicked_lesion"  # {"case": key, "seq": (token, seq), "result": LesionResult | None, "error"}
HANDLED = "viewer_segmented_click"  # (token, seq) of the last click segmented


def _store():
    from .study_ui import get_store

    return get_store()


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


def with_click_layers(vc, case):
    """``vc`` with the "clicked lesion" layer while a clicked lesion waits for a decision."""
    layers = dict(vc.layers)
    held = pending(case)
    if held is not None and held["result"] is not None and held["result"].found:
        layers["clicked lesion"] = held["result"].mask
    return dataclasses.replace(vc, layers=layers)


def plausibility(result, volume) -> list[str]:
    """The library's plain warnings about a clicked lesion (:func:`lungseg.lesion.plausibility`), with the
    clicked voxel worked out from the click's point in mm."""
    from lungseg.lesion import plausibility as warnings_for

    zyx = volume.physical_to_index(np.asarray(result.point_mm, float))[0]
    return warnings_for(result, tuple(int(round(v)) for v in zyx))


def show_controls(case, user, key: str = "viewer_click") -> None:
    """The clicked lesion's measurements, its 3-D extent, the guard's warnings and the choice to make it a
    structure (an implausible one only with an explicit confirmation) or discard it (nothing stored)."""
    from . import editing

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
        st.info(f"No lesion here: nothing was found under the click at {where}.")
        return
    ex, ey, ez = result.extent_mm
    cut = " · larger than the largest field of view: the contour may be cut" if result.larger_than_view else ""
    st.markdown(f"**Clicked lesion** (green): {result.volume_ml:.2f} ml · longest axial diameter "
                f"{result.longest_axial_diameter_mm:.1f} mm · extent {ex:.0f} × {ey:.0f} × {ez:.0f} mm (x × y × z)"
                f" · slices {_slices(result.mask)}{cut} · segmented in {result.seconds:.2f} s")
    warnings = plausibility(result, case.volume)
    confirmed = True
    if warnings:
        st.warning("This is probably not a lesion: " + "; ".join(warnings) + ". Look at its extent in the coronal "
                   "and sagittal views before adding it.")
        confirmed = st.checkbox("I have checked its extent: add it anyway", key=f"{key}_confirm_{held['seq']}")
    c1, c2, c3, c4 = st.columns([2, 1, 2, 1])
    name = c1.text_input("Structure name", value="GTVn", key=f"{key}_name")
    kind = c2.selectbox("Type", structures_kinds(), index=1, key=f"{key}_kind")
    c3.write("")
    if c3.button("Add as a new structure", key=f"{key}_add", type="primary", disabled=not confirmed):
        try:
            said = editing.create(case, user, name, kind, ("mask", result.mask, "SEMIAUTOMATIC", "click"))
        except LungsegError as exc:
            st.error(str(exc))
            return
        discard()
        st.session_state["viewer_click_added"] = said
        st.rerun(scope="app")
    c4.write("")
    c4.button("Discard", key=f"{key}_discard", on_click=discard)


def structures_kinds() -> tuple[str, ...]:
    from lungseg.structures import KINDS

    return KINDS


def _slices(mask: np.ndarray) -> str:
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    return f"{zs[0] + 1}–{zs[-1] + 1}"
