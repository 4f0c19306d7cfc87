"""Export (admin): the accepted contour of a reviewed case as NIfTI, NRRD, DICOM SEG or RTSTRUCT.

The accepted contour (the case's latest verdict; only the accepted lesions when the review chose
some) is taken from the case opened from its study record — the same case the review showed.  For a non-DICOM source (the demo phantom), SEG and RTSTRUCT need a CT series to
reference: the CT is first written as a DICOM series and the download is a zip of both.  Written by
``lungseg.structures.export_download`` (the one export path): each accepted structure under its name, with
its provenance.
Every prepared export is recorded in the audit log (``contour.export``).
"""

import streamlit as st

from lungseg.errors import LungsegError
from lungseg_app import auth, study_ui

FORMATS = {"NIfTI": "nifti", "NRRD": "nrrd", "DICOM SEG": "seg", "RTSTRUCT": "rtstruct"}

st.set_page_config(page_title="Export", layout="wide")
st.title("Export an accepted contour")
admin = auth.require_admin()
store = study_ui.get_store()
study = study_ui.pick_study(store, key="export_study")

latest: dict = {}
for row in store.reviews_table(study.id):  # rater and admin verdicts, newest first
    latest.setdefault(row["case_id"], row)
ready = {c: r for c, r in latest.items() if r["accepted_source"] in ("automatic", "manual")}
if not ready:
    st.info("No case has an accepted contour yet: record a verdict on the Review page first.")
    st.stop()
case_id = st.selectbox("Reviewed case", list(ready), key="export_case")
rev = ready[case_id]
source = rev["accepted_source"]
review = store.case_review(rev["case_review_id"]) if rev.get("case_review_id") else None
lesions = review.decision(source).lesions if review is not None else None
which = f"lesion(s) {', '.join(map(str, lesions))} of the {source} contour" if lesions else f"the {source} contour"
st.caption(f"Accepted: {which} (latest verdict, by {rev['rater_name']} at {rev['reviewed_at']}).")
label = st.radio("Format", list(FORMATS), horizontal=True, key="export_fmt")
fmt = FORMATS[label]
state_key = (study.id, case_id, source, fmt, rev["reviewed_at"])


def prepare() -> tuple[bytes, str]:
    from lungseg.structures import accepted_from_verdict, export_download

    view = study_ui.material(store, study.id, case_id)
    accepted = accepted_from_verdict(view.case, rev, review)
    data, fname, _ = export_download(view.case, accepted, fmt, stem=f"{case_id}-accepted")
    return data, fname


prepared = st.session_state.get("export_file")
if st.button(f"Prepare {label} file", key="export_prepare"):
    try:
        with st.spinner("Writing the file…"):
            data, fname = prepare()
    except LungsegError as exc:
        st.error(str(exc))
        st.stop()
    store.audit(admin, "contour.export", study=study.name, case=case_id, source=source, format=fmt,
                file=fname, bytes=len(data))
    prepared = st.session_state["export_file"] = {"key": state_key, "data": data, "name": fname}
if prepared and prepared["key"] == state_key:
    st.download_button(f"Download {prepared['name']}", prepared["data"], file_name=prepared["name"],
                       mime="application/octet-stream", key="export_download", on_click="ignore")

st.subheader("Audit log")
st.dataframe([{"at": r["at"], "who": r["actor"], "action": r["action"], "detail": str(r["detail"])}
              for r in store.audit_log(limit=20)], hide_index=True)
