"""The LIDC-IDRI nodule-crop reader and the patient-level split kept in the repo."""

import numpy as np
import pytest

from lungseg.errors import InputError
from lungseg.lesion.lidc import SPLIT_FILE, load_crop, nodules_in, read_nodules, read_split


@pytest.fixture(scope="module")
def lidc(data_dir):
    return data_dir / "lidc-nodules"


def test_reader_lists_every_crop_with_its_mask(lidc):
    nodules = read_nodules(lidc)
    assert len(nodules) == 896
    assert len({n.patient_id for n in nodules}) == 496
    assert {n.texture for n in nodules} == {"solid", "part-solid", "ground-glass"}
    first = next(n for n in nodules if n.crop == "LIDC-IDRI-0001_R_1")
    volume, mask = load_crop(first)
    assert volume.is_canonical and volume.shape == mask.shape
    assert volume.array.dtype == np.int16 and volume.array.min() >= -1100  # HU, not normalised
    assert mask.any()
    # the csv's world centroid lies inside the crop and near the mask's centre of mass
    com = volume.index_to_physical(np.argwhere(mask).mean(axis=0))[0]
    assert np.linalg.norm(com - np.asarray(first.centre_mm)) < first.diameter_mm


def test_split_file_has_no_patient_on_both_sides(lidc):
    lines = SPLIT_FILE.read_text().splitlines()[1:]
    patients = [ln.split(",")[0] for ln in lines]
    assert len(patients) == len(set(patients)), "a patient is listed twice in the split file"
    split = read_split()
    nodules = read_nodules(lidc)
    train = {n.patient_id for n in nodules_in(nodules, "train", split)}
    validation = {n.patient_id for n in nodules_in(nodules, "validation", split)}
    assert train and validation and not (train & validation)
    assert train | validation == {n.patient_id for n in nodules}
    assert 0.15 < len(validation) / (len(train) + len(validation)) < 0.25


def test_split_file_refuses_a_patient_on_both_sides(tmp_path):
    bad = tmp_path / "split.csv"
    bad.write_text("patient_id,split\nLIDC-IDRI-0001,train\nLIDC-IDRI-0001,validation\n")
    with pytest.raises(InputError, match="both sides"):
        read_split(bad)


def test_reader_refuses_a_folder_that_is_not_the_layout(tmp_path):
    with pytest.raises(InputError, match="not an LIDC crop folder"):
        read_nodules(tmp_path)


def test_evaluate_lesions_takes_patients_the_split_file_does_not_list(lidc, tmp_path, capsys):
    """A department's own crops (patients not in models/lidc_split.csv) are unseen: all evaluated."""
    import csv
    import json

    from lungseg.cli import main

    rows = list(csv.DictReader(open(lidc / "nodules.csv", newline="")))[:3]
    (tmp_path / "image").mkdir()
    (tmp_path / "nodule_mask").mkdir()
    for i, row in enumerate(rows):
        for sub in ("image", "nodule_mask"):
            (tmp_path / sub / f"DEPT-{i}.nii.gz").symlink_to(lidc / sub / f"{row['crop']}.nii.gz")
        row.update(crop=f"DEPT-{i}", patient_id="DEPT-PATIENT-1" if i < 2 else "DEPT-PATIENT-2")
    with open(tmp_path / "nodules.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["evaluate-lesions", str(tmp_path), "--json", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 3 and summary["patients"] == 2 and summary["unseen_patients"] == 2
    assert summary["median_dice"] > 0.5
    assert sum(g["n"] for g in summary["subtlety"].values()) == 3
    # never trained on: the train side of the same folder is empty
    assert nodules_in(read_nodules(tmp_path), "train") == []
