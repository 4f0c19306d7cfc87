"""lungseg home: open a chest CT (offline demo, data folder or upload), see its summary, go to the viewer."""

import hashlib
from pathlib import Path

import streamlit as st

from lungseg_app import cases, state

st.set_page_config(page_title="lungseg", page_icon=None, layout="wide")
st.title("lungseg — lung tumour segmentation")

predictor, model_note = state.predictor_and_note()

# the offline demo opens automatically the first time
if state.current() is None and not st.session_state.get("demo_tried"):
    st.session_state["demo_tried"] = True
    state.open_case("demo")

# keyed tabs keep the chosen source across reruns (choosing a case reruns the page)
tab_demo, tab_folder, tab_upload = st.tabs(["Demo", "Data folder", "Upload"], key="source_tab", on_change="rerun")

with tab_demo:
    st.write("A synthetic chest CT with one tumour; its true tumour is shown as the manual contour.")
    if st.button("Open the demo case", key="open_demo"):
        state.open_case("demo")

with tab_folder:
    root = cases.data_root()
    entries = cases.list_data_folder(root)
    st.caption(f"Data folder: `{root}` (set `LUNGSEG_DATA` to change it)")
    if entries:
        choice = st.selectbox("Case", [p.name for p in entries], key="folder_case")
        if st.button("Open selected case", key="open_folder"):
            state.open_case("path", root / choice)
    else:
        st.info("No cases found in the data folder (zips, DICOM folders, .nii.gz, .nrrd, .mha).")
    path_text = st.text_input("…or a path on this computer", key="path_text", placeholder="/path/to/ct.zip")
    if st.button("Open path", key="open_path") and path_text.strip():
        state.open_case("path", Path(path_text.strip()).expanduser())

with tab_upload:
    up = st.file_uploader("CT: a DICOM zip, NIfTI, NRRD or MHA", type=["zip", "nii", "gz", "nrrd", "mha"], key="up_ct")
    up_c = st.file_uploader("Manual contour (optional): RTSTRUCT, DICOM SEG or label image",
                            type=["dcm", "nii", "gz", "nrrd", "mha"], key="up_contour")

    def _save(f) -> Path:
        data = f.getvalue()
        d = cases.app_cache_dir() / "uploads" / hashlib.sha256(data).hexdigest()[:24]
        d.mkdir(parents=True, exist_ok=True)
        p = d / Path(f.name).name
        if not p.exists():
            p.write_bytes(data)
        return p

    roi = None
    contour_path = _save(up_c) if up_c is not None else None
    if contour_path is not None:
        names = cases.rtstruct_roi_names(contour_path)
        if names:
            d = cases.default_roi(names)
            roi = st.selectbox("ROI", names, index=names.index(d) if d in names else 0, key="up_roi")
    if st.button("Open upload", key="open_upload", disabled=up is None):
        state.open_case("path", _save(up), contour=contour_path, roi=roi)

case = state.current()
if model_note:
    st.info(model_note)
if case is None:
    st.stop()

st.subheader(f"Case: {case.label}")
left, right = st.columns([3, 2])
with left:
    st.table({"": list(cases.summary(case).keys()), "value": list(cases.summary(case).values())})
with right:
    names = case.roi_names()
    if names:
        current = case.manual_name if case.manual_name in names else None
        options = ["(none)"] + names
        pick = st.selectbox("Manual contour from the structure set", options,
                            index=options.index(current) if current else 0, key=f"roi_{case.key}")
        if pick != "(none)" and pick != case.manual_name:
            try:
                cases.attach_rtstruct_roi(case, pick)
            except Exception as exc:  # noqa: BLE001
                st.error(str(exc) if isinstance(exc, cases.LungsegError) else f"{pick}: {cases.one_line(exc)}")
        elif pick == "(none)" and case.manual_name in names:
            case.manual_name = None
    elif case.manual_name:
        st.write(f"Manual contour: **{case.manual_name}**")
    for note in case.result.notes + case.loaded.warnings:
        st.caption(note)
    what, rows = case.lesions()
    if rows:
        st.write(f"{len(rows)} lesion(s) from the {what}; largest {rows[0]['volume_ml']:.1f} ml, "
                 f"{rows[0]['longest_axial_diameter_mm']:.0f} mm")
    st.page_link("pages/1_Viewer.py", label="Open the viewer →")
