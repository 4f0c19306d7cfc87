"""``train --data reviews:DB``: a contour corrected elsewhere and recorded with ``review --edited`` is a
training case, with its provenance in the model card.  Needs the structure versions of the editing work
(``lungseg.structures``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("lungseg.structures")

from lungseg.cli import main as cli  # noqa: E402


def test_reviewed_and_corrected_contour_trains_with_its_provenance(data_dir, tmp_path, capsys):
    import SimpleITK as sitk

    from lungseg.training.reviews import review_cases

    db = tmp_path / "reviews.db"
    edited = data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"  # the contour as corrected in another tool
    assert cli(["review", str(data_dir / "LUNG1-001.zip"), "--db", str(db), "--accept", "automatic", "--name", "GTVp",
                "--edited", str(edited), "--user", "dr-a"]) == 0
    capsys.readouterr()
    cases = review_cases(str(db), tmp_path / "cache")
    assert [c.case_id for c in cases] == ["LUNG1-001"]
    review = cases[0].provenance["review"]
    assert [(r["structure"], r["provenance"], r["reviewer"]) for r in review] == [("GTVp", "SEMIAUTOMATIC", "dr-a")]
    contour = sitk.GetArrayFromImage(sitk.ReadImage(cases[0].manual.path)) > 0
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(edited))) > 0
    np.testing.assert_array_equal(contour, reference)

    out = tmp_path / "m.pt"
    assert cli(["train", "--data", f"reviews:{db}", "--out", str(out), "--steps", "2", "--batch-size", "2", "--crop", "64",
                "--device", "cpu"]) == 0
    card = out.with_suffix(".md").read_text()
    assert "| LUNG1-001 |" in card and "review database" in card
    assert "GTVp v" in card and "SEMIAUTOMATIC" in card and "dr-a" in card
    record = json.loads((tmp_path / "m.run" / "record.json").read_text())
    assert record["cases"][0]["provenance"]["source"] == f"reviews:{db}"
