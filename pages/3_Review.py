"""Clinical review of a study's cases (admin, not blinded): the same review component as the viewer."""

import streamlit as st

from lungseg.errors import LungsegError
from lungseg.study.cases import check_model_version, study_case_source
from lungseg_app import auth, review_panel, state, study_ui

st.set_page_config(page_title="Clinical review", layout="wide")
st.title("Clinical review")
admin = auth.require_admin()
store = study_ui.get_store()
study = study_ui.pick_study(store, key="review_study")
rows = store.cases(study.id)
if not rows:
    st.info("This study has no cases.")
    st.stop()
case_id = st.selectbox("Case", [r["case_id"] for r in rows], key="review_case")
meta = next(r["metadata"] for r in rows if r["case_id"] == case_id)
try:
    source = study_case_source(meta)
    check_model_version(source, meta, state.predictor_and_note()[0])
except LungsegError as exc:
    st.error(f"case {case_id}: {exc}")
    st.stop()
if state.current_source() != source and not state.open_source(source, case_id):
    st.stop()
case = state.current()
st.caption(f"Automatic contour: {case.automatic.description if case.automatic else '—'}. "
           f"Manual contour: {case.manual.name if case.manual else '—'}.")
review_panel.show(case, admin, study=study.name, case_id=case_id, key="study_review")
