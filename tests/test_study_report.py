"""Report statistics against a synthetic study whose every figure is known by construction."""

from __future__ import annotations

import csv
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from lungseg.study import (
    CaseMetadata,
    CaseSpec,
    DesignParams,
    StudyStore,
    authenticate_rater,
    build_report,
    fleiss_kappa,
    import_votes,
    read_votes_csv,
    report_figures,
    study_report,
    wilson_interval,
)
from lungseg.study.csvio import REQUIRED_COLUMNS, export_votes, write_votes_csv
from lungseg.study.report import binomial_p, format_report

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal

# Automatic choices per rater, out of 101 items, by group (40 raters).
K = {
    "Radiologist": [52, 54, 56, 57, 58, 58, 59, 60, 61, 62],
    "Radiation oncologist": [53, 55, 56, 57, 57, 58, 60, 61],
    "Medical doctor": [48, 50, 53, 55, 56, 57, 58, 60],
    "Computer scientist": [45, 50, 52, 55, 55, 57, 59, 62],
    "Student": [44, 49, 53, 55, 56, 58],
}
CASE_SIZES = [10, 10] + [9] * 9  # 11 cases, 101 items
N_ITEMS = sum(CASE_SIZES)


def _raters() -> list[tuple[str, str, int]]:
    out = []
    for group, ks in K.items():
        for k in ks:
            out.append((f"rater{len(out) + 1:02d}", group, k))
    return out


def _items() -> list[tuple[str, str, int]]:
    items = []
    for c, size in enumerate(CASE_SIZES, start=1):
        for s in range(size):
            items.append((f"I{len(items):03d}", f"C{c:02d}", 20 + 3 * s))
    return items


def _case_meta(case_id: str) -> tuple[float, float, str]:
    c = int(case_id[1:])
    # thickness 1 mm for cases 1-5, else 2.5 mm; volumes spanning the size bins; two locations
    return (1.0 if c <= 5 else 2.5, [5.0, 20.0, 100.0, 250.0][c % 4], "upper" if c % 2 else "lower")


def _synthetic_rows() -> list[dict]:
    rows = []
    for r, (rater, group, k) in enumerate(_raters()):
        for i, (item, case, z) in enumerate(_items()):
            automatic = (i + 7 * r) % N_ITEMS < k  # exactly k items per rater
            auto_left = (i + r) % 2 == 0
            thickness, volume, location = _case_meta(case)
            rows.append(
                {
                    "rater_id": rater,
                    "rater_group": group,
                    "item_id": item,
                    "case_id": case,
                    "left_source": "automatic" if auto_left else "manual",
                    "choice": "left" if automatic == auto_left else "right",
                    "comment": "",
                    "response_ms": 1000 + 37 * ((i * 13 + r * 5) % 97),
                    "slice_index": z,
                    "slice_thickness_mm": thickness,
                    "tumour_volume_ml": volume,
                    "location": location,
                }
            )
    return rows


