"""Study setup (admin): create a study from cases with both contours, invite and revoke raters, progress.

Cases are typed case records (:mod:`lungseg.study.cases`): the demo phantom (manual contour: its
true tumour) and the data folder's DICOM zips (manual contour: RTSTRUCT ROI GTV-1).  The automatic
contour is the admin's explicit choice: the tumour model (the default whenever it is installed) or
the stand-in (demo/test only, labelled as such in the case list and the report).
"""

import streamlit as st

from lungseg.case import AutomaticSource, CaseSource, ManualSource
from lungseg.errors import LungsegError
from lungseg.study import SPECIALTIES, DesignParams, StudyError
from lungseg.study.cases import automatic_label, automatic_summary, contouring_case, study_case
from lungseg.study.contouring import ContouringParams
from lungseg.study.report import stand_in_note
from lungseg_app import auth, state, study_ui

st.set_page_config(page_title="Study setup", layout="wide")
st.title("Study setup")
admin = auth.require_admin()
store = study_ui.get_store()

version = study_ui.model_version_or_none()
AUTOMATIC = {}
if version is not None:
    AUTOMATIC[f"Tumour model ({version})"] = "model"
AUTOMATIC["Stand-in: the manual contour dilated and shifted (demo/test only, not a model)"] = "stand-in"

with st.expander("Create a study", expanded=not store.studies()):
    if version is None:
        st.warning("No tumour model is installed: the only automatic contour available is the **stand-in** "
                   "(the manual contour dilated and shifted). Use such a study only to try the workflow.")
    candidates = {"demo-phantom": "demo"}  # case id → CT
    for p in study_ui.data_folder_cases():
        if p.suffix.lower() == ".zip":
            candidates[p.name[:-4]] = str(p.resolve())
    with st.form("create_study"):
        name = st.text_input("Study name", key="new_name")
        chosen = st.multiselect("Cases (manual contour: phantom truth / RTSTRUCT GTV-1)", list(candidates),
                                default=["demo-phantom"], key="new_cases")
        automatic = st.radio("Automatic contour", list(AUTOMATIC), index=0, key="new_automatic")
        kind = st.radio("Kind of study", ["preference: a blinded choice between two contours",
                                          "contouring: readers contour each case from scratch and from the draft"],
                        key="new_kind").split(":")[0]
        c1, c2, c3 = st.columns(3)
        per_case = c1.number_input("Slices per case (preference)", 1, 50, 5, key="new_slices")
        repeats = c2.number_input("Repeated items / cases contoured twice", 0, 50, 0, key="new_repeats")
        seed = c3.number_input("Random seed", 0, 2**31 - 1, 0, key="new_seed")
        turing = st.checkbox("Also ask which contour a computer drew (Turing question; preference)", key="new_turing")
        g1, g2 = st.columns(2)
        gap_sessions = g1.number_input("Contouring: sessions between two readings of a case", 0, 10, 1,
                                       key="new_gap_sessions")
        gap_days = g2.number_input("Contouring: days between two readings of a case", 0.0, 365.0, 0.0,
                                   key="new_gap_days")
        create = st.form_submit_button("Create study")
    if create:
        try:
            if not chosen:
                raise StudyError("choose at least one case")
            auto = AutomaticSource(AUTOMATIC[automatic])
            specs = []
            with st.status("Preparing cases…") as box:
                for cid in chosen:
                    box.update(label=f"Preparing {cid}…")
                    try:
                        ct = candidates[cid]
                        source = (CaseSource.demo(auto) if ct == "demo"
                                  else CaseSource(ct, auto, ManualSource("rtstruct", None, "GTV-1")))
                        if kind == "contouring":  # the grid, the draft and the model's own time on the case
                            specs.append(contouring_case(cid, source, cache=state.result_cache()))
                        else:
                            specs.append(study_case(cid, source, cache=state.result_cache())[0])
                    except LungsegError as exc:
                        raise StudyError(f"{cid}: {exc}") from None
                box.update(label="Cases ready", state="complete")
            if kind == "contouring":
                study = store.create_contouring_study(
                    name, specs, ContouringParams(repeats=int(repeats), min_gap_sessions=int(gap_sessions),
                                                  min_gap_days=float(gap_days), seed=int(seed)), actor=admin)
            else:
                params = DesignParams(slices_per_case=int(per_case), repeats=int(repeats), turing=bool(turing),
                                      seed=int(seed))
                study = store.create_study(name, specs, params, actor=admin)
            st.session_state["study_name"] = study.name
            st.success(f"Created study {study.name!r} with {len(specs)} case(s).")
        except (StudyError, LungsegError) as exc:
            st.error(str(exc))

if not store.studies():
    st.stop()
study = study_ui.pick_study(store, key="setup_study")
case_rows = store.cases(study.id)
st.caption(f"{study.kind.capitalize()} study; {len(case_rows)} case(s)"
           + (f"; Turing question: {'yes' if study.turing else 'no'}" if study.kind == "preference" else ""))
summary = automatic_summary(case_rows)
if summary["stand_in"]:
    st.warning(stand_in_note(summary, len(case_rows)))
st.dataframe([{"case": r["case_id"], "slices": len(r["metadata"].get("slices", [])),
               "automatic contour": automatic_label(r["metadata"]),
               "manual contour": r["metadata"].get("manual_name") or r["metadata"].get("roi") or "",
               "tumour volume (ml)": r["tumour_volume_ml"]} for r in case_rows], hide_index=True)

st.subheader("Invite a rater")
with st.form("invite"):
    c1, c2, c3 = st.columns([3, 2, 1])
    rname = c1.text_input("Display name", key="inv_name")
    spec = c2.selectbox("Specialty", SPECIALTIES, key="inv_spec")
    days = c3.number_input("Valid (days)", 1, 365, 30, key="inv_days")
    invite = st.form_submit_button("Invite")
if invite:
    try:
        inv = store.invite_rater(study.id, rname, spec, actor=admin, expires_in_days=float(days))
        base = ""
        try:
            base = str(st.context.url or "").split("?")[0].rsplit("/", 1)[0]
        except Exception:  # noqa: BLE001 - older Streamlit: relative link
            base = ""
        st.success(f"Invited {inv.display_name}. Copy the personal link now: it is shown only once.")
        st.code(inv.link(f"{base}/{'Contour' if study.kind == 'contouring' else 'Rate'}"), language=None)
    except StudyError as exc:
        st.error(str(exc))

st.subheader("Raters")
raters = store.raters(study.id)
if raters:
    st.dataframe([{"id": r.id, "name": r.display_name, "specialty": r.specialty, "link id": r.token_id,
                   "revoked": r.revoked, "expires": r.expires_at or "", "done": f"{r.done} of {r.total}"}
                  for r in raters], hide_index=True)
    active = {f"{r.display_name} (#{r.id})": r.id for r in raters if not r.revoked}
    if active:
        c1, c2 = st.columns([3, 1])
        who = c1.selectbox("Revoke the link of", list(active), key="revoke_who")
        if c2.button("Revoke", key="revoke_btn"):
            store.revoke_rater(active[who], actor=admin)
            st.rerun()
else:
    st.caption("No raters yet.")
if study.kind == "contouring":
    st.caption(f"Readings submitted so far: {sum(r.done for r in raters)} of {sum(r.total for r in raters)}.")
else:
    p = store.study_progress(study.id)
    st.caption(f"Votes so far: {p.done} of {p.total} assigned items.")
