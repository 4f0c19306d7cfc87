"""The Contour page's reading: the viewer (with its editing tools) on one reading of the signed-in reader.

The viewer shows the case's CT and one editable structure, the reader's contour, which starts as the store
says (:meth:`~lungseg.study.readings.Contouring.reading_start_mask`: empty from scratch, the automatic draft
when assisted, or the reader's own saved draft).  Nothing else of the case is drawn: no automatic contour in
the scratch arm, no manual contour, no lung region, no lesion table, and no other reader's anything.  Each
reading gets its own files folder (a secret token per reading), so the files of one reader's contour are not
reachable from another's page.

Edits arrive in the component's outbox as per-slice deltas (the wire format of :mod:`lungseg.structures`) and
are applied here to the reading's mask, which is saved as the reading's draft after every change (with the
active time so far: the viewer's activity events, idle gaps over 60 s left out), so a reload or a later visit
resumes where the reader stopped.  Submitting stores the mask and the active time.
"""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from lungseg import structures
from lungseg.errors import LungsegError
from lungseg.study.readings import ReadingView
from lungseg_app import study_ui
from lungseg_app.viewer.component import viewer
from lungseg_app.viewer.layers import ViewerCase
from lungseg_app.viewer.publish import component_args, folder_for, mask_file

LAYER = "your contour"
STATE = "contour_reading"


def _state(store, session, view: ReadingView, shape) -> dict:
    """The reading being contoured in this browser session (restored from the store's draft on a new visit)."""
    s = st.session_state.get(STATE)
    if s is None or s["id"] != view.reading_id:
        store.open_reading(session, view.reading_id)
        mask = store.reading_start_mask(session, view.reading_id)
        s = st.session_state[STATE] = {"id": view.reading_id, "mask": mask, "version": 1, "applied": 0,
                                       "ack": {"id": 0, "versions": {}, "error": ""}, "times": [],
                                       "base_active": view.draft_active_s}
    if s["mask"].shape != shape:
        raise LungsegError("the case's grid has changed since the study was set up")
    return s


def active_s(s: dict) -> float:
    """Active time of the reading: earlier visits' (from the draft) plus this visit's."""
    return float(s["base_active"]) + structures.active_seconds(s["times"])


def _apply(s: dict, value: dict | None, token: str, spacing_yx: tuple[float, float]) -> bool:
    """Apply the component's new messages to the reading; True when the mask or the active time changed."""
    if not value or value.get("case") != token:
        return False
    last = max(s["times"], default=0.0)
    new = sorted(float(t) for t, _ in value.get("activity") or [] if float(t) > last)
    s["times"] += new
    changed = bool(new)
    for m in value.get("outbox") or []:
        mid = int(m.get("id", 0))
        if mid <= s["applied"]:
            continue
        try:
            if m.get("type") == "edit" and m.get("name") == LAYER:
                deltas = structures.decode_deltas(json.dumps(m.get("deltas") or []), s["mask"].shape)
                s["mask"] = structures.apply_deltas(s["mask"], deltas)
                s["version"] += 1
                s["ack"]["versions"][LAYER] = s["version"]
                changed = True
            elif m.get("type") == "interpolate" and m.get("name") == LAYER:
                after = structures.interpolate_slices(s["mask"], [int(k) for k in m.get("slices") or []],
                                                      spacing_yx=spacing_yx)
                if np.array_equal(after, s["mask"]):
                    s["ack"]["error"] = "nothing to add between the edited slices"
                else:
                    s["mask"], s["version"] = after, s["version"] + 1  # the page fetches the new version
                    changed = True
        except LungsegError as exc:
            s["ack"]["error"] = f"an edit was not applied: {exc}"
        s["applied"] = s["ack"]["id"] = mid
    return changed


def _start_slice(mask: np.ndarray) -> int:
    per_slice = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return int(np.argmax(per_slice)) if per_slice.any() else mask.shape[0] // 2


def contour(store, session, view: ReadingView, height: int = 820) -> None:
    """The viewer on ``view`` (a reading of the signed-in reader) and its Submit button."""
    case = study_ui.material(store, session.study_id, view.case_id).case
    s = _state(store, session, view, case.volume.shape)
    folder = folder_for(f"contouring-{session.study_id}-{view.reading_id}")
    key = f"contour_viewer_{view.reading_id}"
    sz, sy, sx = case.volume.spacing_zyx
    if _apply(s, st.session_state.get(key), folder.token, (sy, sx)):
        store.save_draft(session, view.reading_id, s["mask"], active_s(s))
    vc = ViewerCase(key=folder.token, label=f"Case {view.position}", volume=case.volume)
    args = component_args(vc, s.setdefault("start", _start_slice(s["mask"])), wait=True, folder=folder)
    provenance = "SEMIAUTOMATIC" if view.arm == "assisted" else "MANUAL"
    args.update(layers=[{"name": LAYER, "colour": list(structures.colour_of("GTV")), "opacity": 0.9,
                         "file": mask_file(folder, f"reading v{s['version']}", s["mask"]), "detail": None,
                         "structure": {"kind": "GTV", "source": "created", "provenance": provenance,
                                       "version": s["version"], "decision": None, "shown": True}}],
                lesions=[], lesion_source="", lesion_decisions={}, active=LAYER, ack=dict(s["ack"]),
                presets={k: [int(lo), int(hi)] for k, (lo, hi) in structures.HU_PRESETS.items()})
    viewer(args, height=height, key=key)
    left, right = st.columns([1, 3])
    if left.button("Submit this contour", key=f"submit_{view.reading_id}", type="primary"):
        store.submit_reading(session, view.reading_id, s["mask"], active_s(s))
        st.session_state.pop(STATE, None)
        st.rerun()
    right.caption(f"Active time so far: {active_s(s):.0f} s (pauses over 60 s are not counted). Your work is saved "
                  "as you go: you can close the page and come back to this case later.")