def _write_csv(rows: list[dict], path: Path, columns=None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _median(values: list[Fraction]) -> Fraction:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _quantile(values: list[Fraction], q: Fraction) -> Fraction:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return centre - half, centre + half


def _binom_p_by_hand(k: int, n: int) -> float:
    """Two-sided exact test against 1/2: the probability of every outcome no likelier than k."""
    tail = min(k, n - k)
    total = sum(math.comb(n, i) for i in range(tail + 1))
    if 2 * tail == n:
        return 1.0
    return float(min(Fraction(1), Fraction(2 * total, 2**n)))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("synthetic")
    rows = _synthetic_rows()
    path = _write_csv(rows, tmp / "votes.csv")
    direct = build_report(read_votes_csv(path))
    store = StudyStore(tmp / "study.db")
    result = import_votes(store, path, "seed replication", actor="test")
    imported = study_report(store, "seed replication")
    store.close()
    return {"rows": rows, "direct": direct, "imported": imported, "result": result}


def test_synthetic_file_shape(synthetic):
    assert synthetic["result"].imported == 40 * 101
    assert synthetic["result"].raters == 40 and synthetic["result"].items == 101
    r = synthetic["direct"]
    assert (r["n_raters"], r["n_votes"], r["n_items"], r["n_cases"]) == (40, 4040, 101, 11)


@pytest.mark.parametrize("which", ["direct", "imported"])
def test_report_recovers_every_figure(synthetic, which):
    report = synthetic[which]
    raters = _raters()
    frac = {name: Fraction(k, N_ITEMS) for name, _, k in raters}

    per_rater = {r["rater_id"]: r for r in report["per_rater"]}
    assert set(per_rater) == set(frac)
    for name, group, k in raters:
        assert per_rater[name]["group"] == group
        assert per_rater[name]["n"] == N_ITEMS and per_rater[name]["n_automatic"] == k
        assert per_rater[name]["fraction"] == pytest.approx(float(frac[name]), abs=1e-15)

    for group, ks in K.items():
        g = report["groups"][group]
        fr = [Fraction(k, N_ITEMS) for k in ks]
        assert g["n_raters"] == len(ks)
        assert g["mean"] == pytest.approx(float(sum(fr) / len(fr)), abs=1e-12)
        assert g["median"] == pytest.approx(float(_median(fr)), abs=1e-12)
        assert g["pooled"]["k"] == sum(ks) and g["pooled"]["n"] == N_ITEMS * len(ks)
        lo, hi = _wilson_by_hand(sum(ks), N_ITEMS * len(ks))
        assert (g["pooled"]["ci_low"], g["pooled"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert g["pooled"]["p_value"] == pytest.approx(_binom_p_by_hand(sum(ks), N_ITEMS * len(ks)), rel=1e-9)

    head = K["Radiologist"] + K["Radiation oncologist"]
    assert report["headline"]["n_raters"] == 18
    assert report["headline"]["mean"] == pytest.approx(sum(head) / (18 * N_ITEMS), abs=1e-12)
    assert round(100 * report["headline"]["mean"]) == 57

    all_fr = list(frac.values())
    assert report["raters"]["median"] == pytest.approx(float(_median(all_fr)), abs=1e-12)
    assert report["raters"]["q1"] == pytest.approx(float(_quantile(all_fr, Fraction(1, 4))), abs=1e-12)
    assert report["raters"]["q3"] == pytest.approx(float(_quantile(all_fr, Fraction(3, 4))), abs=1e-12)
    assert report["raters"]["mean"] == pytest.approx(float(sum(all_fr) / 40), abs=1e-12)

    k_all = sum(k for _, _, k in raters)
    pooled = report["pooled"]
    assert (pooled["k"], pooled["n"]) == (k_all, 4040)
    lo, hi = _wilson_by_hand(k_all, 4040)
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert pooled["p_value"] == pytest.approx(_binom_p_by_hand(k_all, 4040), rel=1e-9)


@pytest.mark.parametrize("which", ["direct", "imported"])
def test_per_case_item_side_and_time(synthetic, which):
    report, rows = synthetic[which], synthetic["rows"]

    def automatic(row):
        return (row["choice"] == "left") == (row["left_source"] == "automatic")

    for case in report["per_case"]:
        mine = [r for r in rows if r["case_id"] == case["case_id"]]
        k = sum(automatic(r) for r in mine)
        assert (case["k"], case["n"]) == (k, len(mine))
        assert case["majority"] == ("automatic" if 2 * k > len(mine) else "manual" if 2 * k < len(mine) else "tie")
    for item in report["per_item"]:
        mine = [r for r in rows if r["item_id"] == item["item_id"]]
        assert item["n"] == 40 and item["n_automatic"] == sum(automatic(r) for r in mine)

    n_left = sum(r["choice"] == "left" for r in rows)
    side = report["side"]["chose_left"]
    assert (side["k"], side["n"]) == (n_left, 4040)
    assert (side["ci_low"], side["ci_high"]) == pytest.approx(_wilson_by_hand(n_left, 4040), abs=1e-12)
    assert side["p_value"] == pytest.approx(_binom_p_by_hand(n_left, 4040), rel=1e-9)

    times = sorted(Fraction(r["response_ms"]) for r in rows)
    assert report["response_ms"]["median"] == pytest.approx(float(_median(times)))
    assert report["response_ms"]["iqr"] == pytest.approx(
        float(_quantile(times, Fraction(3, 4)) - _quantile(times, Fraction(1, 4)))
    )

    thick = {s["stratum"]: s for s in report["strata"]["slice_thickness_mm"]}
    assert set(thick) == {"1 mm", "2.5 mm"}
    thin_rows = [r for r in rows if r["slice_thickness_mm"] == 1.0]
    assert thick["1 mm"]["n"] == len(thin_rows) and thick["1 mm"]["n_cases"] == 5
    assert thick["1 mm"]["k"] == sum(automatic(r) for r in thin_rows)
    sizes = {s["stratum"]: s["n_cases"] for s in report["strata"]["tumour_size"]}
    # 5 ml → 2.1 cm, 20 ml → 3.4 cm, 100 ml → 5.8 cm, 250 ml → 7.8 cm equivalent diameter
    assert sizes == {"≤ 3 cm": 2, "3–5 cm": 3, "5–7 cm": 3, "> 7 cm": 3}
    assert {s["stratum"] for s in report["strata"]["location"]} == {"lower", "upper"}


def test_imported_and_direct_reports_are_identical(synthetic):
    direct = dict(synthetic["direct"], study=None)
    imported = dict(synthetic["imported"], study=None, reviews=None)
    assert json.dumps(direct, sort_keys=True) == json.dumps(imported, sort_keys=True)


def test_report_is_json_and_has_figures_and_text(synthetic):
    report = synthetic["imported"]
    json.dumps(report, allow_nan=False)
    figures = report_figures(report)
    assert len(figures) == 2 + len(report["strata"])
    assert all(hasattr(f, "to_dict") for f in figures)
    text = format_report(report)
    assert "Headline" in text and "Fleiss" in text


def test_wilson_and_binomial_helpers_by_hand():
    for k, n in [(0, 10), (3, 10), (10, 10), (56, 101), (2262, 4040)]:
        assert wilson_interval(k, n) == pytest.approx(
            tuple(min(1, max(0, v)) for v in _wilson_by_hand(k, n)), abs=1e-12
        )
        assert binomial_p(k, n) == pytest.approx(_binom_p_by_hand(k, n), rel=1e-9)
    assert wilson_interval(0, 0) == (None, None)
    assert binomial_p(0, 0) is None


def test_fleiss_kappa_hand_examples():
    # 4 items, 3 raters: P_i = 1, 1/3, 1/3, 1 → P̄ = 2/3; shares 1/2, 1/2 → P_e = 1/2; κ = 1/3
    assert fleiss_kappa([[3, 0], [2, 1], [1, 2], [0, 3]]) == pytest.approx(1 / 3)
    # 3 categories: P_i = 1/3, 1, 0 → P̄ = 4/9; shares 3/9, 5/9, 1/9 → P_e = 35/81; κ = 1/46
    assert fleiss_kappa([[2, 1, 0], [0, 3, 0], [1, 1, 1]]) == pytest.approx(1 / 46)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # no variation: chance agreement is 1
    assert fleiss_kappa([[1, 0]]) is None


def _row(rater, item, automatic, *, auto_left=True, repeat_of=None, group="Radiologist", case="C1"):
    return {
        "rater_id": rater,
        "rater_group": group,
        "item_id": item,
        "case_id": case,
        "left_source": "automatic" if auto_left else "manual",
        "choice": "left" if automatic == auto_left else "right",
        "repeat_of": repeat_of,
    }


def test_fleiss_kappa_in_report_and_intra_rater_agreement():
    pattern = {"i1": [1, 1, 1], "i2": [1, 1, 0], "i3": [0, 1, 0], "i4": [0, 0, 0]}
    rows = [_row(r, item, bool(v[j]), auto_left=(j + len(item)) % 2 == 0) for item, v in pattern.items()
            for j, r in enumerate("ABC")]
    # repeats: A agrees on i1, disagrees on i2; B agrees on i1 and i3; C gives none.
    rows += [
        _row("A", "i1#r", True, repeat_of="i1"),
        _row("A", "i2#r", False, repeat_of="i2"),
        _row("B", "i1#r", True, repeat_of="i1", auto_left=False),
        _row("B", "i3#r", True, repeat_of="i3"),
    ]
    report = build_report(rows)
    assert report["fleiss_kappa"]["kappa"] == pytest.approx(1 / 3)
    assert report["fleiss_kappa"]["n_items"] == 4
    assert report["n_votes"] == 16 and report["n_scored_votes"] == 12  # repeats not scored
    intra = report["intra_rater"]
    assert (intra["n_pairs"], intra["n_agree"]) == (4, 3)
    assert {r["rater_id"]: r["agreement"] for r in intra["per_rater"]} == {"A": 0.5, "B": 1.0}


def test_turing_and_headline_groups_case_insensitive():
    rows = []
    for i in range(20):
        row = _row("A", f"i{i}", i % 4 != 0, auto_left=i % 2 == 0, group="radiologist")
        row["turing"] = "left" if (i % 2 == 0) == (i < 15) else "right"  # right for 15 of 20
        rows.append(row)
    report = build_report(rows)
    assert report["turing"]["correct"]["k"] == 15 and report["turing"]["correct"]["n"] == 20
    assert report["headline"]["n_raters"] == 1 and report["headline"]["mean"] == pytest.approx(0.75)


def test_app_votes_and_their_csv_import_give_the_same_report(tmp_path):
    store = StudyStore(tmp_path / "app.db")
    cases = [CaseSpec(f"P{c}", tuple(range(5, 30)), CaseMetadata(1.25 * c, 10.0 * c, "RUL" if c % 2 else "LLL"))
             for c in range(1, 5)]
    store.create_study("app", cases, DesignParams(slices_per_case=5, repeats=3, turing=True, seed=7), actor="t")
    specialties = ["Radiologist", "Radiation oncologist", "Student", "Computer scientist", "Radiologist"]
    for n, specialty in enumerate(specialties):
        session = authenticate_rater(store, store.invite_rater("app", f"Dr {n}", specialty, actor="t").token)
        while (item := store.next_item_for(session)) is not None:
            choice = "left" if (item.position * (n + 3)) % 5 < 3 else "right"
            store.cast_vote(session, item.item_id, choice, response_ms=500 + 11 * item.position,
                            turing="left" if item.position % 3 else "right", comment=f"c{item.position}")
    app_report = study_report(store, "app")
    out = tmp_path / "export.csv"
    assert export_votes(store, "app", out, actor="t") == 5 * 23
    other = StudyStore(tmp_path / "other.db")
    result = import_votes(other, out, "copy")
    assert result.imported == 5 * 23
    copy_report = study_report(other, "copy")
    assert app_report["intra_rater"]["n_pairs"] == 15 and app_report["turing"] is not None
    assert json.dumps(dict(app_report, study=None), sort_keys=True) == json.dumps(
        dict(copy_report, study=None), sort_keys=True
    )
    # re-importing the same export into the original study changes nothing
    again = import_votes(store, out, "app")
    assert (again.imported, again.already_present) == (0, 5 * 23)
    store.close()
    other.close()


def test_pseudonymised_export_and_report(tmp_path, synthetic):
    rows = [dict(r, rater_name=f"Dr {r['rater_id']}") for r in synthetic["rows"][:303]]
    out = tmp_path / "p.csv"
    write_votes_csv(rows, out, pseudonymise=True)
    text = out.read_text()
    assert "rater01" not in text and "Dr " not in text and "rater_name" not in text
    back = list(csv.DictReader(open(out)))
    assert [r["rater_id"] for r in back[::101]] == ["R001", "R002", "R003"]
    assert set(REQUIRED_COLUMNS) <= set(back[0])
