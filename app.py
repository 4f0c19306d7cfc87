"""lungseg home: open a chest CT (offline demo, data folder, upload or PACS), see its summary, go to the viewer."""

from pathlib import Path

import streamlit as st

from lungseg.case import CaseSource, ManualSource, contour_file_kind
from lungseg.errors import LungsegError
from lungseg_app import cases, gate, pacs_ui, state

st.set_page_config(page_title="lungseg", page_icon=None, layout="wide")
st.title("lungseg — lung tumour segmentation")
user = gate.require_user()
department = cases.department_mode()

predictor, model_note = state.predictor_and_note()

# the offline demo opens automatically the first time (not in department mode: nothing opens unasked)
if state.current() is None and not st.session_state.get("demo_tried") and not department:
    st.session_state["demo_tried"] = True
    state.open_source(CaseSource.demo())

tabs = (["Data folder", "Upload"] if department else ["Demo", "Data folder", "Upload"]) + ["PACS"]
panes = dict(zip(tabs, st.tabs(tabs, key="source_tab", on_change="rerun")))

if "Demo" in panes:
    with panes["Demo"]:
        st.write("A synthetic chest CT with one tumour; its true tumour is shown as the manual contour.")
        if st.button("Open the demo case", key="open_demo"):
            state.open_source(CaseSource.demo())

with panes["Data folder"]:
    root = cases.data_root()
    entries = cases.list_data_folder(root)
    st.caption(f"Data folder: `{root.name if department else root}`" + ("" if department else
               " (set `LUNGSEG_DATA` to change it)"))
    if entries:
        choice = st.selectbox("Case", [p.name for p in entries], key="folder_case")
        if st.button("Open selected case", key="open_folder"):
            try:
                path = cases.inside_data_folder(root / choice, root)
                state.open_source(CaseSource(str(path), manual=ManualSource("rtstruct", None, None)), choice)
            except LungsegError as exc:
                st.error(str(exc))
    else:
        st.info("No cases found in the data folder (zips, DICOM folders, .nii.gz, .nrrd, .mha).")
    if not department:
        path_text = st.text_input("…or a path on this computer", key="path_text", placeholder="/path/to/ct.zip")
        if st.button("Open path", key="open_path") and path_text.strip():
            p = Path(path_text.strip()).expanduser()
            if not p.exists():
                st.error(f"{p}: no such file or folder")
            else:
                state.open_source(CaseSource(str(p), manual=ManualSource("rtstruct", None, None)), p.name)

with panes["Upload"]:
    up = st.file_uploader("CT: a DICOM zip, NIfTI, NRRD or MHA", type=["zip", "nii", "gz", "nrrd", "mha"], key="up_ct")
    up_c = st.file_uploader("Manual contour (optional): RTSTRUCT, DICOM SEG or label image",
                            type=["dcm", "nii", "gz", "nrrd", "mha"], key="up_contour")
    try:
        ct_path = cases.save_upload(up.name, up.getvalue()) if up is not None else None
        contour_path = cases.save_upload(up_c.name, up_c.getvalue()) if up_c is not None else None
    except LungsegError as exc:
        st.error(str(exc))
        ct_path = contour_path = None
    manual = ManualSource("rtstruct", None, None)
    if contour_path is not None:
        names = cases.rtstruct_roi_names(contour_path)
        if names is not None:
            gtvs = [n for n in names if n.upper().startswith("GTV")]
            pick = st.selectbox("ROI", names, index=names.index(gtvs[0]) if gtvs else 0, key="up_roi")
            manual = ManualSource("rtstruct", str(contour_path), pick)
        else:
            manual = ManualSource(contour_file_kind(str(contour_path)), str(contour_path))
    if st.button("Open upload", key="open_upload", disabled=ct_path is None):
        state.open_source(CaseSource(str(ct_path), manual=manual), ct_path.name)

with panes["PACS"]:
    pacs_ui.show_source(state.open_source)

case = state.current()
if model_note:
    st.info(model_note)
if case is None:
    st.stop()

st.subheader(f"Case: {case.label}")
left, right = st.columns([3, 2])
summary = case.summary()
with left:
    st.table({"": list(summary.keys()), "value": list(summary.values())})
with right:
    names = case.ct.roi_names()
    src = case.source
    if names and not src.is_demo and (src.manual is None or src.manual.path is None):
        current = src.manual.roi if src.manual is not None else None
        options = ["(none)"] + names
        pick = st.selectbox("Manual contour from the structure set", options,
                            index=options.index(current) if current in names else 0, key=f"roi_{case.key}")
        wanted = None if pick == "(none)" else pick
        if wanted != current:
            manual = ManualSource("rtstruct", None, wanted) if wanted else None
            if state.open_source(CaseSource(src.ct, src.automatic, manual, src.series_uid, src.label), case.label):
                st.rerun()
    elif case.manual is not None:
        st.write(f"Manual contour: **{case.manual.name}**")
    for note in case.notes:
        st.caption(note)
    rows = case.lesions
    if rows:
        st.write(f"{len(rows)} lesion(s) from the automatic contour; largest {rows[0]['volume_ml']:.1f} ml, "
                 f"{rows[0]['longest_axial_diameter_mm']:.0f} mm")
    st.page_link("pages/1_Viewer.py", label="Open the viewer →")
