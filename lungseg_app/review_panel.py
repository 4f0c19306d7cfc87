"""Review and export for any opened case.  :func:`show_structures` (the viewer): what was decided on each
structure in the viewer's own table, the one export path (:func:`lungseg.structures.export_download`) and the
editing effort.  :func:`show` (the study's Review page): the automatic contour (lesion by lesion) and the
manual contour each accepted or rejected with an optional comment; the decision is stored with who and
when, shown again when the case is reopened, and "Export accepted" writes it onto the source CT.

Used by the viewer (any case) and by the study's Review page (a study case, as a signed-in admin).
"""

from __future__ import annotations

import streamlit as st

from lungseg import review
from lungseg.errors import LungsegError

from . import gate, pacs_ui

FORMATS = {"DICOM SEG": ("seg", ".dcm"), "RTSTRUCT": ("rtstruct", ".dcm"), "NIfTI": ("nifti", ".nii.gz"),
           "NRRD": ("nrrd", ".nrrd")}


def _store():
    from .study_ui import get_store

    return get_store()


def _lesion_table(case, latest=None) -> list[dict]:
    """The automatic lesions, then those added by click (accepted by being added)."""
    rows = [{"lesion": str(r["lesion"]), "how": "automatic", "side": r["side"], "volume (ml)": r["volume_ml"],
             "longest axial diameter (mm)": r["longest_axial_diameter_mm"],
             "slices": f"{r['first_slice'] + 1}–{r['last_slice'] + 1}"} for r in case.lesions]
    for r in review.added_lesion_rows(case, latest):
        rows.append({"lesion": r["lesion"], "how": f"added by click ({r['added_by']}, {r['added_at'][:16]})",
                     "side": r["side"], "volume (ml)": r["volume_ml"],
                     "longest axial diameter (mm)": r["longest_axial_diameter_mm"],
                     "slices": f"{r['first_slice'] + 1}–{r['last_slice'] + 1}"})
    return rows


def show(case, user=None, *, study=None, case_id: str | None = None, key: str = "review") -> None:
    """The review panel for ``case``; ``user`` defaults to the app's reviewer (signed-in or local)."""
    user = user if user is not None else gate.require_user()
    store = _store()
    k_ = f"{key}_{case.key}_{case.manual.name if case.manual else ''}"
    st.subheader("Review")
    latest = review.latest(store, case)
    if latest is not None:
        parts = []
        for d in latest.decisions:
            what = "automatic" + (f" lesion(s) {', '.join(map(str, d.lesions))}" if d.lesions else "") \
                if d.contour == "automatic" else f"manual ({d.name})"
            parts.append(f"{what}: **{'accepted' if d.accepted else 'rejected'}**")
        if latest.added:
            parts.append(f"added to the automatic contour by click: **{', '.join(a.label for a in latest.added)}**")
        st.info(f"Latest decision by **{latest.reviewer}** at {latest.decided_at}: " + "; ".join(parts)
                + (f" — “{latest.comment}”" if latest.comment else ""), icon=None)

    prev_auto = latest.decision("automatic") if latest else None
    prev_man = latest.decision("manual") if latest else None
    with st.form(f"{k_}_form"):
        accept_auto = accept_man = False
        auto_chosen = manual_chosen = False
        lesions: list[int] | None = None
        c1, c2 = st.columns(2)
        with c1:
            rows = _lesion_table(case, latest)
            if rows:
                st.dataframe(rows, hide_index=True, width="stretch")
            if case.automatic is not None:
                numbers = [r["lesion"] for r in case.lesions]
                before = list(prev_auto.lesions) if prev_auto and prev_auto.accepted and prev_auto.lesions else \
                    (numbers if prev_auto and prev_auto.accepted else [])
                picked = st.multiselect("Accepted automatic lesions", numbers, default=[n for n in before if n in numbers],
                                        format_func=lambda n: f"lesion {n}", key=f"{k_}_lesions")
                reject_auto = st.checkbox("Reject the automatic contour", value=bool(prev_auto and not prev_auto.accepted),
                                          key=f"{k_}_reject_auto")
                accept_auto = bool(picked)
                auto_chosen = accept_auto or reject_auto
                lesions = None if sorted(picked) == numbers else sorted(picked)
            else:
                st.caption("No automatic contour.")
        with c2:
            if case.manual is not None:
                # a review starts with no decision: nothing is preselected
                choice = st.radio("Manual contour", ["accept", "reject"], horizontal=True,
                                  index=None if prev_man is None else 0 if prev_man.accepted else 1, key=f"{k_}_manual")
                accept_man = choice == "accept"
                manual_chosen = choice is not None
            else:
                st.caption("No manual contour.")
        comment = st.text_input("Comment (optional)", key=f"{k_}_comment")
        save = st.form_submit_button("Save decision")
    if save and not (auto_chosen or manual_chosen):  # an untouched form records nothing
        st.error("Nothing saved: nothing was chosen. Pick the accepted automatic lesions, tick “Reject the "
                 "automatic contour”, or accept or reject the manual contour.")
    elif save:
        accept = [c for c, ok in (("automatic", accept_auto), ("manual", accept_man)) if ok]
        try:
            saved = review.record(store, case, user, accept, lesions if accept_auto else None, comment=comment,
                                  study=study, case_id=case_id)
        except LungsegError as exc:
            st.error(str(exc))
        else:
            st.success(f"Saved: decision by {saved.reviewer} at {saved.decided_at}.")
            st.rerun()
    if latest is not None and latest.added:
        _remove_added(case, user, latest, k_)

    if latest is None:
        return
    st.markdown("**Export accepted**")
    from lungseg import structures

    accepted = structures.accepted_from_review(case, latest)  # the one export path: each under its name
    if not accepted:
        st.caption("The latest decision accepts nothing: there is nothing to export.")
        return
    c1, _ = st.columns([2, 3])
    fmt_name = c1.selectbox("Format", list(FORMATS), key=f"{k_}_fmt")
    fmt = FORMATS[fmt_name][0]
    export_key = f"{k_}_export_{latest.id}_{fmt_name}"  # a new decision or format needs a new file
    if c1.button("Prepare export", key=f"{k_}_prepare"):
        try:
            st.session_state[export_key] = structures.export_download(case, accepted, fmt,
                                                                      stem=f"{case.label}-accepted-{fmt}")
        except LungsegError as exc:
            st.error(str(exc))
    ready = st.session_state.get(export_key)
    if ready:
        data, filename, mime = ready
        st.download_button(f"Download {filename}", data, file_name=filename, mime=mime, key=f"{k_}_download",
                           on_click="ignore")
    pacs_ui.send_button(case, accepted, fmt, None, key=k_)


