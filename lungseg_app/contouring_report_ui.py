"""The Report page's view of a contouring study: times, tests, agreement and figures (no computation here:
everything comes from :func:`lungseg.study.contouring_report.contouring_report`)."""

from __future__ import annotations

import json

import streamlit as st

from lungseg.study import StudyError
from lungseg.study.contouring_report import agreement_csv_text, contouring_figures, contouring_report, times_csv_text


def _s(x, unit=" s", digits=1):
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def show(store, study, admin, pseudonymise: bool = True) -> None:
    """Render the report of contouring study ``study`` (readers as R001, ... unless ``pseudonymise`` is off)."""
    try:
        rep = contouring_report(store, study.id, pseudonymise=pseudonymise)
    except StudyError as exc:
        st.info(f"No report yet: {exc}.")
        return
    c = st.columns(4)
    c[0].metric("Readers", rep["n_readers"])
    c[1].metric("Cases", rep["n_cases"])
    c[2].metric("Readings", rep["n_readings"])
    c[3].metric("Repeats", rep["n_repeat_readings"])
    for label, key in (("All readings", "all_readings"), ("Complete cases (every reader, every arm)", "complete_case")):
        t = rep["times"][key]
        st.subheader(f"Time: {label.lower()} ({t['n_cases']} cases)")
        st.dataframe([{"arm": arm, "n": s["n"], "mean ± SD": f"{_s(s['mean'])} ± {_s(s['sd'])}",
                       "median": _s(s["median"]), "IQR": f"{_s(s['q1'])}–{_s(s['q3'])}"}
                      for arm, s in t["per_arm"].items() if s["n"]], hide_index=True)
        st.dataframe([{"reader": r["reader"], "arm": r["arm"], "n": r["n"],
                       "mean ± SD": f"{_s(r['mean'])} ± {_s(r['sd'])}", "median": _s(r["median"]),
                       "IQR": _s(r["iqr"])} for r in t["per_reader"]], hide_index=True)
        saved = t["time_saved"]["summary"]
        if saved["n"]:
            st.markdown(f"**Time saved by the model** per reader-case pair: median {_s(saved['median'])}, "
                        f"mean {_s(saved['mean'])} ± {_s(saved['sd'])} over {saved['n']} pairs.")
        st.dataframe([{"reader": m["reader"], "arm": m["arm"], "Mann–Whitney U vs model": m["u"], "p": m["p"],
                       "p (Bonferroni)": m["p_bonferroni"]} for m in t["mann_whitney_vs_model"]], hide_index=True)
        w = t["wilcoxon_scratch_vs_assisted"]
        st.markdown(f"Wilcoxon signed-rank, scratch vs assisted: pooled n = {w['pooled']['n']}, "
                    f"p = {w['pooled']['p'] if w['pooled']['p'] is not None else 'n/a'}")
    a = rep["agreement"]
    st.subheader(f"Agreement (Dice, HD95, surface Dice at {a['tolerance_mm']:g} mm)")
    rows = []
    for label, s in ([(f"inter-observer, {arm}", a["inter_observer"]["summary"][arm]) for arm in ("scratch", "assisted")]
                     + [("intra-observer (repeats)", a["intra_observer"]["summary"])]
                     + [(f"model vs reader, {arm}", a["model_vs_reader"]["summary"][arm])
                        for arm in ("scratch", "assisted")]):
        if s["n_pairs"]:
            rows.append({"comparison": label, "pairs": s["n_pairs"], "median Dice": s["dice"]["median"],
                         "median HD95 (mm)": s["hd95_mm"]["median"], "median surface Dice": s["surface_dice"]["median"]})
    st.dataframe(rows, hide_index=True)
    st.subheader("Figures")
    for fig in contouring_figures(rep):
        st.plotly_chart(fig, config={"displaylogo": False})
    for note in rep["notes"]:
        st.caption(note)
    text = times_csv_text(rep)

    def _audit():
        store.audit(admin, "contouring.times_export", study=study.name, rows=text.count("\n") - 1)

    st.download_button("Download times CSV", text.encode(), file_name=f"times-{study.id}.csv", mime="text/csv",
                       key="times_csv", on_click=_audit)
    st.download_button("Download agreement pairs CSV", agreement_csv_text(rep).encode(),
                       file_name=f"agreement-{study.id}.csv", mime="text/csv", key="agreement_csv")
    st.download_button("Download the whole report (JSON)", json.dumps(rep, indent=2).encode(),
                       file_name=f"contouring-report-{study.id}.json", mime="application/json", key="report_json")
