"""Viewer: the case as a browser-side imaging component (image first), opened progressively."""

from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lungseg.case import CaseMemory, CaseSource, ManualSource, model_version
from lungseg.errors import LungsegError
from lungseg import structures
from lungseg_app import cases, click_lesion, editing, gate, review_panel, state
from lungseg_app.viewer import lesion_start_slice, opening, viewer_layers
from lungseg_app.viewer.component import viewer
from lungseg_app.viewer.publish import STATUS, component_args, folder_for

st.set_page_config(page_title="lungseg viewer", layout="wide", initial_sidebar_state="collapsed")
st.markdown("<style>.block-container{padding-top:2.6rem;padding-left:2rem;padding-right:2rem}</style>",
            unsafe_allow_html=True)
user = gate.require_user()
HEIGHT = 860
VIEWER_KEY = "lungseg_viewer"
ctx = get_script_run_ctx()
who = ctx.session_id if ctx else "local"
predictor, model_note = state.predictor_and_note()
_, click_note = state.lesion_predictor_and_note()  # loaded with the page, so the first click is warm


def start_job(source: CaseSource, label: str) -> bool:
    """Open ``source`` in the background (a case already in the server's memory shows at once)."""
    drop_job()
    if source.automatic.kind == "model" and predictor is None:
        st.error("No tumour model is available on this server, so no automatic contour can be made.")
        return False
    version = model_version(predictor) if source.automatic.kind == "model" else None
    try:
        hit = state.memory().get(CaseMemory.key_of(source, version))
    except OSError as exc:
        st.error(f"{label}: {cases.one_line(exc)}")
        return False
    if hit is not None:
        state.set_current(hit)
        return True
    st.session_state["viewer_job"] = opening.open_job(source, predictor, version, who, label, state.result_cache())
    st.session_state["viewer_job_version"] = version
    st.session_state["viewer_job_base"] = id(state.current())
    return True


@st.cache_data(ttl=30, show_spinner=False)
def folder_entries(root: str) -> list:
    """The data folder's cases (listing it walks every DICOM folder: not on every rerun)."""
    return cases.list_data_folder(Path(root))


def drop_job() -> None:
    job = st.session_state.pop("viewer_job", None)
    if job is not None:
        job.release(who)


# the job this session opened here, unless the Home page has opened another case since
job = st.session_state.get("viewer_job")
if job is not None:
    snap = job.snapshot()
    current = state.current()
    if snap.error:
        drop_job()
        if snap.error != "cancelled":
            st.error(snap.error)
        job = None
    elif snap.done and job.case is not None:
        if current is not job.case and st.session_state.get("viewer_job_base") != id(current):
            drop_job()  # Home opened another case after this one finished
        elif current is not job.case:
            state.memory().put(CaseMemory.key_of(job.source, st.session_state.get("viewer_job_version")), job.case)
            state.set_current(job.case)
        job = st.session_state.get("viewer_job")
        if job is not None and state.current() is job.case:
            drop_job()
            job = None
    elif st.session_state.get("viewer_job_base") != id(current):
        drop_job()  # Home opened another case while this one was opening
        job = None



def reopen_from_url() -> None:
    """After a reload (F5) the open case comes back from the URL (``?case=`` a case of the data folder), checked
    again like a pick from the folder (the page's sign-in gate has run above)."""
    wanted = st.query_params.get("case")
    if not wanted or st.session_state.get("viewer_url_tried") == wanted:
        return
    st.session_state["viewer_url_tried"] = wanted
    try:
        path = cases.inside_data_folder(cases.data_root() / wanted)
    except LungsegError as exc:
        st.error(f"The case in the address cannot be opened: {exc}")
        return
    if not path.exists():
        st.error(f"The case in the address, {wanted}, is not in the data folder.")
        return
    roi = st.query_params.get("roi") or None
    start_job(CaseSource(str(path), manual=ManualSource("rtstruct", None, roi)), wanted)


def case_in_url(case) -> None:
    """Name the open case in the URL when it is a case of the data folder (uploads and PACS cases are not)."""
    src = case.source
    try:
        rel = Path(src.ct).resolve().relative_to(cases.data_root().resolve()).as_posix()
    except (ValueError, OSError, TypeError):
        st.query_params.pop("case", None)
        return
    if st.query_params.get("case") != rel:
        st.query_params["case"] = rel
    roi = src.manual.roi if src.manual is not None else None
    if roi and st.query_params.get("roi") != roi:
        st.query_params["roi"] = roi
    st.session_state["viewer_url_tried"] = rel


