"""A contouring study run elsewhere: a times CSV and a contour folder with known answers, imported with the CLI,
give those answers in ``study report --json`` (expected values computed independently: tests/contouring_expected)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from contouring_expected import expected_report
from lungseg.cli.study import main as cli_main
from lungseg.study.store import StudyStore

SHAPE = (12, 24, 20)  # z, y, x
SPACING_XYZ = (0.9, 0.7, 2.5)
SPACING_ZYX = (2.5, 0.7, 0.9)
READERS = ("dr_a", "dr_b")
CASES = ("c1", "c2", "c3")


def _write(arr: np.ndarray, path, spacing=SPACING_XYZ) -> None:
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 20.0, -30.0))
    sitk.WriteImage(image, str(path))


def _blob(rng: np.random.Generator, centre, radii) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    r = np.array(radii) * rng.uniform(0.8, 1.2, 3)
    c = np.array(centre) + rng.integers(-1, 2, 3)
    return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A contour folder and a times file, and the masks and times they hold."""
    root = tmp_path_factory.mktemp("contouring-import")
    rng = np.random.default_rng(23)
    folder = root / "contours"
    masks, automatic, repeats = {}, {}, {}
    for n, case in enumerate(CASES):
        d = folder / case
        d.mkdir(parents=True)
        ct = np.full(SHAPE, -1000, np.int16)
        ct[2:10, 4:20, 3:17] = 40
        _write(ct, d / "ct.nii.gz")
        centre, radii = (6, 12, 10), (3 + n, 5, 4)
        automatic[case] = _blob(rng, centre, radii)
        _write(automatic[case].astype(np.uint8), d / "automatic.nii.gz")
        for reader in READERS:
            for arm in ("scratch", "assisted"):
                m = _blob(rng, centre, radii)
                masks[(reader, case, arm)] = m
                name = reader if (arm == "scratch" and case == "c2") else f"{reader}__{arm}"
                _write(m.astype(np.uint8) * 3, d / f"{name}.nii.gz")  # any value > 0 is inside
    again = _blob(rng, (6, 12, 10), (3, 5, 4))
    repeats[("dr_a", "c1", "scratch")] = again
    _write(again.astype(np.uint8), folder / "c1" / "dr_a__scratch__2.nii.gz")
    times = {(r, c, a): float(rng.integers(40, 400)) + 0.5 for r in READERS for c in CASES
             for a in ("scratch", "assisted")}
    model = {c: float(rng.uniform(2, 4)) for c in CASES}
    extra = {("dr_a", "c4", "scratch"): 250.0, ("dr_a", "c4", "assisted"): 120.0}  # dr_b never read c4
    times_csv = root / "times.csv"
    with times_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "reader", "case", "seconds", "site"])  # any column order, extra columns ignored
        for (r, c, a), s in {**times, **extra}.items():
            w.writerow([a, r, c, s, "elsewhere"])
        for c, s in model.items():
            w.writerow(["model", "", c, s, "elsewhere"])
    spacing = {c: SPACING_ZYX for c in CASES}
    return {"root": root, "folder": folder, "times_csv": times_csv, "times": times, "extra": extra, "model": model,
            "masks": masks, "automatic": automatic, "repeats": repeats, "spacing": spacing}


