"""The report of a contouring study: time with and without the model, and how much contours vary.

Pure functions of three tables, so readings made in the app and readings imported from elsewhere give the
same report (:func:`build_contouring_report`; :func:`contouring_report` reads them from a store):

* readings: ``reader, case_id, arm`` (``scratch``/``assisted``), ``reading`` (1, or 2 for a repeat),
  ``active_s`` (None when only a contour is known) and ``mask`` (a :class:`~lungseg.maskcodec.PackedMask`,
  None for an empty contour) with ``has_contour`` (False when only a time is known);
* model times: ``case_id, seconds`` (the automatic model's own time: the ``model`` arm);
* cases: ``case_id, spacing_zyx`` and ``automatic`` (the model's contour, packed, or None).

Conventions (also in the report's ``notes``):

* Time figures use first readings only; repeats serve intra-observer agreement only.
  Mean ± SD (sample SD, n − 1), median, quartiles by linear interpolation, IQR = Q3 − Q1.
* Time saved per reader-case pair = scratch seconds − assisted seconds (positive: the model saved time).
* Mann–Whitney U (two-sided, scipy's default method) between each reader's times in an arm and the model's
  times; Wilcoxon signed-rank (two-sided, scipy's default) between the arms over reader-case pairs, per
  reader and pooled.  Bonferroni: each p times the number of tests in its family (all reader × arm
  Mann–Whitney tests; all per-reader Wilcoxon tests), capped at 1.
* Complete-case analysis: only cases with a first-reading time from every reader in every arm the study has.
* Agreement (first readings): Dice, 95th-percentile Hausdorff distance (mm) and surface Dice at the
  tolerance (2 mm) of :mod:`lungseg.metrics`, between every pair of readers per case and arm
  (inter-observer), between a reader's reading and its repeat (intra-observer), and between the model's
  contour and each reader's (model-vs-reader).  HD95 is undefined (None) when exactly one contour is empty.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lungseg import metrics
from lungseg.maskcodec import PackedMask, unpack_box
from lungseg.study.contouring import ARMS, MODEL_ARM
from lungseg.study.design import StudyError

TIME_ARMS = (*ARMS, MODEL_ARM)
AGREEMENT_METRICS = ("dice", "hd95_mm", "surface_dice")


@dataclass(frozen=True)
class ContouringReportOptions:
    tolerance_mm: float = 2.0  # surface Dice tolerance


# ----------------------------------------------------------------------------- statistics


def time_summary(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, SD (n − 1), median, Q1, Q3, IQR, min, max (None where undefined)."""
    arr = np.asarray([v for v in values if v is not None], float)
    if arr.size == 0:
        return {"n": 0, **{k: None for k in ("mean", "sd", "median", "q1", "q3", "iqr", "min", "max")}}
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": int(arr.size), "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(arr.min()), "max": float(arr.max())}


def bonferroni(p_values: Sequence[float | None]) -> list[float | None]:
    """Each p-value times the number of tests (those with a p-value), capped at 1."""
    m = sum(p is not None for p in p_values)
    return [None if p is None else min(1.0, p * m) for p in p_values]


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Mann–Whitney U of ``a`` against ``b`` (scipy); U and p None when a side is empty."""
    from scipy.stats import mannwhitneyu

    if not a or not b:
        return {"u": None, "p": None}
    result = mannwhitneyu(a, b, alternative="two-sided")
    return {"u": float(result.statistic), "p": float(result.pvalue)}


def signed_rank(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of the pairs ``a[i] − b[i]`` (scipy); None when undefined
    (no pair, or every difference zero)."""
    from scipy.stats import wilcoxon

    n = len(a)
    if n == 0 or all(x == y for x, y in zip(a, b)):
        return {"n": n, "statistic": None, "p": None}
    result = wilcoxon(a, b, alternative="two-sided")
    return {"n": n, "statistic": float(result.statistic), "p": float(result.pvalue)}


