"""Session state for the app: the current case, the tumour model (one per process), opening with progress."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lungseg.errors import LungsegError

from . import cases


@st.cache_resource(show_spinner=False)
def predictor_and_note():
    """The tumour model, loaded once per server process: (predictor or None, note or None)."""
    return cases.load_predictor()


@st.cache_resource(max_entries=3, show_spinner=False)
def _recent() -> dict:
    """Cases opened in this process, by source key (so reopening is instant across sessions)."""
    return {}


def current() -> cases.Case | None:
    return st.session_state.get("case")


def set_current(case: cases.Case) -> None:
    st.session_state["case"] = case
    st.session_state["jump"] = {"slice": case.loaded.volume.shape[0] // 2, "token": f"{case.key}:open"}
    default = lesion_start(case)
    if default is not None:
        st.session_state["jump"]["slice"] = default


def lesion_start(case: cases.Case) -> int | None:
    _, rows = case.lesions()
    return int(rows[0]["centroid_slice"]) if rows else None


def open_case(kind: str, path: Path | None = None, contour: Path | None = None, roi: str | None = None) -> bool:
    """Open a case with a visible progress box; on error show it in one line and keep the current case."""
    predictor, _ = predictor_and_note()
    recent = _recent()
    rkey = None
    if kind == "path" and contour is None and roi is None and path is not None and Path(path).exists():
        try:
            rkey = (cases.source_key(Path(path)), cases.model_version(predictor))
        except OSError:
            rkey = None
    if kind == "demo":
        rkey = ("demo", cases.model_version(predictor))
    if rkey is not None and rkey in recent:
        set_current(recent[rkey])
        return True
    label = "the demo case" if kind == "demo" else Path(path).name if path else "case"
    with st.status(f"Opening {label}…", expanded=True) as box:
        bar = st.progress(0.0)

        def progress(message: str, fraction: float) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

        try:
            if kind == "demo":
                case = cases.open_demo(predictor, progress)
            else:
                case = cases.open_path(Path(path), predictor, progress, contour=contour, roi=roi)
        except LungsegError as exc:
            box.update(label=f"Could not open {label}", state="error", expanded=False)
            st.error(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - never take the app down on a bad case
            box.update(label=f"Could not open {label}", state="error", expanded=False)
            st.error(f"{label}: {type(exc).__name__}: {cases.one_line(exc)}")
            return False
        bar.progress(1.0, text="Done")
        how = "from cache" if case.from_cache else "processed"
        box.update(label=f"Opened {case.label} ({how}, {case.seconds.get('open', 0):.1f} s)", state="complete", expanded=False)
    if rkey is not None:
        recent[rkey] = case
    set_current(case)
    return True