def _remove_added(case, user, latest, k_: str) -> None:
    c1, c2 = st.columns([2, 3])
    labels = {a.label: a.number for a in latest.added}
    pick = c1.selectbox("Lesion added by click", list(labels), key=f"{k_}_added_pick")
    c2.write("")
    if c2.button("Remove added lesion", key=f"{k_}_added_remove"):
        try:
            review.remove_added_lesion(_store(), case, user, labels[pick])
        except LungsegError as exc:
            st.error(str(exc))
        else:
            st.rerun()  # the latest decision above now says what is left


EXPORT_FORMATS = {"DICOM SEG": "seg", "RTSTRUCT": "rtstruct", "NIfTI": "nifti", "NRRD": "nrrd"}


def show_structures(case, user) -> None:
    """Below the viewer: every structure with its decision (made in the viewer's table; nothing is decided
    here), the accepted ones exported under their names with their provenance, and the editing effort."""
    from lungseg import structures

    store = _store()
    st.subheader("Review")
    views = structures.case_structures(store, case)
    rows = [{"structure": v.name, "type": v.kind, "from": v.source, "provenance": v.provenance,
             "version": v.version, "decision": v.decision or "—"} for v in views]
    colours = {v.name: "#%02x%02x%02x" % tuple(v.colour) for v in views}
    st.dataframe(rows, hide_index=True, width="content")
    st.caption("Accept, reject or edit each structure (and each automatic lesion) in the viewer's own list. "
               "Colours: " + " · ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in colours.items()),
               unsafe_allow_html=True)
    try:
        accepted = structures.accepted_structures(store, case)
    except LungsegError as exc:
        st.error(str(exc))
        accepted = {}
    st.markdown("**Export accepted**")
    if not accepted:
        st.caption("Nothing is accepted yet: there is nothing to export.")
    else:
        st.caption("Accepted: " + ", ".join(f"{a.name} ({a.provenance})" for a in accepted.values()))
        c1, c2 = st.columns([2, 3])
        fmt_name = c1.selectbox("Format", list(EXPORT_FORMATS), key="structures_fmt")
        fmt = EXPORT_FORMATS[fmt_name]
        names = None
        if fmt in ("nifti", "nrrd") and len(accepted) > 1:
            names = c2.multiselect("Structures (one label value each)", list(accepted), default=list(accepted),
                                   key="structures_names") or None
        signature = (tuple(sorted((a.name, a.version, a.provenance) for a in accepted.values())), fmt,
                     tuple(names or ()))
        if c1.button("Prepare export", key="structures_prepare"):
            try:
                st.session_state["structures_export"] = (signature, *structures.export_download(case, accepted, fmt,
                                                                                                 names=names))
            except LungsegError as exc:
                st.error(str(exc))
        ready = st.session_state.get("structures_export")
        if ready and ready[0] == signature:
            _, data, filename, mime = ready
            st.download_button(f"Download {filename}", data, file_name=filename, mime=mime,
                               key="structures_download", on_click="ignore")
        pacs_ui.send_button(case, accepted, fmt, None, key="structures")
    st.markdown("**Editing effort**")
    efforts = structures.case_efforts(store, case)
    if efforts:
        st.dataframe([e.as_row() for e in efforts], hide_index=True, width="content")
        st.download_button("Download effort (CSV)", structures.effort_csv(efforts),
                           file_name=f"{case.label}-editing-effort.csv", mime="text/csv", key="effort_csv",
                           on_click="ignore")
    else:
        st.caption("No activity recorded on this case yet.")
