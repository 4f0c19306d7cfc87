"""Statistics of a preference study, as pure functions of a table of votes.

The input is any iterable of mappings with the CSV/``StudyStore.votes_table`` columns
``rater_id, rater_group, item_id, case_id`` and either ``left_source`` + ``choice`` or
``chosen``; optional ``response_ms, repeat_of, turing, slice_index, slice_thickness_mm,
tumour_volume_ml, location``.  Imported votes and votes cast in the app therefore give the same
report.

Conventions (also listed in the report's ``notes``):

* A rater's score is the fraction of their items on which they chose the automatic contour.
  Repeated items (``repeat_of`` set) are left out of every preference figure and used only for
  intra-rater agreement.
* Quartiles use linear interpolation (NumPy's default); IQR = Q3 − Q1.
* Confidence intervals are Wilson score intervals and p-values exact two-sided binomial tests
  against 0.5, both on pooled votes, which treats votes as independent (they are clustered
  within raters; the spread of per-rater scores is given separately).
* The headline is the mean of per-rater scores over the headline groups (by default
  radiologists and radiation oncologists), as in the original study.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from lungseg.study.design import SPECIALTIES, StudyError

HEADLINE_GROUPS = ("Radiologist", "Radiation oncologist")


@dataclass(frozen=True)
class ReportOptions:
    headline_groups: tuple[str, ...] = HEADLINE_GROUPS
    confidence: float = 0.95


class _Vote(NamedTuple):
    rater: str
    group: str
    item: str
    case: str
    auto_left: bool
    chose_left: bool
    automatic: bool
    response_ms: float | None
    repeat_of: str | None
    turing_left: bool | None
    slice_index: int | None
    thickness: float | None
    volume: float | None
    location: str | None


# ----------------------------------------------------------------------------- statistics


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | tuple[None, None]:
    """The Wilson score interval for ``k`` successes in ``n`` trials."""
    if n <= 0:
        return (None, None)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_p(k: int, n: int, p: float = 0.5) -> float | None:
    """Exact two-sided binomial test of ``k`` in ``n`` against ``p`` (scipy's ``binomtest``)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest  # imported here: scipy is slow to import

    return float(binomtest(k, n, p).pvalue)


def proportion(k: int, n: int, confidence: float = 0.95) -> dict[str, Any]:
    """``k`` of ``n`` with its fraction, Wilson interval and binomial p-value against 0.5."""
    low, high = wilson_interval(k, n, confidence)
    return {
        "k": k,
        "n": n,
        "fraction": k / n if n else None,
        "ci_low": low,
        "ci_high": high,
        "p_value": binomial_p(k, n),
    }


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa for subjects × categories rating counts.

    Subjects may have different numbers of ratings: each subject's agreement
    ``P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1))`` is averaged over subjects with at least two
    ratings, and chance agreement uses the category shares over all their ratings.  ``None``
    when chance agreement is 1 (every rating in one category) or there is nothing to compare.
    """
    rows = [list(map(int, r)) for r in counts if sum(r) >= 2]
    if not rows:
        return None
    agreement = [(sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows]
    total = sum(sum(r) for r in rows)
    shares = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_bar = sum(agreement) / len(agreement)
    p_e = sum(s * s for s in shares)
    if math.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1 - p_e)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, median, Q1, Q3, IQR, min and max (``None`` for an empty sequence)."""
    if len(values) == 0:
        return {k: None for k in ("mean", "median", "q1", "q3", "iqr", "min", "max")} | {"n": 0}
    arr = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


# ----------------------------------------------------------------------------- input


def _flag(value: Any, allowed: Sequence[str], what: str, row: Mapping[str, Any]) -> str:
    text = str(value).strip().lower() if value is not None else ""
    if text not in allowed:
        raise StudyError(
            f"vote of rater {row.get('rater_id')} on item {row.get('item_id')}: "
            f"{what} must be one of {', '.join(allowed)}, got {value!r}"
        )
    return text


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _normalise(rows: Iterable[Mapping[str, Any]]) -> list[_Vote]:
    votes = []
    for row in rows:
        left_source = row.get("left_source")
        choice = row.get("choice")
        if left_source is None or choice is None:
            raise StudyError(
                f"vote of rater {row.get('rater_id')} on item {row.get('item_id')}: needs left_source and choice"
            )
        auto_left = _flag(left_source, ("automatic", "manual"), "left_source", row) == "automatic"
        chose_left = _flag(choice, ("left", "right"), "choice", row) == "left"
        turing = row.get("turing")
        turing_left = None if turing in (None, "") else _flag(turing, ("left", "right"), "turing", row) == "left"
        slice_index = row.get("slice_index")
        votes.append(
            _Vote(
                rater=str(row["rater_id"]),
                group=str(row["rater_group"]),
                item=str(row["item_id"]),
                case=str(row["case_id"]),
                auto_left=auto_left,
                chose_left=chose_left,
                automatic=auto_left == chose_left,
                response_ms=_number(row.get("response_ms")),
                repeat_of=None if row.get("repeat_of") in (None, "") else str(row["repeat_of"]),
                turing_left=turing_left,
                slice_index=None if slice_index in (None, "") else int(slice_index),
                thickness=_number(row.get("slice_thickness_mm")),
                volume=_number(row.get("tumour_volume_ml")),
                location=None if row.get("location") in (None, "") else str(row["location"]),
            )
        )
    return votes


