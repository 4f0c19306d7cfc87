"""Export (admin): the accepted contour of a reviewed case as NIfTI, NRRD, DICOM SEG or RTSTRUCT.

The accepted contour is recomputed from the case's source (its study record) — the same material
the review showed.  For a non-DICOM source (the demo phantom), SEG and RTSTRUCT need a CT series to
reference: the CT is first written as a DICOM series and the download is a zip of both.
Every prepared export is recorded in the audit log (``contour.export``).
"""

import io
import tempfile
import zipfile
from pathlib import Path

import streamlit as st

from lungseg.errors import LungsegError
from lungseg.study_material import accepted_review
from lungseg_app import auth, study_ui

FORMATS = {"NIfTI": "nifti", "NRRD": "nrrd", "DICOM SEG": "seg", "RTSTRUCT": "rtstruct"}

st.set_page_config(page_title="Export", layout="wide")
st.title("Export an accepted contour")
admin = auth.require_admin()
store = study_ui.get_store()
study = study_ui.pick_study(store, key="export_study")

reviews = store.reviews_table(study.id)  # rater and admin verdicts, newest first
latest = {cid: accepted_review(reviews, cid) for cid in dict.fromkeys(r["case_id"] for r in reviews)}
ready = {c: r for c, r in latest.items() if r["accepted_source"] in ("automatic", "manual")}
if not ready:
    st.info("No case has an accepted contour yet: record a verdict on the Review page first.")
    st.stop()
case_id = st.selectbox("Reviewed case", list(ready), key="export_case")
rev = ready[case_id]
source = rev["accepted_source"]
st.caption(f"Accepted: the {source} contour (latest verdict, by {rev['rater_name']} at {rev['reviewed_at']}).")
label = st.radio("Format", list(FORMATS), horizontal=True, key="export_fmt")
fmt = FORMATS[label]
state_key = (study.id, case_id, source, fmt, rev["reviewed_at"])


def prepare() -> tuple[bytes, str]:
    from lungseg.export import export_mask, with_dicom_series

    mat = study_ui.material(store, study.id, case_id)
    loaded, mask = mat.loaded, mat.mask(source)
    name = f"GTV-{'auto' if source == 'automatic' else 'manual'}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        extra = None
        if fmt in ("seg", "rtstruct") and loaded.dicom is None:
            extra = tmp / "ct"
            loaded = with_dicom_series(loaded, extra)
        path = export_mask(loaded, mask, fmt, tmp / "out", name=name, source=source)
        stem = f"{case_id}-{name}"
        if extra is None:
            suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
            return path.read_bytes(), f"{stem}{suffix}"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(path, f"{stem}.{fmt}.dcm")
            for f in sorted(extra.rglob("*")):
                if f.is_file():
                    z.write(f, f"ct/{f.relative_to(extra)}")
        return buf.getvalue(), f"{stem}-{fmt}-with-ct.zip"


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
