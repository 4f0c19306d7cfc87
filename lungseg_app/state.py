"""Per-user state and the server's shared, immutable resources.

Shared by every browser session of a server: the tumour model (loaded once), a bounded in-memory LRU of
opened cases (immutable, so sharing is safe) and the on-disk result cache.  Everything a user chooses
(the case, its manual ROI, window, review choices) lives in that user's ``st.session_state``.
"""

from __future__ import annotations

import streamlit as st

from lungseg.case import CaseMemory, CaseSource, ResultCache, model_version, open_case_progressively
from lungseg.errors import LungsegError

from . import cases


def predictor_and_note():
    """The tumour model in use (the one chosen on the Model page), loaded once per server process and
    model: (predictor or None, note or None)."""
    from lungseg.installed_models import chosen_model

    return _predictor_and_note(str(chosen_model()))


@st.cache_resource(show_spinner=False)
def _predictor_and_note(path: str):
    try:
        from lungseg.case import default_predictor

        return default_predictor(path), None
    except Exception as exc:  # noqa: BLE001 - no model: lung region only, said plainly
        return None, f"Tumour model could not be loaded ({cases.one_line(exc)}): showing the lung region only."


@st.cache_resource(show_spinner=False)
def lesion_predictor_and_note():
    """The click-to-segment model, loaded once per server process and run twice on an empty patch, so
    the first click does not pay torch's first-call costs: (predictor or None, note or None)."""
    try:
        import numpy as np

        from lungseg.lesion.segment import LesionPredictor

        predictor = LesionPredictor()
        for _ in range(2):
            predictor.probability(np.full(predictor.grid.shape, -1000.0, np.float32))
        return predictor, None
    except Exception as exc:  # noqa: BLE001 - no model: clicks only show the point, said plainly
        return None, f"Click-to-segment model could not be loaded ({cases.one_line(exc)}): a click shows the point only."


@st.cache_resource(show_spinner=False)
def memory() -> CaseMemory:
    return CaseMemory()


@st.cache_resource(show_spinner=False)
def _result_cache(root: str) -> ResultCache:
    return ResultCache(root)


def result_cache() -> ResultCache:
    return _result_cache(str(cases.app_cache_dir() / "results"))


def current():
    """This user's open case (immutable), or None."""
    return st.session_state.get("case")


def current_source() -> CaseSource | None:
    return st.session_state.get("case_source")


def set_current(case) -> None:
    st.session_state["case"] = case
    st.session_state["case_source"] = case.source
    start = int(case.lesions[0]["centroid_slice"]) if case.lesions else case.volume.shape[0] // 2
    st.session_state["jump"] = {"slice": start, "token": f"{case.key}:{case.source.manual}:open"}


def open_source(source: CaseSource, label: str | None = None) -> bool:
    """Open ``source`` for this user with a visible progress box; on error show it in one line and keep
    the current case.  Cases already opened on this server (by anyone) come from memory at once."""
    predictor, _ = predictor_and_note()
    if source.automatic.kind == "model" and predictor is None:
        st.error("No tumour model is available on this server, so no automatic contour can be made.")
        return False
    version = model_version(predictor) if source.automatic.kind == "model" else None
    try:
        key = CaseMemory.key_of(source, version)
    except OSError as exc:
        st.error(f"{label or source.ct}: {cases.one_line(exc)}")
        return False
    hit = memory().get(key)
    if hit is not None:
        set_current(hit)
        return True
    label = label or ("the demo case" if source.is_demo else str(source.ct).rsplit("/", 1)[-1])
    failure = None
    with st.status(f"Opening {label}…", expanded=True) as box:
        bar = st.progress(0.0)

        def progress(message: str, fraction: float) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

        try:
            case = None
            for case in open_case_progressively(source, predictor, progress, cache=result_cache()):
                pass
        except LungsegError as exc:
            failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - never take the app down on a bad case
            failure = f"{label}: {type(exc).__name__}: {cases.one_line(exc)}"
        if failure is not None:
            # the reason goes in the collapsed box's title and in a message outside it, never only inside
            box.update(label=f"Could not open {label}: {failure}", state="error", expanded=False)
        else:
            bar.progress(1.0, text="Done")
    if failure is not None:
        st.error(f"Could not open {label}: {failure}")
        return False
    how = "from cache" if case.from_cache else "processed"
    box.update(label=f"Opened {case.label} ({how}, {case.seconds.get('open', 0):.1f} s)", state="complete",
               expanded=False)
    memory().put(key, case)
    set_current(case)
    return True
