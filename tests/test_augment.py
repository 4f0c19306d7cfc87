import pytest
import torch

from lungseg.tumour.augment import AffineParameters, Augmentation, affine_matrices, augment_batch, sample_parameters, warp


def squares(batch=8, size=64):
    images = torch.zeros(batch, size, size)
    images[:, 20:40, 24:44] = 1.0
    return images, images > 0.5


def test_image_and_mask_stay_aligned():
    images, masks = squares()
    out_images, out_masks = augment_batch(images, masks, Augmentation(hflip=True), torch.Generator().manual_seed(3))
    assert out_masks.dtype == torch.bool and out_masks.shape == masks.shape
    for image, mask in zip(out_images, out_masks):
        from_image = image >= 0.5
        iou = (from_image & mask).sum() / (from_image | mask).sum()
        assert iou >= 0.95


def test_deterministic_per_seed_and_varies_across_seeds():
    images, masks = squares()
    first = augment_batch(images, masks, Augmentation(), torch.Generator().manual_seed(7))
    again = augment_batch(images, masks, Augmentation(), torch.Generator().manual_seed(7))
    other = augment_batch(images, masks, Augmentation(), torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # one transform per sample: samples of a batch differ from each other
    assert not torch.equal(first[1][0], first[1][1])


def test_parameters_stay_in_the_seed_ranges():
    parameters = sample_parameters(2000, Augmentation(), torch.Generator().manual_seed(0))
    assert parameters.shift_x_fraction.abs().max() <= 0.1 and parameters.shift_y_fraction.abs().max() <= 0.1
    assert parameters.rotation_deg.abs().max() <= 10.0 and parameters.rotation_deg.abs().max() > 9.0
    assert parameters.zoom.min() >= 0.9 and parameters.zoom.max() <= 1.1
    assert not parameters.flip.any()  # horizontal flip is off by default
    flipped = sample_parameters(2000, Augmentation(hflip=True), torch.Generator().manual_seed(0)).flip.float().mean()
    assert 0.4 < flipped < 0.6


def test_identity_and_pure_shift():
    image = torch.zeros(1, 1, 16, 20)
    image[0, 0, :, 4] = 1.0
    identity = affine_matrices(AffineParameters.identity(1), 16, 20)
    assert torch.allclose(warp(image, identity), image, atol=1e-5)
    shifted = AffineParameters.identity(1)
    shifted = AffineParameters(torch.tensor([0.25], dtype=torch.float64), shifted.shift_y_fraction, shifted.rotation_deg, shifted.zoom, shifted.flip)
    out = warp(image, affine_matrices(shifted, 16, 20))  # 0.25 × 20 px = 5 px to the right
    assert torch.allclose(out[0, 0, :, 9], torch.ones(16), atol=1e-5)
    assert out[0, 0, :, 4].abs().max() < 1e-5


def test_rotation_keeps_a_centred_disc_and_zoom_scales_its_area():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) <= 10.0**2).float()[None, None]
    rotated = AffineParameters(*(torch.tensor([v], dtype=torch.float64) for v in (0.0, 0.0, 10.0, 1.0)), torch.tensor([False]))
    assert ((warp(disc, affine_matrices(rotated, 64, 64)) >= 0.5) == (disc >= 0.5)).float().mean() > 0.995
    zoomed = AffineParameters(*(torch.tensor([v], dtype=torch.float64) for v in (0.0, 0.0, 0.0, 1.1)), torch.tensor([False]))
    area_ratio = (warp(disc, affine_matrices(zoomed, 64, 64)) >= 0.5).sum() / (disc >= 0.5).sum()
    assert area_ratio.item() == pytest.approx(1.21, abs=0.05)


def test_exposed_border_is_filled_with_air():
    images = torch.ones(4, 1, 32, 32)
    masks = torch.zeros(4, 1, 32, 32)
    out, out_masks = augment_batch(images, masks, Augmentation(rotation_deg=0, zoom=0, width_shift=0.2, height_shift=0), torch.Generator().manual_seed(1))
    assert out.shape == (4, 1, 32, 32) and out_masks.dtype == torch.float32
    assert out.min() == pytest.approx(0.0, abs=1e-6)  # some columns shifted in from outside


def test_mismatched_batches_are_rejected():
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(2, 8, 8), torch.zeros(3, 8, 8), Augmentation(), torch.Generator())