def _report(db, capsys) -> dict:
    capsys.readouterr()
    assert cli_main(["study", "report", "--db", str(db), "--study", "ext", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _close(a, b):
    assert (a is None) == (b is None), (a, b)
    if a is not None:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)  # EDT distances: float rounding


def test_imported_times_and_contours_give_the_known_answers(known, tmp_path, capsys):
    db = tmp_path / "s.db"
    assert cli_main(["study", "import-times", str(known["times_csv"]), "--db", str(db), "--study", "ext"]) == 0
    assert cli_main(["study", "import-contours", str(known["folder"]), "--db", str(db), "--study", "ext"]) == 0
    report = _report(db, capsys)

    # all readings: every case; complete cases: c4 (read by dr_a only) left out
    full = expected_report({**known["times"], **known["extra"]}, known["model"], known["masks"],
                           known["automatic"], known["spacing"], known["repeats"])
    complete = expected_report(known["times"], known["model"], known["masks"], known["automatic"],
                               known["spacing"], known["repeats"])
    assert report["readers"] == ["dr_a", "dr_b"] and report["n_cases"] == 4
    for key, exp in (("all_readings", full), ("complete_case", complete)):
        t = report["times"][key]
        assert sorted(t["cases"]) == (["c1", "c2", "c3", "c4"] if key == "all_readings" else ["c1", "c2", "c3"])
        for arm in ("scratch", "assisted", "model"):
            for stat in ("n", "mean", "sd", "median", "q1", "q3", "iqr"):
                _close(t["per_arm"][arm][stat], exp["per_arm"][arm][stat])
        got = {(r["reader"], r["arm"]): r for r in t["per_reader"]}
        assert set(got) == set(exp["per_reader"])
        for k, e in exp["per_reader"].items():
            for stat in ("n", "mean", "sd", "median", "iqr"):
                _close(got[k][stat], e[stat])
        mw = {(m["reader"], m["arm"]): m for m in t["mann_whitney_vs_model"]}
        assert set(mw) == set(exp["mw"])
        for k, (u, p, p_bonf) in exp["mw"].items():
            _close(mw[k]["u"], u), _close(mw[k]["p"], p), _close(mw[k]["p_bonferroni"], p_bonf)
        saved = t["time_saved"]["summary"]
        for stat in ("n", "mean", "sd", "median", "iqr"):
            _close(saved[stat], exp["saved"][stat])
        w = t["wilcoxon_scratch_vs_assisted"]
        _close(w["pooled"]["p"], exp["wilcoxon_pooled"])
        for row in w["per_reader"]:
            _close(row["p"], exp["wilcoxon_per_reader"][row["reader"]][0])
            _close(row["p_bonferroni"], exp["wilcoxon_per_reader"][row["reader"]][1])

    a = report["agreement"]
    inter = {(p["case_id"], p["arm"], p["reader_a"], p["reader_b"]): p for p in a["inter_observer"]["pairs"]}
    assert set(inter) == set(full["inter"]) and len(inter) == 6
    for k, e in full["inter"].items():
        for m in ("dice", "hd95_mm", "surface_dice"):
            _close(inter[k][m], e[m])
    for arm in ("scratch", "assisted"):
        _close(a["inter_observer"]["summary"][arm]["dice"]["median"],
               float(np.median([e["dice"] for k, e in full["inter"].items() if k[1] == arm])))
    intra = {(p["reader"], p["case_id"], p["arm"]): p for p in a["intra_observer"]["pairs"]}
    assert set(intra) == set(full["intra"])
    for k, e in full["intra"].items():
        for m in ("dice", "hd95_mm", "surface_dice"):
            _close(intra[k][m], e[m])
    versus = {(p["reader"], p["case_id"], p["arm"]): p for p in a["model_vs_reader"]["pairs"]}
    assert set(versus) == set(full["model_vs_reader"]) and len(versus) == 12
    for k, e in full["model_vs_reader"].items():
        for m in ("dice", "hd95_mm", "surface_dice"):
            _close(versus[k][m], e[m])
    scratch = a["model_vs_reader_against_reader_vs_reader"]["scratch"]
    _close(scratch["model_vs_reader_median_dice"],
           float(np.median([e["dice"] for k, e in full["model_vs_reader"].items() if k[2] == "scratch"])))
    _close(scratch["reader_vs_reader_median_dice"],
           float(np.median([e["dice"] for k, e in full["inter"].items() if k[1] == "scratch"])))

    # a re-import changes nothing; the text report and the times CSV come from the same figures
    assert cli_main(["study", "import-times", str(known["times_csv"]), "--db", str(db), "--study", "ext"]) == 0
    assert "imported 0 times" in capsys.readouterr().out
    assert _report(db, capsys) == report
    out_csv = tmp_path / "out.csv"
    pairs_csv = tmp_path / "pairs.csv"
    assert cli_main(["study", "report", "--db", str(db), "--study", "ext", "--csv", str(out_csv),
                     "--agreement-csv", str(pairs_csv)]) == 0
    text = capsys.readouterr().out
    with pairs_csv.open() as f:
        pairs = list(csv.DictReader(f))
    assert len(pairs) == 6 + 1 + 12
    for row in pairs:
        if row["comparison"] == "inter-observer":
            e = full["inter"][(row["case_id"], row["arm"], row["reader_a"], row["reader_b"])]
        elif row["comparison"] == "intra-observer":
            e = full["intra"][(row["reader_a"], row["case_id"], row["arm"])]
        else:
            assert row["reader_a"] == "model"
            e = full["model_vs_reader"][(row["reader_b"], row["case_id"], row["arm"])]
        for m in ("dice", "hd95_mm", "surface_dice"):
            _close(float(row[m]), e[m])
    assert f"scratch   n={full['per_arm']['scratch']['n']}" in text
    db2 = tmp_path / "again.db"
    assert cli_main(["study", "import-times", str(out_csv), "--db", str(db2), "--study", "ext"]) == 0
    with StudyStore(db2) as s2:
        assert len(s2.readings_table("ext")) == len(known["times"]) + len(known["extra"])
        assert len(s2.model_times("ext")) == 3


@pytest.mark.parametrize("row, problem", [
    (["dr_a", "c1", "abc", "scratch"], "seconds must be a number"),
    (["dr_a", "c1", "-3", "scratch"], "seconds must be a finite number >= 0"),
    (["dr_a", "c1", "10", "manual"], "arm must be scratch, assisted or model"),
    (["", "c1", "10", "scratch"], "reader is empty"),
    (["dr_b", "c1", "10", "scratch"], "the same reading as row 1"),
])
def test_a_bad_times_row_is_one_line_with_its_number_and_nothing_is_imported(tmp_path, capsys, row, problem):
    path = tmp_path / "t.csv"
    path.write_text("reader,case,seconds,arm\ndr_b,c1,10,scratch\ndr_a,c2,20,assisted\n" + ",".join(row) + "\n")
    db = tmp_path / "s.db"
    assert cli_main(["study", "import-times", str(path), "--db", str(db), "--study", "ext"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: t.csv, row 3: ") and problem in err and "\n" not in err
    with StudyStore(db) as s:
        assert s.studies() == []


def test_a_contour_off_the_case_grid_is_refused_and_nothing_is_imported(known, tmp_path, capsys):
    import shutil

    folder = tmp_path / "contours"
    shutil.copytree(known["folder"], folder)
    _write(np.ones(SHAPE, np.uint8), folder / "c3" / "dr_c__assisted.nii.gz", spacing=(1.0, 0.7, 2.5))
    db = tmp_path / "s.db"
    assert cli_main(["study", "import-times", str(known["times_csv"]), "--db", str(db), "--study", "ext"]) == 0
    capsys.readouterr()
    assert cli_main(["study", "import-contours", str(folder), "--db", str(db), "--study", "ext"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dr_c__assisted.nii.gz: not on the case's grid" in err and "\n" not in err
    with StudyStore(db) as s:
        assert all(r["mask_voxels"] is None for r in s.readings_table("ext"))
        assert all(c["grid_shape"] is None for c in s.contouring_cases("ext"))
    (folder / "c3" / "dr_c__assisted.nii.gz").unlink()
    (folder / "c3" / "dr_c__sideways.nii.gz").write_bytes(b"")
    assert cli_main(["study", "import-contours", str(folder), "--db", str(db), "--study", "ext"]) == 2
    assert "arm must be scratch or assisted" in capsys.readouterr().err


def test_a_contour_whose_header_names_a_file_outside_the_folder_is_refused_unread(known, tmp_path, capsys):
    import shutil

    folder = tmp_path / "contours"
    shutil.copytree(known["folder"], folder)
    secret = tmp_path / "secret.raw"
    secret.write_bytes(np.ones(int(np.prod(SHAPE)), np.uint8).tobytes())  # would read as a valid all-ones mask
    z, y, x = SHAPE
    (folder / "c3" / "dr_c__assisted.nii.gz").unlink(missing_ok=True)
    (folder / "c3" / "dr_c__assisted.mha").write_text(
        f"ObjectType = Image\nNDims = 3\nDimSize = {x} {y} {z}\nElementType = MET_UCHAR\n"
        f"ElementSpacing = {' '.join(map(str, SPACING_XYZ))}\nElementDataFile = ../../secret.raw\n")
    db = tmp_path / "s.db"
    assert cli_main(["study", "import-times", str(known["times_csv"]), "--db", str(db), "--study", "ext"]) == 0
    capsys.readouterr()
    assert cli_main(["study", "import-contours", str(folder), "--db", str(db), "--study", "ext"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dr_c__assisted.mha" in err and "outside" in err and "\n" not in err
    with StudyStore(db) as s:
        assert all(r["mask_voxels"] is None for r in s.readings_table("ext"))
