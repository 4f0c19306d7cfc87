"""Clinical review (admin, not blinded): per case, the automatic and the manual contour side by side."""

import streamlit as st

from lungseg.errors import LungsegError
from lungseg.study import SPECIALTIES, StudyError
from lungseg_app import auth, study_ui

st.set_page_config(page_title="Clinical review", layout="wide")
st.title("Clinical review")
admin = auth.require_admin()
store = study_ui.get_store()
study = study_ui.pick_study(store, key="review_study")
case_ids = [r["case_id"] for r in store.cases(study.id)]
if not case_ids:
    st.info("This study has no cases.")
    st.stop()
case_id = st.selectbox("Case", case_ids, key="review_case")

try:
    mat = study_ui.material(store, study.id, case_id)
except LungsegError as exc:
    st.error(str(exc))
    st.stop()
ks = mat.contour_slices()
k = st.select_slider("Axial slice", options=ks, value=ks[len(ks) // 2], key=f"review_slice_{case_id}")
width, level = study_ui.window_controls("review")
auto_src, manual_src = study_ui.pair_images(mat, k, mat.automatic, mat.manual, width, level)
st.html(study_ui.labelled_pair_html([("Automatic", auto_src), ("Manual", manual_src)]))
meta = study_ui.case_meta(store, study.id, case_id)
st.caption(f"Automatic contour: {meta.get('automatic_description', mat.automatic_kind)}. "
           f"Manual contour: {mat.roi or 'structure set'}.")

st.subheader("Verdict")
choices = {"Accept the automatic contour": "automatic", "Accept the manual contour": "manual",
           "Reject both": "none"}
with st.form("verdict"):
    pick = st.radio("Verdict", list(choices), key="review_pick")
    reason = st.text_input("Reason (required when rejecting both)", key="review_reason")
    spec = st.selectbox("Your specialty (recorded with your verdict)", SPECIALTIES, index=1, key="review_spec")
    save = st.form_submit_button("Record verdict")
if save:
    source = choices[pick]
    if source == "none" and not reason.strip():
        st.error("Give a reason when rejecting both contours.")
    else:
        try:
            store.record_admin_review(admin, study, case_id, source, reason, specialty=spec)
            st.success(f"Recorded: {pick.lower()} for case {case_id}.")
        except StudyError as exc:
            st.error(str(exc))

rows = [r for r in store.reviews_table(study.id) if r["case_id"] == case_id]  # newest first
if rows:
    st.markdown("**Reviews of this case** (newest first; the first is the one export uses)")
    st.dataframe([{"reviewer": r["rater_name"], "role": r["reviewer_kind"], "specialty": r["rater_group"] or "",
                   "accepted": r["accepted_source"], "reason": r["reason"], "at": r["reviewed_at"]} for r in rows],
                 hide_index=True)
