"""Report (admin): the study's numbers and figures, and the votes as CSV."""

import streamlit as st

from lungseg.study import StudyError, report_figures, study_report, votes_csv_text
from lungseg_app import auth, study_ui

st.set_page_config(page_title="Study report", layout="wide")
st.title("Study report")
admin = auth.require_admin()
store = study_ui.get_store()
study = study_ui.pick_study(store, key="report_study")
pseudo = st.checkbox("Pseudonymise raters (R001, …)", value=True, key="report_pseudo")
if study.kind == "contouring":
    from lungseg_app import contouring_report_ui

    contouring_report_ui.show(store, study, admin, pseudonymise=pseudo)
    st.stop()

try:
    rep = study_report(store, study.id, pseudonymise=pseudo)
except StudyError as exc:
    st.info(f"No report yet: {exc}.")
    st.stop()


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f} %"


def ci(p):
    if not p or p.get("n", 0) == 0:
        return "n/a"
    return f"{pct(p['fraction'])} [{pct(p['ci_low'])}, {pct(p['ci_high'])}] (p = {p['p_value']:.3g}, n = {p['n']})"


auto = rep.get("automatic_contours") or {}
if auto.get("stand_in"):
    st.warning(rep["notes"][0])
if auto.get("kinds"):
    versions = f" (model {', '.join(auto['model_versions'])})" if auto.get("model_versions") else ""
    st.caption("Automatic contours: " + ", ".join(f"{k}: {n} case(s)" for k, n in auto["kinds"].items()) + versions)

head = rep["headline"]
st.subheader("Headline")
st.markdown(f"**Mean fraction choosing the automatic contour ({', '.join(head['groups'])}): "
            f"{pct(head['mean'])}** over {head['n_raters']} rater(s); median {pct(head['median'])}; "
            f"pooled {ci(head['pooled'])}")
c = st.columns(4)
c[0].metric("Raters", rep["n_raters"])
c[1].metric("Votes", rep["n_votes"])
c[2].metric("Items", rep["n_items"])
c[3].metric("Cases", rep["n_cases"])

r = rep["raters"]
st.markdown(f"Per-rater fraction: median {pct(r.get('median'))} (IQR {pct(r.get('q1'))}–{pct(r.get('q3'))}), "
            f"mean {pct(r.get('mean'))}. Pooled: {ci(rep['pooled'])}.")
st.markdown("**Per group**")
st.dataframe([{"group": g, "raters": s["n_raters"], "mean": pct(s.get("mean")), "median": pct(s.get("median")),
               "pooled (Wilson CI, binomial p)": ci(s["pooled"])} for g, s in rep["groups"].items()],
             hide_index=True)
st.markdown("**Per rater**")
st.dataframe([{k: v for k, v in row.items()} for row in rep["per_rater"]], hide_index=True)

side = rep["side"]
st.markdown(f"**Left bias**: chose the left panel {ci(side['chose_left'])}; "
            f"automatic contour on the left in {pct(side['automatic_on_left'])} of items.")
if rep["response_ms"]:
    t = rep["response_ms"]
    st.markdown(f"**Response time**: median {t['median'] / 1000:.1f} s "
                f"(IQR {t['q1'] / 1000:.1f}–{t['q3'] / 1000:.1f} s), mean {t['mean'] / 1000:.1f} s.")
fk = rep["fleiss_kappa"]
kappa = "n/a" if fk["kappa"] is None else f"{fk['kappa']:.3f}"
st.markdown(f"**Fleiss' kappa**: {kappa} "
            f"over {fk['n_items']} item(s) rated by two or more raters.")
intra = rep["intra_rater"]
if intra:
    ra = intra["rater_agreement"]
    st.markdown(f"**Intra-rater agreement**: {intra['n_agree']} of {intra['n_pairs']} repeated pairs agree "
                f"({pct(intra['agreement'])}); per rater median {pct(ra.get('median'))}.")
else:
    st.markdown("**Intra-rater agreement**: no repeated items rated yet.")
if rep["turing"]:
    tu = rep["turing"]
    st.markdown(f"**Turing question** (identified the computer's contour): {ci(tu['correct'])}; "
                + "; ".join(f"{g}: {ci(p)}" for g, p in tu["groups"].items()))
if rep["reviews"]:
    st.markdown("**Clinical review**")
    st.json(rep["reviews"], expanded=False)

st.subheader("Figures")
for fig in report_figures(rep):
    st.plotly_chart(fig, config={"displaylogo": False})

for note in rep["notes"]:
    st.caption(note)

st.subheader("Votes (CSV)")
csv = votes_csv_text(store.votes_table(study.id), pseudonymise=pseudo)


def _audit_csv():
    store.audit(admin, "votes.export", study=study.name, rows=csv.count("\n") - 1, pseudonymised=pseudo,
                target="download")


st.download_button("Download votes CSV", csv.encode(), file_name=f"votes-{study.id}.csv", mime="text/csv",
                   key="votes_csv", on_click=_audit_csv)
