import json

import numpy as np
import pytest
import torch

from lungseg.tumour.losses import LossSchedule
from lungseg.tumour.train import History, SliceDataset, TrainConfig, plot_history, train
from lungseg.tumour.unet import UNetConfig, load_model


def disc_case(count, size, rng, negative_every=3):
    """Noise slices in [0, 0.4]; all but every third carry a bright disc (the tumour)."""
    yy, xx = np.mgrid[:size, :size]
    images = rng.uniform(0.0, 0.4, (count, size, size)).astype(np.float32)
    masks = np.zeros((count, size, size), bool)
    for index in range(count):
        if index % negative_every == negative_every - 1:
            continue
        radius = rng.uniform(4, 10)
        centre_y, centre_x = rng.uniform(radius + 2, size - radius - 2, 2)
        disc = (yy - centre_y) ** 2 + (xx - centre_x) ** 2 <= radius**2
        images[index][disc] = rng.uniform(0.6, 0.9)
        masks[index] = disc
    return images, masks


TINY = UNetConfig(base_channels=8, depth=3)


def test_slice_dataset_samples_negatives_at_the_ratio():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.1, 1.0, (40, 40, 40)).astype(np.float32)
    masks = np.zeros((40, 40, 40), bool)
    masks[:10, 15:20, 15:20] = True  # 10 positive slices, 30 negative
    dataset = SliceDataset([(images, masks)], negative_ratio=0.5, crop_size=32, seed=1)
    assert len(dataset) == 15
    first_negatives = dataset.items[10:]
    dataset.set_epoch(1)
    assert dataset.items[:10] == [(0, k) for k in range(10)]
    assert dataset.items[10:] != first_negatives  # redrawn every epoch
    dataset.set_epoch(0)
    assert dataset.items[10:] == first_negatives  # deterministic
    image, mask = dataset[3]
    assert image.shape == (1, 32, 32) and mask.shape == (1, 32, 32)
    assert mask.sum() > 0  # positive crops contain tumour
    assert torch.equal(dataset[3][0], image)


def test_whole_slice_dataset_pads_to_a_common_multiple():
    small = (np.ones((2, 30, 20), np.float32), np.ones((2, 30, 20), bool))
    large = (np.ones((1, 40, 33), np.float32), np.zeros((1, 40, 33), bool))
    dataset = SliceDataset([small, large], negative_ratio=1.0, crop_size=None, size_multiple=16, random_crop=False)
    assert dataset.padded_size == (48, 48)
    image, mask = dataset[0]
    assert image.shape == (1, 48, 48) and image[0, 35, 0] == 0.0 and mask.sum() == 600


def test_tiny_training_run_lowers_the_loss(tmp_path):
    rng = np.random.default_rng(0)
    train_cases = [disc_case(24, 64, rng) for _ in range(2)]
    val_cases = [disc_case(9, 64, rng)]
    config = TrainConfig(epochs=4, batch_size=8, lr=3e-3, crop_size=48, unet=TINY)
    history = train(config, train_cases, val_cases, tmp_path, resume=False, progress=False, case_ids=["a", "b"])
    assert history.epoch == [0, 1, 2, 3]
    assert history.loss[-1] < history.loss[0]
    assert history.val_dice[-1] > 0.3
    assert history.dice_weight == [0.9] * 4  # before epoch 50: the early weights
    assert json.loads((tmp_path / "history.json").read_text())["loss"] == history.loss
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["training_cases"] == ["a", "b"]
    assert meta["window"] == {"low": -1000.0, "high": 150.0}
    assert meta["architecture"]["base_channels"] == 8
    assert (tmp_path / "model_best.pt").exists()


def tiny_config(**changes):
    values = dict(epochs=3, batch_size=4, lr=3e-3, crop_size=32, unet=UNetConfig(base_channels=4, depth=2))
    return TrainConfig(**{**values, **changes})


def test_resume_continues_exactly_from_the_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    cases = [disc_case(12, 32, rng)]
    config = tiny_config(schedule=LossSchedule(switch_epoch=2))
    straight = train(config, cases, cases, tmp_path / "straight", resume=False, progress=False)

    first = train(config, cases, cases, tmp_path / "resumed", resume=False, progress=False, max_epochs_this_call=1)
    assert first.epoch == [0]
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    resumed = train(config, cases, cases, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.epoch == [0, 1, 2]
    assert resumed.dice_weight == [0.9, 0.9, 0.5]
    np.testing.assert_allclose(resumed.loss, straight.loss, rtol=1e-5)
    np.testing.assert_allclose(resumed.val_loss, straight.val_loss, rtol=1e-5)
    np.testing.assert_allclose(resumed.lr, straight.lr, rtol=1e-9)
    finished = train(config, cases, cases, tmp_path / "resumed", resume=True, progress=False)
    assert finished.epoch == [0, 1, 2]  # nothing left to do


def test_resume_refuses_another_architecture(tmp_path):
    rng = np.random.default_rng(2)
    cases = [disc_case(6, 32, rng)]
    train(tiny_config(epochs=1, augmentation=None), cases, None, tmp_path, resume=False, progress=False)
    other = tiny_config(epochs=2, unet=UNetConfig(base_channels=8, depth=2))
    with pytest.raises(ValueError, match="architecture"):
        train(other, cases, None, tmp_path, progress=False)


def test_plot_history_writes_png_and_offline_html(tmp_path):
    history = History()
    for epoch in range(4):
        history.append(
            epoch=epoch, loss=1.0 / (epoch + 1), val_loss=None if epoch == 0 else 1.2 / (epoch + 1),
            dice=0.2 * epoch, val_dice=None if epoch == 0 else 0.15 * epoch, lr=1e-3 / (epoch + 1),
            dice_weight=0.9 if epoch < 2 else 0.5, bce_weight=0.1 if epoch < 2 else 0.5, seconds=1.0,
        )
    written = plot_history(history, tmp_path)
    assert set(written) == {f"{name}_{kind}" for name in ("loss", "dice", "learning_rate") for kind in ("png", "html")}
    for path in written.values():
        assert path.exists() and path.stat().st_size > 1000
    html = written["loss_html"].read_text()
    assert '<script src="https://cdn' not in html and "plotly" in html
    assert History.from_dict(history.as_dict()) == history
