"""The seed's Keras-style augmentation for batches of 2D slices, identical for image and mask.

Per sample one random affine transform is drawn (all uniform):

* width shift ``± width_shift · width`` pixels, height shift ``± height_shift · height`` pixels
  (positive moves the content right / down);
* rotation ``± rotation_deg`` degrees about the slice centre;
* isotropic zoom factor in ``[1 − zoom, 1 + zoom]`` (> 1 enlarges the content; one factor for
  both axes so anatomy keeps its aspect ratio, unlike Keras' independent x/y zoom);
* horizontal flip with probability ½ **only if** ``hflip=True`` (default off: left and right
  lungs differ, and the seed did not flip).

The image is resampled bilinearly with everything that comes from outside the slice filled with
``fill_value`` (default 0.0 = air in the model window); the mask is resampled bilinearly with the
same transform and thresholded at 0.5, which keeps it aligned with the image to sub-pixel
accuracy. Random numbers come from a caller-supplied ``torch.Generator`` so a seed fixes the
result. Works on CPU and CUDA tensors (parameters are drawn on the CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random affine transform (fractions of the slice size, degrees, zoom)."""

    width_shift: float = 0.1
    height_shift: float = 0.1
    rotation_deg: float = 10.0
    zoom: float = 0.1
    hflip: bool = False
    fill_value: float = 0.0  # air in lungseg.imaging.harmonise.MODEL_WINDOW

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AffineParameters:
    """One row per sample: shifts as fractions of width/height, angle in degrees, zoom factor,
    flip flag."""

    shift_x_fraction: torch.Tensor
    shift_y_fraction: torch.Tensor
    rotation_deg: torch.Tensor
    zoom: torch.Tensor
    flip: torch.Tensor  # bool

    @classmethod
    def identity(cls, count: int) -> "AffineParameters":
        zeros = torch.zeros(count, dtype=torch.float64)
        return cls(zeros, zeros.clone(), zeros.clone(), torch.ones(count, dtype=torch.float64), torch.zeros(count, dtype=torch.bool))


def sample_parameters(count: int, augmentation: Augmentation, generator: torch.Generator) -> AffineParameters:
    """Draw ``count`` independent transforms from the ranges of ``augmentation``."""

    def uniform(half_range: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * half_range

    shift_x = uniform(augmentation.width_shift)
    shift_y = uniform(augmentation.height_shift)
    angle = uniform(augmentation.rotation_deg)
    zoom = 1.0 + uniform(augmentation.zoom)
    flip_draw = torch.rand(count, generator=generator, dtype=torch.float64)
    flip = (flip_draw < 0.5) if augmentation.hflip else torch.zeros(count, dtype=torch.bool)
    return AffineParameters(shift_x, shift_y, angle, zoom, flip)


def affine_matrices(parameters: AffineParameters, height: int, width: int) -> torch.Tensor:
    """``[count, 2, 3]`` float32 matrices for ``F.affine_grid(align_corners=False)``.

    The forward (content) transform in pixel units about the slice centre is
    ``p_out = zoom · R(angle) · Flip · p_in + shift``; ``affine_grid`` needs its inverse, which maps
    output positions to input positions. Built in pixel units and then converted to normalised
    coordinates so rotations stay rotations on non-square slices.
    """
    count = parameters.zoom.shape[0]
    angle = torch.deg2rad(parameters.rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip_sign = torch.where(parameters.flip, -1.0, 1.0).to(torch.float64)

    forward = torch.zeros(count, 2, 2, dtype=torch.float64)
    forward[:, 0, 0] = cos * flip_sign
    forward[:, 0, 1] = -sin
    forward[:, 1, 0] = sin * flip_sign
    forward[:, 1, 1] = cos
    forward = forward * parameters.zoom[:, None, None]
    inverse = torch.linalg.inv(forward)

    shift_pixels = torch.stack([parameters.shift_x_fraction * width, parameters.shift_y_fraction * height], dim=1)
    translation = -(inverse @ shift_pixels[:, :, None])[:, :, 0]

    # normalised coordinate n = p / half_size (align_corners=False, p measured from the centre)
    half_size = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64)
    theta = torch.empty(count, 2, 3, dtype=torch.float64)
    theta[:, :, :2] = inverse * half_size[None, None, :] / half_size[None, :, None]
    theta[:, :, 2] = translation / half_size[None, :]
    return theta.float()


def warp(images: torch.Tensor, theta: torch.Tensor, fill_value: float = 0.0) -> torch.Tensor:
    """Bilinear resampling of ``images [B, C, H, W]`` by ``theta [B, 2, 3]``; points that fall
    outside the slice take ``fill_value``."""
    theta = theta.to(device=images.device, dtype=torch.float32)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    shifted = images.float() - fill_value
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill_value


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    augmentation: Augmentation,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random transform per sample to ``images`` and ``masks`` alike.

    ``images``: float ``[B, H, W]`` or ``[B, C, H, W]``; ``masks``: same layout, bool or 0/1 float.
    Returns float32 images and masks of the masks' dtype (thresholded at 0.5), same shapes.
    """
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not match")
    squeeze_images = images.dim() == 3
    squeeze_masks = masks.dim() == 3
    images_4d = images[:, None] if squeeze_images else images
    masks_4d = masks[:, None] if squeeze_masks else masks

    height, width = images.shape[-2:]
    theta = affine_matrices(sample_parameters(images.shape[0], augmentation, generator), height, width)
    warped_images = warp(images_4d, theta, augmentation.fill_value)
    warped_masks = warp(masks_4d.float(), theta, 0.0) >= 0.5
    warped_masks = warped_masks if masks.dtype == torch.bool else warped_masks.to(masks.dtype)

    if squeeze_images:
        warped_images = warped_images[:, 0]
    if squeeze_masks:
        warped_masks = warped_masks[:, 0]
    return warped_images, warped_masks

