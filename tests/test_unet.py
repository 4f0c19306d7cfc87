import pytest
import torch

from lungseg.tumour.unet import UNet2D, count_parameters, crop_to_size, load_model, pad_to_multiple, save_model


def test_forward_keeps_slice_shape_and_outputs_logits():
    model = UNet2D().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 48))
    assert out.shape == (2, 1, 64, 48)
    assert out.dtype == torch.float32


def test_small_variants_and_group_norm():
    model = UNet2D(in_channels=2, out_channels=3, base_channels=4, depth=2, norm="group").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 2, 12, 20)).shape == (1, 3, 12, 20)


def test_rejects_sizes_not_divisible_by_two_to_the_depth():
    with pytest.raises(ValueError, match="pad_to_multiple"):
        UNet2D(depth=4)(torch.rand(1, 1, 40, 40))


def test_default_model_is_small():
    parameters = count_parameters(UNet2D())
    assert parameters * 4 <= 8_000_000  # float32 bytes


def test_pad_to_multiple_pads_with_air_and_crops_back():
    images = torch.rand(3, 1, 50, 37) + 0.5
    padded, size = pad_to_multiple(images, 16)
    assert padded.shape == (3, 1, 64, 48)
    assert size == (50, 37)
    assert torch.all(padded[..., 50:, :] == 0) and torch.all(padded[..., :, 37:] == 0)
    assert torch.equal(crop_to_size(padded, size), images)
    same, _ = pad_to_multiple(torch.rand(1, 1, 32, 32), 16)
    assert same.shape == (1, 1, 32, 32)


def test_save_load_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = UNet2D(base_channels=8, depth=3).eval()
    path = save_model(model, tmp_path / "model.pt", {"window": {"low": -1000.0, "high": 150.0}})
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"state_dict", "meta"}
    assert payload["meta"]["architecture"]["base_channels"] == 8
    assert path.stat().st_size <= 20_000_000
    loaded, meta = load_model(path)
    assert meta["window"]["low"] == -1000.0
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images), loaded(images), atol=5e-2)


def test_default_weights_file_fits_the_size_budget(tmp_path):
    path = save_model(UNet2D(), tmp_path / "model.pt")
    assert path.stat().st_size <= 8_000_000
