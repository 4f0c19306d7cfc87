"""The viewer's structures, edits and decisions on the Python side (:mod:`lungseg.structures` does the work).

The component sends an *outbox* with every value: messages numbered in the order the user made them (an
edit of one structure as per-slice deltas, an interpolation, an accept / reject, a structure to show) and
the activity events since the last acknowledgement.  Each rerun applies the messages it has not applied yet
(by number, so a value seen twice changes nothing), and the component's next arguments acknowledge them
(``ack``) with the versions the edits made; the browser keeps painting meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import streamlit as st

from lungseg import structures
from lungseg.errors import LungsegError

APPLIED = "viewer_outbox_applied"  # {case key: last message id applied}
ACK = "viewer_outbox_ack"  # {case key: {"id", "versions", "error"}}
ACTIVITY = "viewer_activity_until"  # {case key: time of the last event recorded}
SHOWN = "viewer_shown_structures"  # {case key: names the user asked to show}
ACTIVE = "viewer_active_structure"  # {case key: structure to edit, offered to the page}
EDITED_NOW = "viewer_edited_now"  # {case key: structures this run stored from the page's own edits}
SENT = "viewer_structure_files"  # {(case key, name): the file last handed to the page}
_MASKS: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (case key, name, version) → mask, shared by sessions
_LOCK = threading.Lock()
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="viewer-structure-files")
log = logging.getLogger(__name__)


def _store():
    from .study_ui import get_store

    return get_store()


def mask_of(case, view) -> np.ndarray:
    """The structure's newest mask, the same array for the same version (the viewer writes a file per new array)."""
    k = (case.key, view.name, view.version, view.latest.created_at if view.latest is not None else "")
    with _LOCK:
        hit = _MASKS.get(k)
        if hit is not None:
            _MASKS.move_to_end(k)
            return hit
    mask = view.mask()
    with _LOCK:
        _MASKS[k] = mask
        while len(_MASKS) > 32:
            _MASKS.popitem(last=False)
    return mask


def shown_by_default(view, case) -> bool:
    """Structures drawn when the case opens: the automatic contour, created ones, the GTVs and the manual
    contour; the other ROIs (lungs, heart, cord, ...) are listed and fetched when ticked."""
    return view.source != "manual" or view.name.upper().startswith("GTV") or \
        (case.manual is not None and case.manual.name == view.name)


def structure_layers(case, views, folder) -> list[dict]:
    """The structures as the component's layers (colour from :func:`lungseg.structures.colour_of`)."""
    from .viewer.publish import mask_file

    wanted = st.session_state.get(SHOWN, {}).get(case.key, set())
    edited_now = st.session_state.get(EDITED_NOW, {}).get(case.key, set())
    sent = st.session_state.setdefault(SENT, {})
    out = []
    for v in views:
        show = shown_by_default(v, case) or v.name in wanted
        file = None
        if show:
            mask = mask_of(case, v)
            # the page that just sent this edit holds the new version's bits already: its file is written
            # behind the acknowledgement (the save round trip does not wait for ~70 ms of packbits + gzip);
            # any other rerun (a reload, another page, a version made on the server) has it written first
            if v.name in edited_now and (case.key, v.name) in sent:
                _WRITER.submit(mask_file, folder, f"structure {v.name}", mask)
                file = sent[(case.key, v.name)]
            else:
                file = sent[(case.key, v.name)] = mask_file(folder, f"structure {v.name}", mask)
        out.append({"name": v.name, "colour": list(v.colour), "opacity": 0.9, "file": file,
                    "detail": None,
                    "structure": {"kind": v.kind, "source": v.source, "provenance": v.provenance,
                                  "version": v.version, "decision": v.decision, "shown": show}})
    return out


def lesion_decisions(views) -> dict[str, str]:
    """Lesion number → "accepted"/"rejected" of the unedited automatic contour, for the viewer's lesion list."""
    auto = next((v for v in views if v.source == "automatic"), None)
    if auto is None or auto.decision is None or auto.decided_version not in (0, None):
        return {}
    numbers = [int(r["lesion"]) for r in auto.lesions]
    if auto.accepted_lesions is None:
        return {str(n): auto.decision for n in numbers}
    return {str(n): "accepted" if n in auto.accepted_lesions else "rejected" for n in numbers}


def handle(case, user, value: dict | None, token: str) -> bool:
    """Apply the new messages of the component's ``value`` (if it is about this case); True when a decision
    or a new structure changed what the rest of the page shows."""
    edited_now = st.session_state.setdefault(EDITED_NOW, {})[case.key] = set()
    if not value or value.get("case") != token:
        return False
    _record_activity(case, user, value.get("activity") or [])
    applied = st.session_state.setdefault(APPLIED, {})
    done = applied.get(case.key, 0)
    ack = st.session_state.setdefault(ACK, {}).setdefault(case.key, {"id": 0, "versions": {}, "error": ""})
    page_changed = False
    store = _store()
    for m in value.get("outbox") or []:
        mid = int(m.get("id", 0))
        if mid <= done:
            continue
        try:
            page_changed |= _apply(store, case, user, m, ack)
            if m.get("type") == "edit":
                edited_now.add(str(m.get("name", "")))
        except LungsegError as exc:
            ack["error"] = f"{m.get('type', 'message')} of {m.get('name', '')} not stored: {exc}"
        except Exception as exc:  # noqa: BLE001 - a failed message is reported in the viewer, never takes the page down
            log.exception("viewer message %s failed", m.get("type"))
            ack["error"] = f"{m.get('type', 'message')} of {m.get('name', '')} failed: {type(exc).__name__}"
        done = mid
    applied[case.key] = done
    ack["id"] = done
    return page_changed


