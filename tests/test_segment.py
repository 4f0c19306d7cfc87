"""Prediction plumbing: preprocessing, grid round trip, post-processing, CLI."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lungseg.lungs import isolate
from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct
from lungseg.tumour.segment import PostProcess, TumourPredictor, postprocess, prepare_slices
from lungseg.tumour.unet import UNet2D, save_model


@pytest.fixture(scope="module")
def phantom():
    p = synthetic_chest_ct(PhantomSpec(shape_zyx=(40, 160, 160), spacing_zyx=(3.0, 2.0, 2.0), seed=2))
    return p, isolate(p.ct)


def test_prepare_slices_crops_resamples_and_isolates(phantom):
    p, lungs = phantom
    stack = prepare_slices(p.ct, lungs, p.tumour, in_plane_mm=1.0)
    assert list(stack.slices) == list(np.nonzero(lungs.lung_region.any(axis=(1, 2)))[0])
    h = stack.box[0].stop - stack.box[0].start
    assert stack.images.shape[1] == pytest.approx(2 * h, abs=1)  # 2 mm → 1 mm pixels
    assert stack.images.min() >= 0 and stack.images.max() <= 1
    # tumour area in mm² is preserved by the resampling
    area_in = p.tumour.sum() * 4.0
    area_out = stack.masks.sum() * 1.0
    assert area_out == pytest.approx(area_in, rel=0.1)


class _Oracle(torch.nn.Module):
    """Fires where the isolated image is soft tissue: a known 'model' for plumbing tests."""

    def forward(self, x):
        return (x - 0.75) * 50


def test_predictor_maps_back_onto_the_ct_grid(phantom, tmp_path):
    p, lungs = phantom
    model = UNet2D(base_channels=4, depth=2)
    path = save_model(model, tmp_path / "m.pt", {"in_plane_mm": 1.0})
    predictor = TumourPredictor(path, "cpu")
    predictor.model = _Oracle()
    pred = predictor.predict(p.ct, lungs, PostProcess(min_volume_ml=0.5))
    assert pred.mask.shape == p.ct.shape and pred.probability.dtype == np.float32
    # the dense tumour lies in the region, so the oracle finds it where it truly is
    assert (pred.mask & p.tumour).sum() / p.tumour.sum() > 0.7
    assert not (pred.mask & ~lungs.lung_region).any() or (pred.mask & lungs.lung_region).sum() > 0.5 * pred.mask.sum()


def test_postprocess_drops_small_and_outside_components():
    region = np.zeros((5, 20, 20), bool)
    region[:, :10] = True
    prob = np.zeros((5, 20, 20), np.float32)
    prob[1:4, 2:6, 2:6] = 0.9  # big, inside
    prob[2, 8, 15] = 0.9  # one voxel: too small
    prob[1:4, 14:18, 14:18] = 0.9  # outside the region
    out = postprocess(prob, region, voxel_ml=0.01, post=PostProcess(min_volume_ml=0.05))
    assert out[2, 3, 3] and not out[2, 8, 15] and not out[2, 15, 15]
    both = prob.copy()
    both[1:3, 2:4, 7:9] = 0.0
    both[1:4, 7:9, 7:9] = 0.9
    largest = postprocess(both, region, 0.01, PostProcess(min_volume_ml=0.0, keep_largest=True))
    assert largest[2, 3, 3] and not largest[2, 8, 8]


def test_bad_model_file_is_a_clear_error(tmp_path):
    from lungseg.errors import LungsegError

    (tmp_path / "x.pt").write_bytes(b"not a model")
    with pytest.raises(LungsegError, match="not a lungseg model"):
        TumourPredictor(tmp_path / "x.pt", "cpu")
    with pytest.raises(LungsegError, match="not found"):
        TumourPredictor(tmp_path / "missing.pt", "cpu")


def test_cli_lungs_and_segment_write_on_the_input_grid(tmp_path, phantom):
    p, _ = phantom
    image = p.ct.to_sitk()
    flipped = sitk.Flip(image, [True, False, False])  # stored RAS-like in x
    sitk.WriteImage(flipped, str(tmp_path / "ct.nii.gz"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "lungseg", *a], capture_output=True, text=True, timeout=300)
    r = run("lungs", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "lungs.nii.gz"), "--region-out", str(tmp_path / "region.nii.gz"))
    assert r.returncode == 0, r.stderr
    assert "lungs L" in r.stdout and "ml" in r.stdout
    out = sitk.ReadImage(str(tmp_path / "lungs.nii.gz"))
    assert out.GetDirection() == flipped.GetDirection() and out.GetOrigin() == flipped.GetOrigin()
    arr = sitk.GetArrayFromImage(out) > 0
    # left against right: split the written mask at the spine by the file's own geometry (patient left is +x in
    # LPS, at low stored x in this flipped file); each side must be that side's lung.  A mask written without
    # being flipped back puts the larger right lung on the left and scores Dice 0.70 here.
    x_mm = np.array([out.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(out.GetSize()[0])])
    on_left = np.broadcast_to(x_mm > p.spine_x_mm, arr.shape)
    in_file = lambda m: sitk.GetArrayFromImage(sitk.Flip(p.ct.to_sitk(m.astype(np.uint8)), [True, False, False])) > 0
    left_truth, right_truth = in_file(p.left_lung), in_file(p.right_lung)
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice(arr & on_left, left_truth) > 0.95 and dice(arr & ~on_left, right_truth) > 0.95
    assert (arr & on_left).sum() < 0.7 * (arr & ~on_left).sum()  # the phantom's left lung is the smaller (heart)

    model = UNet2D(base_channels=4, depth=2)
    save_model(model, tmp_path / "m.pt", {"in_plane_mm": 1.0})
    r = run("segment", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "t.nii.gz"), "--model", str(tmp_path / "m.pt"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sitk.ReadImage(str(tmp_path / "t.nii.gz")).GetSize() == flipped.GetSize()

    r = run("lungs", str(tmp_path / "nothing.nii.gz"), "--out", str(tmp_path / "x.nii.gz"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
