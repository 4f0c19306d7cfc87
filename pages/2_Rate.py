"""Rate: the blinded two-contour preference task, signed in from the personal link (?token=...).

Blinding: the two panels carry identical markup and style; widget keys are by position only; the
side of each contour is known to the server alone.  Votes always go to the signed-in rater.
"""

import time

import streamlit as st

from lungseg.errors import LungsegError
from lungseg.study import AccessDenied, AuthError, StudyError
from lungseg_app import study_ui

st.set_page_config(page_title="Rate", layout="wide")
st.title("Contour comparison")

store = study_ui.get_store()
session, study = study_ui.signed_in_rater(store, "preference")
try:
    item = store.next_item_for(session)
    progress = store.progress(session)
except AuthError as exc:
    st.error(f"This link cannot be used: {exc}.")
    st.stop()

if item is None:
    st.success(f"All {progress.total} comparisons are done. Thank you, {session.display_name}.")
    st.stop()

with st.expander("Instructions", expanded=progress.done == 0):
    st.write(study.instructions)

st.markdown(f"**{item.position} of {item.total}**")
st.progress(progress.done / max(progress.total, 1))

# the time the item was first shown (server side; window changes do not reset it)
shown = st.session_state.setdefault("shown_at", {})
shown.setdefault(item.item_id, time.monotonic())

width, level = study_ui.window_controls("rate")
try:
    with st.spinner("Preparing the images…"):
        mat = study_ui.material(store, session.study_id, item.case_id)
    k = item.slice_index if item.slice_index is not None else mat.contour_slices()[len(mat.contour_slices()) // 2]
    first, second = (mat.automatic, mat.manual) if item.auto_side == "left" else (mat.manual, mat.automatic)
    left_src, right_src = study_ui.pair_images(mat, k, first, second, width, level)
except (LungsegError, IndexError) as exc:
    st.error(f"This comparison cannot be shown ({type(exc).__name__}); please tell the study team.")
    st.stop()
st.html(study_ui.panel_pair_html(left_src, right_src))

pos = item.position
turing = None
if item.ask_turing:
    t = st.radio("Which of the two contours do you think a computer drew? (optional)",
                 ["Left", "Right"], index=None, horizontal=True, key=f"t_{pos}")
    turing = t.lower() if t else None
comment = st.text_input("Comment (optional)", key=f"c_{pos}", max_chars=2000)



def cast(item_id: int, vote: str) -> None:
    """A button's vote, for the pair that was on screen when it was pressed (runs before the page).  A press
    on a pair already voted (the next pair was still loading) is not counted, and the page says so."""
    started = shown.get(item_id)
    if started is None:
        st.session_state["rate_refused"] = ("Your last click came while the next pair was loading: it was not "
                                            "counted. Please vote on the pair shown now.")
        return
    try:
        stored = store.cast_vote(session, item_id, vote, response_ms=int((time.monotonic() - started) * 1000),
                                 comment=st.session_state.get(f"c_{pos}", ""), turing=turing)
    except AccessDenied as exc:
        st.session_state["rate_refused"] = f"Vote refused: {exc}."
        return
    except StudyError as exc:
        st.session_state["rate_refused"] = f"Vote not recorded: {exc}."
        return
    shown.pop(item_id, None)
    if not stored.created:
        st.session_state["rate_refused"] = "That pair had been voted already: the second click was not counted."


refused = st.session_state.pop("rate_refused", None)
if refused:
    st.warning(refused)
c1, c2 = st.columns(2)
# each button carries the pair it was drawn with: a press is a vote for that pair, never the next one
c1.button("◀ Left is better", key=f"l_{pos}", type="primary", shortcut="Left", width="stretch",
          on_click=cast, args=(item.item_id, "left"))
c2.button("Right is better ▶", key=f"r_{pos}", type="primary", shortcut="Right", width="stretch",
          on_click=cast, args=(item.item_id, "right"))
st.caption("Keyboard: ← Left · → Right")