def packed_agreement(a: PackedMask | None, b: PackedMask | None, spacing_zyx: Sequence[float],
                     tolerance_mm: float = 2.0) -> dict[str, float | None]:
    """Dice, HD95 (mm) and surface Dice of two packed masks on one grid (None = empty), computed on their
    union's bounding box plus one voxel (which changes none of them: see :mod:`lungseg.metrics`)."""
    if a is None and b is None:
        return {"dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0}
    if a is None or b is None:
        return {"dice": 0.0, "hd95_mm": None, "surface_dice": 0.0}
    if tuple(a.shape) != tuple(b.shape):
        raise StudyError(f"two contours of one case are on different grids {tuple(a.shape)} and {tuple(b.shape)}")
    lo = [max(min(a.box[i], b.box[i]) - 1, 0) for i in range(3)]
    hi = [min(max(a.box[i + 3], b.box[i + 3]) + 1, a.shape[i]) for i in range(3)]
    crops = []
    for m in (a, b):
        out = np.zeros([h - l for l, h in zip(lo, hi)], bool)
        out[tuple(slice(m.box[i] - lo[i], m.box[i + 3] - lo[i]) for i in range(3))] = unpack_box(m)
        crops.append(out)
    to_b, to_a = metrics.surface_distances(crops[0], crops[1], tuple(spacing_zyx))
    within = int((to_b <= tolerance_mm).sum()) + int((to_a <= tolerance_mm).sum())
    return {"dice": metrics.dice(crops[0], crops[1]),
            "hd95_mm": float(max(np.percentile(to_b, 95), np.percentile(to_a, 95))),
            "surface_dice": within / (to_b.size + to_a.size)}


def agreement_summary(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per metric: summary over the pairs where it is defined, and how many pairs it was undefined for."""
    out: dict[str, Any] = {"n_pairs": len(pairs)}
    for key in AGREEMENT_METRICS:
        values = [p[key] for p in pairs if p[key] is not None]
        out[key] = {**time_summary(values), "undefined": len(pairs) - len(values)}
    return out


# ----------------------------------------------------------------------------- input


@dataclass(frozen=True)
class _Reading:
    reader: str
    case: str
    arm: str
    reading: int
    seconds: float | None
    has_contour: bool
    mask: PackedMask | None


def _normalise(rows: Iterable[Mapping[str, Any]]) -> list[_Reading]:
    out = []
    for n, row in enumerate(rows, start=1):
        arm = str(row.get("arm", "")).strip().lower()
        if arm not in ARMS:
            raise StudyError(f"reading {n}: arm must be scratch or assisted, got {row.get('arm')!r}")
        seconds = row.get("active_s")
        if seconds is not None and (not math.isfinite(float(seconds)) or float(seconds) < 0):
            raise StudyError(f"reading {n}: seconds must be a finite number >= 0, got {seconds!r}")
        out.append(_Reading(str(row["reader"]), str(row["case_id"]), arm, int(row.get("reading") or 1),
                            None if seconds is None else float(seconds), bool(row.get("has_contour", True)),
                            row.get("mask")))
    return out


# ----------------------------------------------------------------------------- sections


def _times(first: Sequence[_Reading], model: Mapping[str, float], cases: Sequence[str],
           readers: Sequence[str]) -> dict[str, Any]:
    timed = [r for r in first if r.seconds is not None and r.case in cases]
    model = {c: s for c, s in model.items() if c in cases}
    per_reader = [{"reader": who, "arm": arm, **time_summary([r.seconds for r in timed if r.reader == who
                                                              and r.arm == arm])}
                  for who in readers for arm in ARMS if any(r.reader == who and r.arm == arm for r in timed)]
    per_arm = {arm: time_summary([r.seconds for r in timed if r.arm == arm]) for arm in ARMS}
    per_arm[MODEL_ARM] = time_summary(list(model.values()))
    by_key = {(r.reader, r.case, r.arm): r.seconds for r in timed}
    pairs = [{"reader": who, "case_id": c, "scratch_s": by_key[(who, c, "scratch")],
              "assisted_s": by_key[(who, c, "assisted")],
              "saved_s": by_key[(who, c, "scratch")] - by_key[(who, c, "assisted")]}
             for who in readers for c in cases if (who, c, "scratch") in by_key and (who, c, "assisted") in by_key]
    tests = [{"reader": row["reader"], "arm": row["arm"], "n_reader": row["n"], "n_model": len(model),
              **mann_whitney([r.seconds for r in timed if r.reader == row["reader"] and r.arm == row["arm"]],
                             list(model.values()))} for row in per_reader]
    for test, adjusted in zip(tests, bonferroni([t["p"] for t in tests])):
        test["p_bonferroni"] = adjusted
    per_reader_w = []
    for who in readers:
        mine = [p for p in pairs if p["reader"] == who]
        if mine:
            per_reader_w.append({"reader": who, **signed_rank([p["scratch_s"] for p in mine],
                                                               [p["assisted_s"] for p in mine])})
    for test, adjusted in zip(per_reader_w, bonferroni([t["p"] for t in per_reader_w])):
        test["p_bonferroni"] = adjusted
    return {
        "cases": list(cases),
        "n_cases": len(cases),
        "per_reader": per_reader,
        "per_arm": per_arm,
        "time_saved": {"pairs": pairs, "summary": time_summary([p["saved_s"] for p in pairs])},
        "mann_whitney_vs_model": tests,
        "wilcoxon_scratch_vs_assisted": {
            "pooled": signed_rank([p["scratch_s"] for p in pairs], [p["assisted_s"] for p in pairs]),
            "per_reader": per_reader_w,
        },
        "values": [{"reader": r.reader, "case_id": r.case, "arm": r.arm, "seconds": r.seconds} for r in timed]
                  + [{"reader": MODEL_ARM, "case_id": c, "arm": MODEL_ARM, "seconds": s} for c, s in model.items()],
    }


def _agreement(readings: Sequence[_Reading], cases: Mapping[str, Mapping[str, Any]], readers: Sequence[str],
               tolerance: float) -> dict[str, Any]:
    contoured = [r for r in readings if r.has_contour]
    first = {(r.reader, r.case, r.arm): r for r in contoured if r.reading == 1}
    repeat = [r for r in contoured if r.reading == 2]

    def spacing(case: str) -> Sequence[float]:
        info = cases.get(case)
        if not info or not info.get("spacing_zyx"):
            raise StudyError(f"case {case}: its voxel spacing is not known (import its contours with the CT)")
        return info["spacing_zyx"]

    inter = []
    for case in sorted({r.case for r in first.values()}):
        for arm in ARMS:
            who = [w for w in readers if (w, case, arm) in first]
            for a, b in itertools.combinations(who, 2):
                inter.append({"case_id": case, "arm": arm, "reader_a": a, "reader_b": b,
                              **packed_agreement(first[(a, case, arm)].mask, first[(b, case, arm)].mask,
                                                 spacing(case), tolerance)})
    intra = [{"reader": r.reader, "case_id": r.case, "arm": r.arm,
              **packed_agreement(first[(r.reader, r.case, r.arm)].mask, r.mask, spacing(r.case), tolerance)}
             for r in repeat if (r.reader, r.case, r.arm) in first]
    versus = []
    for (who, case, arm), r in sorted(first.items()):
        info = cases.get(case) or {}
        if info.get("has_automatic"):
            versus.append({"case_id": case, "arm": arm, "reader": who,
                           **packed_agreement(info.get("automatic"), r.mask, spacing(case), tolerance)})
    comparison = {}
    for arm in ARMS:
        mv = [p for p in versus if p["arm"] == arm]
        rr = [p for p in inter if p["arm"] == arm]
        if not mv and not rr:
            continue
        per_case = []
        for case in sorted({p["case_id"] for p in mv} | {p["case_id"] for p in rr}):
            m = [p["dice"] for p in mv if p["case_id"] == case]
            o = [p["dice"] for p in rr if p["case_id"] == case]
            per_case.append({"case_id": case, "model_vs_reader_mean_dice": float(np.mean(m)) if m else None,
                             "reader_vs_reader_mean_dice": float(np.mean(o)) if o else None})
        comparison[arm] = {
            **{f"model_vs_reader_median_{k}": agreement_summary(mv)[k]["median"] for k in AGREEMENT_METRICS},
            **{f"reader_vs_reader_median_{k}": agreement_summary(rr)[k]["median"] for k in AGREEMENT_METRICS},
            "per_case": per_case,
        }
    return {
        "tolerance_mm": tolerance,
        "inter_observer": {"pairs": inter,
                           "summary": {arm: agreement_summary([p for p in inter if p["arm"] == arm]) for arm in ARMS}},
        "intra_observer": {"pairs": intra, "summary": agreement_summary(intra)},
        "model_vs_reader": {"pairs": versus,
                            "summary": {arm: agreement_summary([p for p in versus if p["arm"] == arm]) for arm in ARMS}},
        "model_vs_reader_against_reader_vs_reader": comparison,
    }


# ----------------------------------------------------------------------------- the report


def build_contouring_report(
    readings: Iterable[Mapping[str, Any]],
    model_times: Iterable[Mapping[str, Any]] = (),
    cases: Iterable[Mapping[str, Any]] = (),
    *,
    options: ContouringReportOptions = ContouringReportOptions(),
    study: str | None = None,
) -> dict[str, Any]:
    """Every figure of a contouring study as a JSON-able dict (conventions: the module docstring)."""
    all_readings = _normalise(readings)
    model = {str(m["case_id"]): float(m["seconds"]) for m in model_times}
    if not all_readings and not model:
        raise StudyError("no readings to report on")
    case_info = {str(c["case_id"]): c for c in cases}
    readers = list(dict.fromkeys(r.reader for r in all_readings))
    first = [r for r in all_readings if r.reading == 1]
    every_case = list(dict.fromkeys([*case_info, *(r.case for r in all_readings), *model]))  # study order
    arms = [a for a in ARMS if any(r.arm == a and r.seconds is not None for r in first)]
    timed = {(r.reader, r.case, r.arm) for r in first if r.seconds is not None}
    complete = [c for c in every_case if arms and all((w, c, a) in timed for w in readers for a in arms)]
    return {
        "study": study,
        "kind": "contouring",
        "readers": readers,
        "n_readers": len(readers),
        "n_cases": len(every_case),
        "n_readings": len(all_readings),
        "n_repeat_readings": sum(r.reading == 2 for r in all_readings),
        "arms": arms,
        "times": {
            "all_readings": _times(first, model, every_case, readers),
            "complete_case": _times(first, model, complete, readers),
        },
        "agreement": _agreement(all_readings, case_info, readers, options.tolerance_mm),
        "notes": [
            "time figures use first readings only; repeats are used only for intra-observer agreement",
            "mean ± SD with the sample SD (n - 1); quartiles by linear interpolation; IQR = Q3 - Q1",
            "time saved per reader-case pair = scratch seconds - assisted seconds",
            "Mann-Whitney U (two-sided) of each reader's times per arm against the model's times; Wilcoxon "
            "signed-rank (two-sided) of scratch vs assisted over reader-case pairs; Bonferroni within each family",
            "complete-case analysis: only cases with a time from every reader in every arm",
            f"agreement on first readings: Dice, HD95 (mm), surface Dice at {options.tolerance_mm:g} mm; "
            "HD95 undefined when exactly one contour is empty",
        ],
    }


def contouring_report(store: Any, study: "str | int", *, options: ContouringReportOptions = ContouringReportOptions(),
                      pseudonymise: bool = False) -> dict[str, Any]:
    """:func:`build_contouring_report` on a contouring study in a :class:`~lungseg.study.store.StudyStore`.
    With ``pseudonymise=True`` readers appear as ``R001``... (as in a pseudonymised vote export)."""
    from lungseg.study.csvio import pseudonym_map

    st = store.study(study)
    readings = store.readings_table(st.id)
    names = pseudonym_map(r["reader"] for r in readings) if pseudonymise else {}
    cases = []
    for c in store.contouring_cases(st.id):
        digest = c["automatic_digest"]
        cases.append({"case_id": c["case_id"], "spacing_zyx": c["spacing_zyx"],
                      "has_automatic": digest is not None or bool(c["metadata"].get("automatic_empty")),
                      "automatic": store.packed_mask(digest) if digest else None})
    rows = []
    for r in readings:
        rows.append({**r, "reader": names.get(r["reader"], r["reader"]), "reader_name": None if names else r["reader_name"],
                     "has_contour": r["mask_voxels"] is not None,
                     "mask": store.packed_mask(r["mask_digest"]) if r["mask_digest"] else None})
    return build_contouring_report(rows, store.model_times(st.id), cases, options=options, study=st.name)


# ----------------------------------------------------------------------------- text, CSV, figures


def _s(x: float | None, unit: str = " s", digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def format_contouring_report(report: Mapping[str, Any]) -> str:
    """A plain-text summary of :func:`build_contouring_report`'s output (for the command line)."""
    lines = [f"Contouring study: {report.get('study') or '-'}",
             f"{report['n_readers']} readers, {report['n_cases']} cases, {report['n_readings']} readings "
             f"({report['n_repeat_readings']} repeats)"]
    for label, key in (("All readings", "all_readings"), ("Complete cases", "complete_case")):
        t = report["times"][key]
        lines.append(f"{label} ({t['n_cases']} cases):")
        for arm, s in t["per_arm"].items():
            if s["n"]:
                lines.append(f"  {arm:<9} n={s['n']:<3} {_s(s['mean'])} ± {_s(s['sd'])}  median {_s(s['median'])} "
                             f"(IQR {_s(s['q1'])}–{_s(s['q3'])})")
        for row in t["per_reader"]:
            lines.append(f"  reader {row['reader']:<12} {row['arm']:<9} n={row['n']:<3} {_s(row['mean'])} ± "
                         f"{_s(row['sd'])}  median {_s(row['median'])} (IQR {_s(row['iqr'])})")
        saved = t["time_saved"]["summary"]
        if saved["n"]:
            lines.append(f"  time saved by the model per reader-case pair: median {_s(saved['median'])}, mean "
                         f"{_s(saved['mean'])} ± {_s(saved['sd'])} over {saved['n']} pairs")
        for test in t["mann_whitney_vs_model"]:
            lines.append(f"  Mann-Whitney {test['reader']} {test['arm']} vs model: U = {_p(test['u'])}, "
                         f"p = {_p(test['p'])} (Bonferroni {_p(test['p_bonferroni'])})")
        w = t["wilcoxon_scratch_vs_assisted"]
        lines.append(f"  Wilcoxon scratch vs assisted, pooled: n = {w['pooled']['n']}, p = {_p(w['pooled']['p'])}")
        for test in w["per_reader"]:
            lines.append(f"    reader {test['reader']}: n = {test['n']}, p = {_p(test['p'])} "
                         f"(Bonferroni {_p(test['p_bonferroni'])})")
    a = report["agreement"]
    lines.append(f"Agreement (Dice, HD95, surface Dice at {a['tolerance_mm']:g} mm; medians):")

    def agree(label: str, s: Mapping[str, Any]) -> None:
        if s["n_pairs"]:
            lines.append(f"  {label:<34} {s['n_pairs']:>3} pairs  Dice {_s(s['dice']['median'], '', 3)}  "
                         f"HD95 {_s(s['hd95_mm']['median'], ' mm', 2)}  surface Dice "
                         f"{_s(s['surface_dice']['median'], '', 3)}")

    for arm in ARMS:
        agree(f"inter-observer, {arm}", a["inter_observer"]["summary"][arm])
    agree("intra-observer (repeats)", a["intra_observer"]["summary"])
    for arm in ARMS:
        agree(f"model vs reader, {arm}", a["model_vs_reader"]["summary"][arm])
    for arm, c in a["model_vs_reader_against_reader_vs_reader"].items():
        lines.append(f"  {arm}: model vs reader median Dice {_s(c['model_vs_reader_median_dice'], '', 3)} against "
                     f"reader vs reader {_s(c['reader_vs_reader_median_dice'], '', 3)}")
    return "\n".join(lines)


TIMES_COLUMNS = ("reader", "case", "seconds", "arm")


def times_csv_text(report: Mapping[str, Any]) -> str:
    """The report's first-reading times as CSV in the ``import-times`` layout (``reader,case,seconds,arm``;
    the model's rows with arm ``model``), so it imports again unchanged."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TIMES_COLUMNS)
    for v in report["times"]["all_readings"]["values"]:
        writer.writerow([v["reader"], v["case_id"], repr(float(v["seconds"])), v["arm"]])
    return out.getvalue()


AGREEMENT_COLUMNS = ("comparison", "case_id", "arm", "reader_a", "reader_b", *AGREEMENT_METRICS)


def agreement_csv_text(report: Mapping[str, Any]) -> str:
    """Every agreement pair of the report as CSV: ``comparison`` (inter-observer, intra-observer, model vs
    reader), the case, the arm, the two contours' readers (``model`` for the automatic contour; a reader and
    itself for a repeat) and Dice, HD95 (mm; empty when undefined) and surface Dice."""
    a = report["agreement"]
    rows = [("inter-observer", p["case_id"], p["arm"], p["reader_a"], p["reader_b"], p)
            for p in a["inter_observer"]["pairs"]]
    rows += [("intra-observer", p["case_id"], p["arm"], p["reader"], p["reader"], p) for p in a["intra_observer"]["pairs"]]
    rows += [("model vs reader", p["case_id"], p["arm"], MODEL_ARM, p["reader"], p) for p in a["model_vs_reader"]["pairs"]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AGREEMENT_COLUMNS)
    for *head, p in rows:
        writer.writerow([*head, *("" if p[k] is None else repr(float(p[k])) for k in AGREEMENT_METRICS)])
    return out.getvalue()


def contouring_figures(report: Mapping[str, Any]) -> list[Any]:
    """Plotly figures: time per reader and arm (box + every reading), time saved per reader, and agreement
    (Dice and HD95: inter-observer per arm, intra-observer, model vs reader per arm)."""
    import plotly.graph_objects as go  # imported here: only pages and notebooks draw figures

    figures = []
    values = report["times"]["all_readings"]["values"]
    fig = go.Figure()
    for arm in TIME_ARMS:
        mine = [v for v in values if v["arm"] == arm]
        if mine:
            fig.add_trace(go.Box(x=[v["reader"] for v in mine], y=[v["seconds"] for v in mine], name=arm,
                                 boxpoints="all", jitter=0.4, pointpos=0, hovertext=[v["case_id"] for v in mine]))
    fig.update_layout(title="Active time per case, by reader and arm (model: the automatic contour's own time)",
                      boxmode="group", yaxis={"title": "seconds", "rangemode": "tozero"}, xaxis={"title": "reader"})
    figures.append(fig)

    pairs = report["times"]["all_readings"]["time_saved"]["pairs"]
    fig = go.Figure(go.Box(x=[p["reader"] for p in pairs], y=[p["saved_s"] for p in pairs], boxpoints="all",
                           jitter=0.4, pointpos=0, hovertext=[p["case_id"] for p in pairs], name="time saved"))
    fig.add_hline(y=0, line_dash="dot", annotation_text="no time saved")
    fig.update_layout(title="Time saved by the model per case (scratch − assisted)",
                      yaxis={"title": "seconds saved"}, xaxis={"title": "reader"})
    figures.append(fig)

    a = report["agreement"]
    groups = [(f"inter-observer {arm}", [p for p in a["inter_observer"]["pairs"] if p["arm"] == arm]) for arm in ARMS]
    groups.append(("intra-observer", a["intra_observer"]["pairs"]))
    groups += [(f"model vs reader {arm}", [p for p in a["model_vs_reader"]["pairs"] if p["arm"] == arm])
               for arm in ARMS]
    for key, title, unit in (("dice", "Dice", None), ("hd95_mm", "95th-percentile Hausdorff distance", "mm"),
                             ("surface_dice", f"Surface Dice at {a['tolerance_mm']:g} mm", None)):
        fig = go.Figure()
        for label, rows in groups:
            ys = [p[key] for p in rows if p[key] is not None]
            if ys:
                fig.add_trace(go.Box(y=ys, name=label, boxpoints="all", jitter=0.4, pointpos=0))
        fig.update_layout(title=f"{title}: between readers, of repeats, and model vs readers", showlegend=False,
                          yaxis={"title": f"{title} ({unit})" if unit else title,
                                 **({} if unit else {"range": [0, 1.02]})})
        figures.append(fig)
    return figures


__all__ = ["ContouringReportOptions", "agreement_csv_text", "agreement_summary", "bonferroni", "build_contouring_report",
           "contouring_figures", "contouring_report", "format_contouring_report", "mann_whitney",
           "packed_agreement", "signed_rank", "time_summary", "times_csv_text"]