def _apply(store, case, user, m: dict, ack: dict) -> bool:
    kind, name = m.get("type"), str(m.get("name", ""))
    if kind == "edit":
        rows = store.structure_versions(case.key, name, latest_only=True, with_masks=False)
        latest = int(rows[0]["version"]) if rows else 0  # 0: the original (a manual ROI, the automatic contour)
        v = structures.apply_edits(store, case, user, name, latest, json.dumps(m.get("deltas") or []), operations=1,
                                      assisted=bool(m.get("assisted")))  # the HU brush is assisted; a plain brush is not
        ack["versions"][name] = v.version
        return False
    if kind == "interpolate":
        view = structures.structure(store, case, name)
        structures.interpolate_structure(store, case, user, name, view.version, [int(k) for k in m.get("slices") or []])
        return False
    if kind == "decide":
        lesions = [int(n) for n in m["lesions"]] if m.get("lesions") else None
        structures.decide(store, case, user, name, bool(m.get("accepted")), lesions=lesions)
        return True
    if kind == "show":
        st.session_state.setdefault(SHOWN, {}).setdefault(case.key, set()).add(name)
        return False
    return False


def _record_activity(case, user, events: list) -> None:
    until = st.session_state.setdefault(ACTIVITY, {})
    last = until.get(case.key, 0.0)
    new = [(float(t), str(k)[:16]) for t, k in events if float(t) > last]
    if new:
        structures.record_activity(_store(), case, user, new)
        until[case.key] = max(t for t, _ in new)


def ack_for(case) -> dict:
    return st.session_state.get(ACK, {}).get(case.key, {"id": 0, "versions": {}, "error": ""})


def offer_active(case, name: str) -> None:
    """Ask the page to make ``name`` the structure being edited (e.g. just created)."""
    st.session_state.setdefault(ACTIVE, {})[case.key] = name


def active_offer(case) -> str | None:
    return st.session_state.get(ACTIVE, {}).get(case.key)


def create(case, user, name: str, kind: str, start) -> str:
    """Create a structure and offer it for editing; returns a line saying what was made."""
    v = structures.create_structure(_store(), case, user, name, kind, start)
    offer_active(case, v.name)
    return f"Created {v.name} ({v.kind}, {v.provenance}, from {v.origin}) by {v.author} at {v.created_at}."


REPLACED = ("automatic tumour", "manual contour", "added lesions")  # shown as structures once a case is open


def viewer_args(case, args: dict, views, folder) -> dict:
    """The component's arguments with every structure as a layer (after the lung region, before the
    clicked lesion), the acknowledgement of the page's messages, the HU presets and per-lesion decisions."""
    layers = [a for a in args["layers"] if a["name"] not in REPLACED]
    lung = [a for a in layers if a["name"] == "lung region"]
    rest = [a for a in layers if a["name"] != "lung region"]
    auto = next((v.name for v in views if v.source == "automatic"), None)
    lesions = [{**r, "structure": auto} for r in args["lesions"]] if auto else args["lesions"]
    return {**args, "layers": lung + structure_layers(case, views, folder) + rest, "lesions": lesions,
            "lesion_decisions": lesion_decisions(views), "ack": ack_for(case), "active": active_offer(case),
            "presets": {k: [int(lo), int(hi)] for k, (lo, hi) in structures.HU_PRESETS.items()}}


def create_form(case, user, views) -> None:
    """A new structure (name and type) from nothing, from automatic lesions or from a manual ROI."""
    with st.expander("New structure", expanded=False):
        c1, c2, c3, c4 = st.columns([2, 1, 3, 1])
        name = c1.text_input("Name", value="GTVp", key="new_structure_name")
        kind = c2.selectbox("Type", structures.KINDS, key="new_structure_kind")
        starts: dict[str, object] = {"empty (draw it)": "empty"}
        if case.automatic is not None:
            for r in case.automatic.lesions:
                starts[f"automatic lesion {r['lesion']} ({r['volume_ml']:.1f} ml)"] = ("automatic", [int(r["lesion"])])
            starts["the whole automatic contour"] = ("automatic", None)
        for v in views:
            if v.source == "manual":
                starts[f"manual ROI {v.name}"] = ("manual", v.name)
        start = c3.selectbox("Start from", list(starts), key="new_structure_start")
        c4.write("")
        if c4.button("Create", key="new_structure_create"):
            try:
                said = create(case, user, name, kind, starts[start])
            except LungsegError as exc:
                st.error(str(exc))
            else:
                st.session_state["viewer_click_added"] = said
                st.rerun(scope="app")