def _group_order(groups: Iterable[str]) -> list[str]:
    present = set(groups)
    known = [g for g in SPECIALTIES if g in present]
    return known + sorted(present - set(known))


# ----------------------------------------------------------------------------- sections


def _per_rater(votes: Sequence[_Vote]) -> list[dict[str, Any]]:
    stats: dict[str, list[Any]] = {}
    for v in votes:
        entry = stats.setdefault(v.rater, [v.group, 0, 0])
        entry[1] += 1
        entry[2] += v.automatic
    return [
        {"rater_id": r, "group": g, "n": n, "n_automatic": k, "fraction": k / n} for r, (g, n, k) in stats.items()
    ]


def _tally(votes: Sequence[_Vote], key) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for v in votes:
        entry = out.setdefault(key(v), [0, 0])
        entry[0] += v.automatic
        entry[1] += 1
    return out


def _majority(k: int, n: int) -> str:
    return "automatic" if 2 * k > n else "manual" if 2 * k < n else "tie"


def _stratum(votes: Sequence[_Vote], confidence: float) -> dict[str, Any]:
    k = sum(v.automatic for v in votes)
    raters = [r["fraction"] for r in _per_rater(votes)]
    return {
        "n_cases": len({v.case for v in votes}),
        "n_raters": len(raters),
        **proportion(k, len(votes), confidence),
        "rater_mean": float(np.mean(raters)) if raters else None,
    }


def _size_label(volume_ml: float) -> str:
    """Equivalent-sphere diameter bins at the T-stage cut-offs 3, 5 and 7 cm."""
    diameter_cm = (6 * volume_ml / math.pi) ** (1 / 3)
    if diameter_cm <= 3:
        return "≤ 3 cm"
    if diameter_cm <= 5:
        return "3–5 cm"
    if diameter_cm <= 7:
        return "5–7 cm"
    return "> 7 cm"


_SIZE_ORDER = ("≤ 3 cm", "3–5 cm", "5–7 cm", "> 7 cm")


def _strata(votes: Sequence[_Vote], confidence: float) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    by: dict[str, tuple[Any, Any]] = {
        "slice_thickness_mm": (lambda v: None if v.thickness is None else f"{v.thickness:g} mm",
                               lambda s: float(s.split()[0])),
        "tumour_size": (lambda v: None if v.volume is None else _size_label(v.volume), _SIZE_ORDER.index),
        "location": (lambda v: v.location, str),
    }
    for name, (label, order) in by.items():
        groups: dict[str, list[_Vote]] = defaultdict(list)
        for v in votes:
            stratum = label(v)
            if stratum is not None:
                groups[stratum].append(v)
        if groups:
            out[name] = [{"stratum": s, **_stratum(groups[s], confidence)} for s in sorted(groups, key=order)]
    return out


def _intra_rater(all_votes: Sequence[_Vote]) -> dict[str, Any] | None:
    by_key = {(v.rater, v.item): v for v in all_votes}
    pairs: dict[str, list[bool]] = defaultdict(list)
    for v in all_votes:
        if v.repeat_of is None:
            continue
        original = by_key.get((v.rater, v.repeat_of))
        if original is not None:
            pairs[v.rater].append(original.automatic == v.automatic)
    if not pairs:
        return None
    agree = [a for same in pairs.values() for a in same]
    per_rater = [
        {"rater_id": r, "n_pairs": len(s), "n_agree": sum(s), "agreement": sum(s) / len(s)} for r, s in pairs.items()
    ]
    return {
        "n_pairs": len(agree),
        "n_agree": sum(agree),
        "agreement": sum(agree) / len(agree),
        "rater_agreement": summary([r["agreement"] for r in per_rater]),
        "per_rater": per_rater,
    }