if job is None and state.current() is None:
    reopen_from_url()
    job = st.session_state.get("viewer_job")
elif job is None:
    case_in_url(state.current())
polling = job is not None


# while a case opens the browser polls the job's status file; Python reruns when the browser says the
# job has finished (and every few seconds as a safety net), not on every stage
@st.fragment(run_every=5.0 if polling else None)
def show() -> None:
    job = st.session_state.get("viewer_job")
    vc = None
    if job is not None:
        snap = job.snapshot()
        if snap.done:
            st.rerun()  # hand over to the finished case (and stop polling)
        args = {"case": job.folder.token, "folder": job.folder.token, "status": STATUS, "label": job.label}
        progress = {"text": snap.message, "fraction": snap.fraction, "done": False}
    else:
        case = state.current()
        if case is None:
            # the component is loaded (and takes no room) before any case opens, in the place it has
            # once one does: opening a case then only hands it the case's files
            viewer({"case": "", "folder": ""}, height=0)
            st.title("Viewer")
            st.info("No case open: open one on the Home page or below.")
            st.page_link("app.py", label="← Home")
            return
        vc = viewer_layers(case)
        folder = folder_for(vc.key)
        value = st.session_state.get(VIEWER_KEY)
        # edits, decisions and a new click are applied before the component is drawn: their answer goes
        # out with this rerun
        if editing.handle(case, user, value, folder.token):
            st.rerun(scope="app")  # a decision: the review below shows it too
        click_lesion.segment_new_click(case, folder.token, value)
        start = st.session_state.setdefault("viewer_slices", {}).get(vc.key, lesion_start_slice(vc))
        views = structures.case_structures(click_lesion._store(), case)
        args = component_args(click_lesion.with_click_layers(vc, case), start, wait=True, folder=folder)
        args = editing.viewer_args(case, args, views, folder)
        progress = {"text": "", "fraction": 1.0, "done": True}
    value = viewer(args, progress=progress, height=HEIGHT, key=VIEWER_KEY)
    remember(value, args["case"], vc)
    click = st.session_state.get("viewer_click")
    if click and click["case"] == args["case"]:
        x, y, z = click["mm"]
        k, j, i = click["zyx"]
        st.caption(f"Clicked point: ({x:.1f}, {y:.1f}, {z:.1f}) mm LPS · voxel (x {i}, y {j}, slice {k + 1}) · HU {click['hu']}")
    if vc is None:
        return
    click_lesion.show_controls(case, user)
    added = st.session_state.pop("viewer_click_added", None)
    if added:
        st.success(added)
    editing.create_form(case, user, views)
    for note in vc.notes:
        st.caption(note)


def remember(value: dict | None, shown: str, vc) -> None:
    """Keep what the component returned: the settled slice, and a click for click-to-segment."""
    if not value or value.get("case") != shown:
        return
    if value.get("slice") is not None and vc is not None:
        st.session_state["viewer_slices"][vc.key] = int(value["slice"])
    click = value.get("click")
    if click and value.get("reason") == "click" and st.session_state.get("viewer_click_seq") != (shown, value["seq"]):
        st.session_state["viewer_click_seq"] = (shown, value["seq"])
        st.session_state["viewer_click_mm"] = tuple(float(v) for v in click["mm"])
        st.session_state["viewer_click"] = {"case": shown, **click}


show()
if st.session_state.get("viewer_job") is None and state.current() is not None:
    st.divider()
    review_panel.show_structures(state.current(), user)  # outside the fragment: decisions, export, effort

with st.expander("Open another case", expanded=state.current() is None and job is None):
    entries = folder_entries(str(cases.data_root()))
    left, right = st.columns([3, 1])
    if entries:
        pick = left.selectbox("Case from the data folder", [p.name for p in entries], key="viewer_pick")
        if right.button("Open this case", key="viewer_open"):
            try:
                path = cases.inside_data_folder(cases.data_root() / pick)
            except LungsegError as exc:
                st.error(str(exc))
            else:
                if start_job(CaseSource(str(path), manual=ManualSource("rtstruct", None, None)), pick):
                    st.rerun()
    else:
        left.caption(f"No cases in the data folder `{cases.data_root()}`.")
    if right.button("Open the demo case", key="viewer_open_demo"):
        if start_job(CaseSource.demo(), "the demo case"):
            st.rerun()
for note in (model_note, click_note):
    if note:
        st.caption(note)
