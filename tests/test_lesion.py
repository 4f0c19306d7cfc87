"""Click-to-segment: the library call, `segment-lesion` and `evaluate-lesions` on real LIDC crops and LUNG1-001."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lungseg.cli import main
from lungseg.imaging.volume import Grid, Volume
from lungseg.lesion.lidc import load_crop, read_nodules
from lungseg.lesion.patch import PatchGrid, patch_to_volume, sample_patch
from lungseg.lesion.segment import DEFAULT_LESION_MODEL, click_inside
from lungseg.metrics import dice

REPO = DEFAULT_LESION_MODEL.parents[1]
# validation patients only (models/lidc_split.csv): one of each texture, one under 6 mm
CROPS = {"solid": "LIDC-IDRI-0043_R_2", "part-solid": "LIDC-IDRI-0756_R_1", "ground-glass": "LIDC-IDRI-0048_R_3",
         "small": "LIDC-IDRI-0142_R_1"}


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lungseg", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def lidc(data_dir):
    return {n.crop: n for n in read_nodules(data_dir / "lidc-nodules")}


def test_shipped_weights_are_small_and_load_without_pickle():
    assert DEFAULT_LESION_MODEL.stat().st_size <= 5_000_000
    payload = torch.load(DEFAULT_LESION_MODEL, map_location="cpu", weights_only=True)
    assert payload["meta"]["grid"]["spacing_zyx"] and "validation" not in payload["meta"]["trained_on"]


def test_patch_sampling_lands_on_the_right_millimetres():
    # a ramp in x (mm) on an anisotropic grid: the patch must read back its own physical x
    spacing = (0.7, 0.7, 2.5)
    z, y, x = np.mgrid[0:10, 0:50, 0:60]
    volume = Volume((x * spacing[0] + 5.0).astype(np.float32), spacing, (5.0, -3.0, 100.0))
    grid = PatchGrid((110.0, 10.0, 20.0), (1.25, 0.75, 0.75), (8, 16, 16))
    values, inside = sample_patch(volume.array, np.asarray(volume.origin)[::-1], volume.spacing_zyx, grid)
    assert np.allclose(values[0, 0], grid.axis_mm(2), atol=1e-3) and inside.all()
    box, back = patch_to_volume(values, grid, volume.shape, np.asarray(volume.origin)[::-1], volume.spacing_zyx)
    assert np.allclose(back, volume.array[box], atol=1e-3)


def test_segment_lesion_on_a_small_crop_writes_the_nodule_on_the_crop_grid(lidc, tmp_path):
    nodule = lidc[CROPS["solid"]]
    volume, reference = load_crop(nodule)
    x, y, z = volume.index_to_physical(np.asarray(click_inside(reference, volume.spacing_zyx), float))[0]
    out = tmp_path / "lesion.nii.gz"
    r = run_cli("segment-lesion", nodule.image_path, f"--at={x:.2f},{y:.2f},{z:.2f}", "--out", out)
    assert r.returncode == 0, r.stderr
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(nodule.image_path))
    assert Grid.of(written).matches(Grid.of(source))
    assert dice(sitk.GetArrayFromImage(written) > 0, sitk.GetArrayFromImage(sitk.ReadImage(str(nodule.mask_path))) > 0) >= 0.7


def test_segment_lesion_on_lung1_001_contours_the_large_primary(data_dir, tmp_path):
    reference = sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))
    ref = sitk.GetArrayFromImage(reference) > 0
    com = np.argwhere(ref).mean(axis=0)[::-1]  # x, y, z continuous index
    x, y, z = reference.TransformContinuousIndexToPhysicalPoint(com.tolist())
    out = tmp_path / "gtv.nii.gz"
    r = run_cli("segment-lesion", data_dir / "LUNG1-001.zip", f"--at={x:.2f},{y:.2f},{z:.2f}", "--out", out, timeout=180)
    assert r.returncode == 0, r.stderr
    written = sitk.ReadImage(str(out))
    assert Grid.of(written).matches(Grid.of(reference))  # the reference masks are on the CT's own grid
    assert dice(sitk.GetArrayFromImage(written) > 0, ref) >= 0.6


def test_evaluate_lesions_json_on_each_texture(data_dir):
    r = run_cli("evaluate-lesions", data_dir / "lidc-nodules", "--json", "--per-crop", "--baseline", "--threads", "1",
                "--crops", ",".join(CROPS.values()))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n"] == 4 and summary["split"] == "validation"
    assert summary["median_dice"] >= 0.72 and all(c["dice"] >= 0.6 for c in summary["crops"])
    assert set(summary["textures"]) == {"solid", "part-solid", "ground-glass"}
    assert summary["bands"]["<6 mm"]["median_dice"] >= 0.75
    assert summary["baseline_median_dice"] is not None


def test_evaluate_lesions_refuses_a_train_crop_on_the_validation_side(data_dir, capsys):
    assert main(["evaluate-lesions", str(data_dir / "lidc-nodules"), "--crops", "LIDC-IDRI-0001_R_1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "LIDC-IDRI-0001_R_1" in err and "\n" not in err


@pytest.mark.parametrize("at, message", [("12,abc,3", "expected three numbers"), ("1,2", "expected three numbers"),
                                         ("9000,0,0", "outside the volume")])
def test_segment_lesion_bad_click_is_a_one_line_error(lidc, tmp_path, capsys, at, message):
    code = main(["segment-lesion", str(lidc[CROPS["solid"]].image_path), f"--at={at}", "--out", str(tmp_path / "m.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "m.nii.gz").exists()


def test_segment_at_reuses_one_predictor_and_measures_each_texture(lidc):
    from lungseg.lesion import LesionPredictor, segment_at

    predictor = LesionPredictor()
    for texture in ("solid", "part-solid", "ground-glass"):
        volume, reference = load_crop(lidc[CROPS[texture]])
        point = volume.index_to_physical(np.asarray(click_inside(reference, volume.spacing_zyx), float))[0]
        result = segment_at(volume, point, predictor)
        assert result.mask.shape == volume.shape and result.found and not result.larger_than_view
        reference_ml = reference.sum() * volume.voxel_volume_ml
        assert 0.5 <= result.volume_ml / reference_ml <= 2.0, texture
        assert result.volume_ml == pytest.approx(result.mask.sum() * volume.voxel_volume_ml)
        assert result.longest_axial_diameter_mm >= 0.8 * result.equivalent_diameter_mm > 0


def test_segment_lesion_answers_on_the_grid_of_a_ras_stored_input(lidc, tmp_path, capsys):
    nodule = lidc[CROPS["ground-glass"]]
    image = sitk.DICOMOrient(sitk.ReadImage(str(nodule.image_path)), "RAS")  # same voxels in space, flipped storage
    mask = sitk.DICOMOrient(sitk.ReadImage(str(nodule.mask_path)), "RAS")
    sitk.WriteImage(image, str(tmp_path / "ras.nii.gz"))
    volume, reference = load_crop(nodule)
    x, y, z = volume.index_to_physical(np.asarray(click_inside(reference, volume.spacing_zyx), float))[0]
    out = tmp_path / "m.nii.gz"
    assert main(["segment-lesion", str(tmp_path / "ras.nii.gz"), f"--at={x:.2f},{y:.2f},{z:.2f}", "--out", str(out)]) == 0
    written = sitk.ReadImage(str(out))
    assert Grid.of(written).matches(Grid.of(image)) and written.GetDirection() != (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert dice(sitk.GetArrayFromImage(written) > 0, sitk.GetArrayFromImage(mask) > 0) >= 0.7
