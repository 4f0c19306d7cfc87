"""Typed study case records: `study create NAME --cases cases.json`, reading them back, old studies, real data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lungseg.case import AutomaticSource, CaseSource, ManualSource, stand_in
from lungseg.cli.study import main as cli_main
from lungseg.study import StudyError, StudyStore
from lungseg.study.cases import (
    automatic_label,
    open_study_case,
    read_case_records,
    study_case,
    study_case_source,
)

DEMO_STAND_IN = {"case_id": "D", "ct": "demo", "automatic": {"kind": "stand-in"}}


def _write(tmp_path: Path, entries) -> Path:
    p = tmp_path / "cases.json"
    p.write_text(json.dumps(entries))
    return p


@pytest.fixture
def files(tmp_path):
    """A CT file and a label file beside the cases file (never opened by the validation tests)."""
    (tmp_path / "scans").mkdir()
    for name in ("scans/ct.nii.gz", "scans/gtv.nii.gz", "other.nii.gz"):
        (tmp_path / name).write_bytes(b"not opened")
    return tmp_path


def test_paths_are_relative_to_the_cases_file(files):
    entry = {"case_id": " A1 ", "ct": "scans/ct.nii.gz", "manual": {"kind": "label", "path": "scans/gtv.nii.gz"},
             "automatic": {"kind": "file", "path": "other.nii.gz", "roi": "1"}, "metadata": {"location": "RUL"}}
    records = read_case_records(_write(files, [entry, DEMO_STAND_IN]))
    r = records[0]
    base = files.resolve()
    assert r.case_id == "A1" and r.metadata == {"location": "RUL"}
    assert r.source == CaseSource(str(base / "scans/ct.nii.gz"), AutomaticSource("file", path=str(base / "other.nii.gz"),
                                                                                 roi="1"),
                                  ManualSource("label", str(base / "scans/gtv.nii.gz")))
    assert records[1].source == CaseSource.demo(AutomaticSource("stand-in"))  # the demo's manual: phantom truth


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"case_id": "L2", "ct": "demo"}, r'entry 3 \(L2\): automatic: required, e.g. \{"kind": "model"\}'),
        ({"ct": "demo", "automatic": {"kind": "model"}}, r"entry 3: case_id: required"),
        ({**DEMO_STAND_IN, "case_id": "A"}, r"entry 3 \(A\): case_id 'A' is used by an earlier entry"),
        ({"case_id": "L2", "ct": "scans/ct.nii.gz", "automatic": {"kind": "model"}},
         r"entry 3 \(L2\): manual: required for a study"),
        ({"case_id": "L2", "ct": "scans/missing.zip", "manual": {"kind": "rtstruct", "roi": "GTV-1"},
          "automatic": {"kind": "model"}}, r"entry 3 \(L2\): ct: .*scans/missing.zip does not exist"),
        ({"case_id": "L2", "ct": "scans/ct.nii.gz", "manual": {"kind": "rtstruct", "roi": "GTV-1"},
          "automatic": {"kind": "file"}}, r"entry 3 \(L2\): an automatic contour of kind 'file' needs its path"),
        ({"case_id": "L2", "ct": "demo", "automatic": {"kind": "unet"}},
         r"entry 3 \(L2\): automatic contour kind 'unet': expected one of model, file, stand-in"),
        ({"case_id": "L2", "slices": [1, 2], "metadata": {}}, r"entry 3 \(L2\): .*no longer read: give ct, manual"),
        ({**DEMO_STAND_IN, "case_id": "L2", "colour": "red"}, r"entry 3 \(L2\): unknown field\(s\) colour"),
        ({**DEMO_STAND_IN, "case_id": "L2", "metadata": {"tumour_volume_ml": "big"}},
         r"entry 3 \(L2\): metadata tumour_volume_ml must be a number"),
        ({**DEMO_STAND_IN, "case_id": "L2", "metadata": {"source": "x"}}, r"entry 3 \(L2\): metadata: source"),
        ("LUNG1-002", r"entry 3: expected a JSON object"),
    ],
)
def test_bad_entry_is_refused_by_number_and_nothing_is_written(files, capsys, entry, message):
    path = _write(files, [{**DEMO_STAND_IN, "case_id": "A"}, {**DEMO_STAND_IN, "case_id": "B"}, entry])
    db = files / "s.db"
    assert cli_main(["study", "create", "s", "--db", str(db), "--cases", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    import re

    assert re.match(r"error: cases\.json " + message, captured.err), captured.err
    assert captured.out == ""  # refused before any case was opened
    with StudyStore(db) as s:
        assert s.studies() == []


def test_case_that_cannot_be_opened_is_refused_by_number(files, capsys):
    """Checked records that fail when opened (an unreadable CT) are refused the same way; nothing is written."""
    bad = {"case_id": "L9", "ct": "scans/ct.nii.gz", "manual": {"kind": "label", "path": "scans/gtv.nii.gz"},
           "automatic": {"kind": "stand-in"}}
    path = _write(files, [bad, DEMO_STAND_IN])
    db = files / "s.db"
    assert cli_main(["study", "create", "s", "--db", str(db), "--cases", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cases.json entry 1 (L9): ct.nii.gz: not a readable image") and err.count("\n") == 1
    assert not db.exists()


@pytest.mark.parametrize("text, message", [("{}", "expected a JSON list"), ("[]", "expected a JSON list"),
                                           ("[{", "not valid JSON")])
def test_bad_cases_file(tmp_path, text, message):
    p = tmp_path / "cases.json"
    p.write_text(text)
    with pytest.raises(StudyError, match=message):
        read_case_records(p)


# ----------------------------------------------------------------------------- reading studies back


@pytest.mark.parametrize(
    "metadata, expected",
    [
        ({"source": "demo", "roi": "phantom truth", "automatic": "perturbed-manual"},
         CaseSource.demo(AutomaticSource("stand-in"))),
        ({"source": "demo", "roi": "phantom truth", "automatic": "model"}, CaseSource.demo(AutomaticSource("model"))),
        ({"source": "/d/LUNG1-001.zip", "roi": "GTV-1", "automatic": "model"},
         CaseSource("/d/LUNG1-001.zip", AutomaticSource("model"), ManualSource("rtstruct", None, "GTV-1"))),
        # before case records a missing kind meant the stand-in: it still does, and says so
        ({"source": "/d/LUNG1-001.zip", "roi": "GTV-1"},
         CaseSource("/d/LUNG1-001.zip", AutomaticSource("stand-in"), ManualSource("rtstruct", None, "GTV-1"))),
    ],
)
def test_old_study_metadata_maps_to_case_sources(metadata, expected):
    assert study_case_source(metadata) == expected
    if expected.automatic.kind == "stand-in":
        assert automatic_label(metadata).startswith("stand-in")


@pytest.mark.parametrize("metadata, message", [
    ({"source": "demo", "automatic": "guess"}, "unknown automatic contour kind"),
    ({"slices": [1]}, "does not record where"),
    ({"source": "/d/x.zip", "automatic": "model"}, "ROI"),
])
def test_unreadable_study_metadata(metadata, message):
    with pytest.raises(StudyError, match=message):
        study_case_source(metadata)


class FakeModel:
    """A predictor with a version (the automatic contour is the stand-in of the true tumour)."""

    def __init__(self, version):
        self.version = version

    def predict(self, volume, lungs, post):
        from lungseg.imaging.phantom import demo_case

        return SimpleNamespace(mask=stand_in(demo_case()[1]))


def test_demo_study_case_records_its_source_and_refuses_another_model():
    source = CaseSource.demo(AutomaticSource("model"))
    spec, case = study_case("demo", source, FakeModel("unet-A"), metadata={"location": "LLL"})
    meta = spec.metadata.extra
    assert meta["source"] == source.as_dict() and meta["automatic_kind"] == "model"
    assert meta["model_version"] == "unet-A" and meta["automatic_description"] == "tumour model output"
    assert spec.metadata.location == "LLL"
    both = case.automatic.mask | case.manual.mask
    assert list(spec.slices) == [k for k in range(both.shape[0]) if both[k].any()] and spec.slices
    vol = case.manual.mask.sum() * case.ct.volume.voxel_volume_ml
    assert spec.metadata.tumour_volume_ml == pytest.approx(vol, abs=1e-3)
    stored = {"slices": list(spec.slices), **meta}
    assert study_case_source(stored) == source
    with pytest.raises(StudyError, match="set up with model unet-A, this install has unet-B"):
        open_study_case("demo", stored, FakeModel("unet-B"))


# ----------------------------------------------------------------------------- real data


def test_cli_study_on_lung1_001_with_another_tools_contour(data_dir, tmp_path, capsys):
    """LUNG1-001: manual = RTSTRUCT GTV-1, automatic = an independent rasterisation of it (a "file" contour)."""
    path = _write(tmp_path, [{"case_id": "LUNG1-001", "ct": str(data_dir / "LUNG1-001.zip"),
                              "manual": {"kind": "rtstruct", "roi": "GTV-1"},
                              "automatic": {"kind": "file", "path": str(data_dir / "reference/LUNG1-001_GTV-1.nii.gz")},
                              "metadata": {"location": "right lung"}}])
    db = tmp_path / "s.db"
    assert cli_main(["study", "create", "real", "--db", str(db), "--cases", str(path), "--slices-per-case", "4"]) == 0
    out = capsys.readouterr().out
    assert "LUNG1-001: " in out and "automatic: contour from LUNG1-001_GTV-1.nii.gz" in out
    assert "created study 'real' (id 1): 1 cases, 4 items" in out
    with StudyStore(db) as s:
        (row,) = s.cases("real")
    meta = row["metadata"]
    assert row["tumour_volume_ml"] == pytest.approx(155.8, rel=0.03)  # GTV-1 reference volume
    assert row["slice_thickness_mm"] == pytest.approx(3.0)
    assert meta["automatic_kind"] == "file" and meta["manual_name"] == "GTV-1" and row["location"] == "right lung"
    assert len(meta["slices"]) >= 15  # a 156 ml tumour on 3 mm slices spans many slices
    source = study_case_source(meta)
    assert source.manual == ManualSource("rtstruct", None, "GTV-1") and source.automatic.kind == "file"
    case = open_study_case("LUNG1-001", meta)
    # the automatic contour is the other tool's file (an independent rasterisation of the same ROI:
    # the shared README expects Dice >= 0.98 with the project's own RTSTRUCT reading)
    assert case.automatic.name == "LUNG1-001_GTV-1.nii.gz" and case.manual.name == "GTV-1"
    a, m = case.automatic.mask, case.manual.mask
    assert 2 * (a & m).sum() / (a.sum() + m.sum()) >= 0.98


def test_report_names_stand_in_cases(tmp_path):
    from lungseg.study import CaseMetadata, CaseSpec, DesignParams, authenticate_rater, format_report, study_report

    def spec(case_id, automatic):
        meta = {"source": CaseSource.demo(AutomaticSource(automatic)).as_dict(), "automatic_kind": automatic,
                "model_version": "unet-A" if automatic == "model" else None}
        return CaseSpec(case_id, (3, 4, 5), CaseMetadata.from_dict(meta))

    with StudyStore(tmp_path / "r.db") as s:
        s.create_study("mixed", [spec("M", "model"), spec("S", "stand-in")], DesignParams(slices_per_case=2),
                       actor="t")
        rater = authenticate_rater(s, s.invite_rater("mixed", "Dr A", "Radiologist", actor="t").token)
        while (item := s.next_item_for(rater)) is not None:
            s.cast_vote(rater, item.item_id, "left")
        report = study_report(s, "mixed")
    assert report["automatic_contours"] == {"kinds": {"model": 1, "stand-in": 1}, "stand_in": ["S"],
                                            "model_versions": ["unet-A"]}
    assert report["notes"][0].startswith("1 of 2 case(s) compare the manual contour with a STAND-IN")
    text = format_report(report)
    assert "Automatic contours: model 1, stand-in 1 (model unet-A)" in text and "WARNING: 1 of 2" in text