def _turing(votes: Sequence[_Vote], confidence: float) -> dict[str, Any] | None:
    answered = [v for v in votes if v.turing_left is not None]
    if not answered:
        return None
    correct = [v.turing_left == v.auto_left for v in answered]
    by_group: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v, c in zip(answered, correct):
        by_group[v.group][0] += c
        by_group[v.group][1] += 1
    return {
        "correct": proportion(sum(correct), len(correct), confidence),
        "groups": {g: proportion(*by_group[g], confidence) for g in _group_order(by_group)},
    }


def _reviews(reviews: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    rows = list(reviews)
    if not rows:
        return None
    per_case: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_case[str(r["case_id"])][str(r["accepted_source"])] += 1
    overall = Counter(str(r["accepted_source"]) for r in rows)
    keys = ("automatic", "manual", "none")
    return {
        "n_reviews": len(rows),
        "accepted": {k: overall.get(k, 0) for k in keys},
        "per_case": [{"case_id": c, **{k: n.get(k, 0) for k in keys}} for c, n in per_case.items()],
    }


# ----------------------------------------------------------------------------- the report


def build_report(
    votes: Iterable[Mapping[str, Any]],
    *,
    options: ReportOptions = ReportOptions(),
    reviews: Iterable[Mapping[str, Any]] = (),
    study: str | None = None,
) -> dict[str, Any]:
    """Every figure of the study as a JSON-able dict (see the module docstring for conventions)."""
    all_votes = _normalise(votes)
    if not all_votes:
        raise StudyError("no votes to report on")
    conf = options.confidence
    scored = [v for v in all_votes if v.repeat_of is None]
    per_rater = _per_rater(scored)
    fractions = [r["fraction"] for r in per_rater]
    groups = _group_order(r["group"] for r in per_rater)

    group_stats = {}
    for g in groups:
        members = [r for r in per_rater if r["group"] == g]
        k = sum(r["n_automatic"] for r in members)
        n = sum(r["n"] for r in members)
        group_stats[g] = {
            "n_raters": len(members),
            **{key: val for key, val in summary([r["fraction"] for r in members]).items() if key != "n"},
            "pooled": proportion(k, n, conf),
        }

    wanted = {g.lower() for g in options.headline_groups}
    head = [r for r in per_rater if r["group"].lower() in wanted]
    headline = {
        "groups": list(options.headline_groups),
        "n_raters": len(head),
        "mean": float(np.mean([r["fraction"] for r in head])) if head else None,
        "median": float(np.median([r["fraction"] for r in head])) if head else None,
        "pooled": proportion(sum(r["n_automatic"] for r in head), sum(r["n"] for r in head), conf),
    }

    case_tally = _tally(scored, lambda v: v.case)
    per_case = [
        {"case_id": c, "n_items": len({v.item for v in scored if v.case == c}), **proportion(k, n, conf),
         "majority": _majority(k, n)}
        for c, (k, n) in case_tally.items()
    ]
    item_tally = _tally(scored, lambda v: v.item)
    item_info = {v.item: (v.case, v.slice_index) for v in scored}
    per_item = [
        {"item_id": i, "case_id": item_info[i][0], "slice_index": item_info[i][1], "n": n, "n_automatic": k,
         "fraction": k / n, "majority": _majority(k, n)}
        for i, (k, n) in item_tally.items()
    ]

    times = [v.response_ms for v in scored if v.response_ms is not None]
    response = None
    if times:
        response = {
            **summary(times),
            "groups": {g: summary([v.response_ms for v in scored if v.group == g and v.response_ms is not None])
                       for g in groups},
        }

    fleiss_counts = [[k, n - k] for k, n in item_tally.values()]
    kappa_items = sum(1 for _, n in item_tally.values() if n >= 2)

    return {
        "study": study,
        "n_raters": len(per_rater),
        "n_votes": len(all_votes),
        "n_scored_votes": len(scored),
        "n_repeat_votes": len(all_votes) - len(scored),
        "n_items": len(item_tally),
        "n_cases": len(case_tally),
        "per_rater": per_rater,
        "raters": summary(fractions),
        "pooled": proportion(sum(v.automatic for v in scored), len(scored), conf),
        "groups": group_stats,
        "headline": headline,
        "per_case": per_case,
        "cases_majority": dict(Counter(c["majority"] for c in per_case)),
        "per_item": per_item,
        "items_majority": dict(Counter(i["majority"] for i in per_item)),
        "side": {
            "chose_left": proportion(sum(v.chose_left for v in scored), len(scored), conf),
            "automatic_on_left": sum(v.auto_left for v in scored) / len(scored),
        },
        "response_ms": response,
        "intra_rater": _intra_rater(all_votes),
        "fleiss_kappa": {"kappa": fleiss_kappa(fleiss_counts), "n_items": kappa_items,
                         "categories": ["automatic", "manual"]},
        "turing": _turing(all_votes, conf),
        "strata": _strata(scored, conf),
        "reviews": _reviews(reviews),
        "confidence": conf,
        "notes": [
            "score per rater = fraction of items on which the automatic contour was chosen",
            "repeated items are excluded from preference figures and used only for intra-rater agreement",
            "quartiles by linear interpolation; IQR = Q3 - Q1",
            f"{conf:.0%} Wilson intervals and exact two-sided binomial tests vs 0.5 on pooled votes "
            "(votes treated as independent)",
            f"headline = mean of per-rater scores over {', '.join(options.headline_groups)}",
            "tumour size strata: equivalent-sphere diameter of the tumour volume, cut at 3, 5 and 7 cm",
        ],
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _ci(p: Mapping[str, Any]) -> str:
    if p["n"] == 0:
        return "n/a"
    return f"{_pct(p['fraction'])} [{_pct(p['ci_low'])}, {_pct(p['ci_high'])}], p = {p['p_value']:.3g}"


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text summary of :func:`build_report`'s output (for the command line)."""
    lines = []
    if report.get("study"):
        lines.append(f"Study: {report['study']}")
    auto = report.get("automatic_contours")
    if auto:
        kinds = ", ".join(f"{k} {n}" for k, n in auto["kinds"].items())
        versions = f" (model {', '.join(auto['model_versions'])})" if auto["model_versions"] else ""
        lines.append(f"Automatic contours: {kinds}{versions}")
        if auto["stand_in"]:
            lines.append("WARNING: " + stand_in_note(auto, sum(auto["kinds"].values())))
    lines.append(
        f"{report['n_raters']} raters, {report['n_votes']} votes ({report['n_repeat_votes']} on repeats), "
        f"{report['n_items']} items, {report['n_cases']} cases"
    )
    h = report["headline"]
    groups = " + ".join(h["groups"])
    lines.append(f"Headline ({groups}, {h['n_raters']} raters): mean {_pct(h['mean'])} chose automatic")
    r = report["raters"]
    lines.append(
        f"All raters: median {_pct(r['median'])} (IQR {_pct(r['q1'])}–{_pct(r['q3'])}), mean {_pct(r['mean'])}"
    )
    lines.append(f"Pooled votes: {_ci(report['pooled'])}")
    lines.append("By group:")
    for g, s in report["groups"].items():
        lines.append(f"  {g:<22} {s['n_raters']:>3} raters  mean {_pct(s['mean'])}  median {_pct(s['median'])}  "
                     f"pooled {_ci(s['pooled'])}")
    for what in ("cases", "items"):
        m = report[f"{what}_majority"]
        lines.append(f"{what.capitalize()}: automatic majority {m.get('automatic', 0)}, "
                     f"manual {m.get('manual', 0)}, tie {m.get('tie', 0)}")
    lines.append(f"Chose left: {_ci(report['side']['chose_left'])}; automatic shown left on "
                 f"{_pct(report['side']['automatic_on_left'])} of votes")
    if report["response_ms"]:
        t = report["response_ms"]
        lines.append(f"Response time: median {t['median'] / 1000:.1f} s "
                     f"(IQR {t['q1'] / 1000:.1f}–{t['q3'] / 1000:.1f} s)")
    k = report["fleiss_kappa"]
    kappa = "n/a" if k["kappa"] is None else format(k["kappa"], ".3f")
    lines.append(f"Fleiss' kappa: {kappa} over {k['n_items']} items")
    if report["intra_rater"]:
        ir = report["intra_rater"]
        lines.append(f"Intra-rater agreement on repeats: {_pct(ir['agreement'])} of {ir['n_pairs']} pairs")
    if report["turing"]:
        lines.append(f"Turing question, computer identified: {_ci(report['turing']['correct'])}")
    for name, strata in report["strata"].items():
        lines.append(f"By {name.replace('_', ' ')}:")
        for s in strata:
            lines.append(f"  {s['stratum']:<14} {s['n_cases']:>3} cases  {_ci(s)}")
    if report.get("reviews"):
        a = report["reviews"]["accepted"]
        lines.append(f"Clinical reviews: {report['reviews']['n_reviews']} (accepted automatic {a['automatic']}, "
                     f"manual {a['manual']}, none {a['none']})")
    return "\n".join(lines)


def report_figures(report: Mapping[str, Any]) -> list[Any]:
    """Plotly figures for a report: per-rater scores by group, per-case bars, and strata."""
    import plotly.graph_objects as go  # imported here: only pages and notebooks draw figures

    figures = []
    fig = go.Figure()
    for g in report["groups"]:
        values = [r["fraction"] for r in report["per_rater"] if r["group"] == g]
        fig.add_trace(go.Box(y=values, name=g, boxpoints="all", jitter=0.4, pointpos=0,
                             hovertext=[r["rater_id"] for r in report["per_rater"] if r["group"] == g]))
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="no preference")
    if report["headline"]["mean"] is not None:
        fig.add_hline(y=report["headline"]["mean"], line_dash="dash",
                      annotation_text=f"headline {_pct(report['headline']['mean'])}")
    fig.update_layout(title="Fraction of items where each rater chose the automatic contour",
                      yaxis={"title": "chose automatic", "range": [0, 1], "tickformat": ".0%"}, showlegend=False)
    figures.append(fig)

    cases = report["per_case"]
    fig = go.Figure(go.Bar(
        x=[c["case_id"] for c in cases],
        y=[c["fraction"] for c in cases],
        error_y={"type": "data", "symmetric": False,
                 "array": [c["ci_high"] - c["fraction"] for c in cases],
                 "arrayminus": [c["fraction"] - c["ci_low"] for c in cases]},
    ))
    fig.add_hline(y=0.5, line_dash="dot")
    fig.update_layout(title="Votes for the automatic contour per case (Wilson CI)",
                      yaxis={"title": "chose automatic", "range": [0, 1], "tickformat": ".0%"})
    figures.append(fig)

    for name, strata in report["strata"].items():
        fig = go.Figure(go.Bar(
            x=[s["stratum"] for s in strata],
            y=[s["fraction"] for s in strata],
            text=[f"{s['n_cases']} cases" for s in strata],
            error_y={"type": "data", "symmetric": False,
                     "array": [s["ci_high"] - s["fraction"] for s in strata],
                     "arrayminus": [s["fraction"] - s["ci_low"] for s in strata]},
        ))
        fig.add_hline(y=0.5, line_dash="dot")
        fig.update_layout(title=f"Votes for the automatic contour by {name.replace('_', ' ')}",
                          yaxis={"title": "chose automatic", "range": [0, 1], "tickformat": ".0%"})
        figures.append(fig)
    return figures


def study_report(
    store: Any, study: "str | int", *, options: ReportOptions = ReportOptions(), pseudonymise: bool = False
) -> dict[str, Any]:
    """:func:`build_report` on a study in a :class:`~lungseg.study.store.StudyStore`.

    With ``pseudonymise=True`` raters appear as ``R001``... (as in a pseudonymised export).
    """
    from lungseg.study.csvio import pseudonym_map

    st = store.study(study)
    votes = store.votes_table(st.id)
    reviews = store.reviews_table(st.id)
    if pseudonymise:
        names = pseudonym_map(r["rater_id"] for r in votes + reviews)
        votes = [{**r, "rater_id": names[r["rater_id"]], "rater_name": None} for r in votes]
        reviews = [{**r, "rater_id": names[r["rater_id"]], "rater_name": None} for r in reviews]
    report = build_report(votes, options=options, reviews=reviews, study=st.name)
    return with_automatic_contours(report, store.cases(st.id))


def with_automatic_contours(report: dict[str, Any], cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``report`` with ``automatic_contours`` (what the study's automatic contours are: model,
    file or stand-in, per :func:`lungseg.study.cases.automatic_summary`; left out when no case
    records it, as in a study of imported votes) and, when any case
    compares the manual contour with the stand-in, a note saying so first."""
    from lungseg.study.cases import automatic_summary

    summary = automatic_summary(cases)
    if set(summary["kinds"]) <= {"not recorded"}:  # e.g. a study of imported votes: nothing to say
        return report
    report = {**report, "automatic_contours": summary}
    if summary["stand_in"]:
        report["notes"] = [stand_in_note(summary, len(cases)), *report["notes"]]
    return report


def stand_in_note(summary: Mapping[str, Any], n_cases: int) -> str:
    n = len(summary["stand_in"])
    return (f"{n} of {n_cases} case(s) compare the manual contour with a STAND-IN (the manual contour dilated and "
            f"shifted; demo/test only), not a model: their votes do not evaluate any model "
            f"({', '.join(summary['stand_in'])})")
