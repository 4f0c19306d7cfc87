"""Contour: the reader's readings of a contouring study, in the viewer with its editing tools.

Signed in from the personal link (``?token=...``) like the Rate page.  The reader begins each session
explicitly, contours each case of it (from scratch, or from the automatic draft when the arm is assisted) and
submits; only their own readings, contours, times and progress are ever shown.
"""

from datetime import datetime

import streamlit as st

from lungseg.errors import LungsegError
from lungseg.study import AccessDenied, AuthError, StudyError
from lungseg_app import contouring_ui, study_ui

st.set_page_config(page_title="Contour", layout="wide", initial_sidebar_state="collapsed")
st.markdown("<style>.block-container{padding-top:2.6rem}</style>", unsafe_allow_html=True)

st.title("Contouring study")
store = study_ui.get_store()
session, study = study_ui.signed_in_rater(store, "contouring")
try:
    progress = store.contouring_progress(session)
    view = store.next_reading(session)
except AuthError as exc:
    st.error(f"This link cannot be used: {exc}.")
    st.stop()

if view is None:
    if progress.finished:
        st.success(f"All {progress.total} cases are done. Thank you, {session.display_name}.")
        st.stop()
    with st.expander("Instructions", expanded=True):
        st.write(study.instructions)
    if progress.next_session_at:
        when = datetime.fromisoformat(progress.next_session_at)
        st.info(f"Session {progress.session} is done. Your next session can begin on {when:%Y-%m-%d %H:%M} UTC "
                "(the readings of one case are kept apart).")
        st.stop()
    label = "Begin the first session" if progress.session is None else \
        f"Begin session {progress.session + 1} of {progress.sessions}"
    if progress.session is not None:
        st.success(f"Session {progress.session} of {progress.sessions} is done ({progress.done} of {progress.total} "
                   "cases). Take a break before the next one.")
    if st.button(label, key="begin_session", type="primary"):
        try:
            store.begin_session(session)
        except StudyError as exc:
            st.error(str(exc))
        else:
            st.rerun()
    st.stop()

arm = ("Assisted: you start from the automatic draft; correct it until it is the contour you would use."
       if view.shows_automatic else "From scratch: draw the contour yourself (Brush, Eraser, HU brush, Outline fill).")
st.markdown(f"**Case {view.position} of {view.total}** · session {view.session} of {view.sessions} · "
            f"{progress.session_done} of {progress.session_total} done in this session")
st.caption(arm)
try:
    contouring_ui.contour(store, session, view)
except (AccessDenied, LungsegError) as exc:
    st.error(f"This case cannot be shown: {exc}")
