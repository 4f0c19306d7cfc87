import numpy as np
import pytest
from scipy import ndimage

from lungseg.errors import InputError
from lungseg.tumour.synthetic import (
    BORDER_KINDS,
    LesionKind,
    TumourSpec,
    estimate_noise_sd,
    insert_tumours,
    insert_tumours_detailed,
)

NOISE_SD = 20.0
LUNG_CENTRE_X_MM = 65.0


def chest(shape=(36, 100, 130), spacing=(2.5, 2.0, 2.0), seed=0):
    """Soft-tissue body ellipse with two ellipsoidal lungs (−850 HU) and white noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    hu = np.full(shape, -1000.0, np.float32)
    hu[(x / 128) ** 2 + (y / 98) ** 2 <= 1] = 40.0
    lungs = np.zeros(shape, bool)
    for centre_x in (-LUNG_CENTRE_X_MM, LUNG_CENTRE_X_MM):
        lungs |= ((x - centre_x) / 50) ** 2 + (y / 75) ** 2 + (z / 60) ** 2 <= 1
    hu[lungs] = -850.0
    hu += rng.normal(0, NOISE_SD, shape).astype(np.float32)
    return hu, lungs, spacing, x


def one_kind(kind, diameter_mm, seed=0, **phantom):
    hu, lungs, spacing, x_mm = chest(**phantom)
    spec = TumourSpec(kinds=(kind,), lesion_count_range=(1, 1), diameter_range_mm=(diameter_mm, diameter_mm))
    return hu, lungs, spacing, x_mm, insert_tumours_detailed(hu, spacing, lungs, np.random.default_rng(seed), spec)


def equivalent_diameter_mm(mask, spacing):
    return (6.0 * mask.sum() * np.prod(spacing) / np.pi) ** (1.0 / 3.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_default_insertion_puts_one_to_three_lesions_in_the_lungs(seed):
    hu, lungs, spacing, _ = chest()
    original = hu.copy()
    result = insert_tumours_detailed(hu, spacing, lungs, np.random.default_rng(seed))
    assert np.array_equal(hu, original)  # input untouched
    assert result.hu.dtype == np.float32 and result.mask.dtype == bool
    assert 1 <= len(result.lesions) <= 3
    assert result.mask.any()
    border = any(lesion.kind in BORDER_KINDS for lesion in result.lesions)
    inside = (result.mask & lungs).sum() / result.mask.sum()
    assert inside >= (0.8 if border else 1.0)
    for lesion in result.lesions:
        assert 4.0 <= lesion.diameter_mm <= 80.0
    if not any(lesion.kind is LesionKind.SPICULATED for lesion in result.lesions):
        far_away = ndimage.distance_transform_edt(~result.mask, sampling=spacing) > 15.0
        assert np.array_equal(result.hu[far_away], original[far_away])


def test_spicules_reach_beyond_the_body():
    # 1 mm pixels: at 2 mm the strands are sub-voxel and only faintly visible, as in real CT
    hu, lungs, spacing, _, result = one_kind(LesionKind.SPICULATED, 30.0, seed=1, shape=(36, 200, 260), spacing=(2.5, 1.0, 1.0))
    distance_mm = ndimage.distance_transform_edt(~result.mask, sampling=spacing)
    strands = (distance_mm > 4.0) & (result.hu - hu > 150.0) & lungs
    assert strands.sum() >= 30


def test_tuple_interface_and_determinism():
    hu, lungs, spacing, _ = chest()
    first = insert_tumours(hu, spacing, lungs, np.random.default_rng(5))
    again = insert_tumours(hu, spacing, lungs, np.random.default_rng(5))
    other = insert_tumours(hu, spacing, lungs, np.random.default_rng(6))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("kind", [LesionKind.LOBULATED, LesionKind.SPICULATED, LesionKind.JUXTAPLEURAL, LesionKind.HILAR])
def test_solid_lesions_have_soft_tissue_attenuation(kind):
    _, _, _, _, result = one_kind(kind, 30.0)
    core = ndimage.binary_erosion(result.mask, iterations=2)
    assert core.sum() > 20
    assert -20.0 <= result.hu[core].mean() <= 80.0
    assert 0.0 <= result.lesions[0].solid_mean_hu <= 60.0


def test_part_solid_lesion_has_ground_glass_and_a_solid_core():
    _, lungs, _, _, result = one_kind(LesionKind.PART_SOLID, 40.0, seed=1)
    values = result.hu[result.mask]
    ground_glass = ((values > -650) & (values < -150)).mean()
    assert ground_glass >= 0.3
    assert (values > -100).sum() >= 10
    assert (result.mask & ~lungs).sum() == 0


@pytest.mark.parametrize("diameter_mm", [8.0, 20.0, 45.0])
def test_size_in_millimetres(diameter_mm):
    _, _, spacing, _, result = one_kind(LesionKind.LOBULATED, diameter_mm, seed=2)
    assert result.lesions[0].diameter_mm == pytest.approx(diameter_mm)
    assert 0.7 * diameter_mm <= equivalent_diameter_mm(result.mask, spacing) <= 1.3 * diameter_mm


def test_size_with_thick_anisotropic_slices():
    _, _, spacing, _, result = one_kind(LesionKind.LOBULATED, 30.0, seed=4, shape=(18, 160, 200), spacing=(5.0, 1.25, 1.25))
    assert 21.0 <= equivalent_diameter_mm(result.mask, spacing) <= 39.0
    z_extent_mm = np.flatnonzero(result.mask.any(axis=(1, 2))).size * spacing[0]
    x_extent_mm = np.flatnonzero(result.mask.any(axis=(0, 1))).size * spacing[2]
    assert 15.0 <= z_extent_mm <= 50.0 and 15.0 <= x_extent_mm <= 50.0


def contact_offset_mm(result, lungs, x_mm):
    """Medial offset (mm, + toward the body midline) from the lesion centre to where the lesion
    meets non-lung tissue, and the total distance."""
    contact = ndimage.binary_dilation(result.mask) & ~lungs
    assert contact.any(), "the lesion does not touch the lung border"
    centre = result.lesions[0].centre_zyx
    lesion_x = x_mm[centre]
    offset_x = x_mm[contact].mean() - lesion_x
    return offset_x * -np.sign(lesion_x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hilar_lesions_touch_the_medial_lung_border(seed):
    _, lungs, _, x_mm, result = one_kind(LesionKind.HILAR, 20.0, seed=seed)
    assert contact_offset_mm(result, lungs, x_mm) > 3.0
    assert (result.mask & lungs).sum() / result.mask.sum() >= 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_juxtapleural_lesions_touch_the_chest_wall(seed):
    _, lungs, _, x_mm, result = one_kind(LesionKind.JUXTAPLEURAL, 20.0, seed=seed)
    assert contact_offset_mm(result, lungs, x_mm) < 3.0  # lateral, anterior or posterior, not medial
    assert (result.mask & lungs).sum() / result.mask.sum() >= 0.8


def test_noise_is_estimated_and_matched_inside_the_lesion():
    hu, lungs, spacing, _ = chest()
    assert estimate_noise_sd(hu, lungs) == pytest.approx(NOISE_SD, rel=0.15)
    _, _, _, _, result = one_kind(LesionKind.LOBULATED, 40.0, seed=3)
    core = ndimage.binary_erosion(result.mask, iterations=3)

    def high_pass_sd(volume, region):
        residual = volume - np.stack([ndimage.gaussian_filter(s, 1.0) for s in volume])
        return residual[region].std()

    background = ndimage.binary_erosion(lungs, iterations=3) & ~ndimage.binary_dilation(result.mask, iterations=5)
    ratio = high_pass_sd(result.hu, core) / high_pass_sd(result.hu, background)
    assert 0.7 <= ratio <= 1.5


def test_no_room_is_an_input_error():
    hu, lungs, spacing, _ = chest()
    with pytest.raises(InputError):
        insert_tumours(hu, spacing, np.zeros_like(lungs), np.random.default_rng(0))
    speck = np.zeros_like(lungs)
    speck[18, 50, 30] = True
    with pytest.raises(InputError):
        insert_tumours(hu, spacing, speck, np.random.default_rng(0), TumourSpec(kinds=(LesionKind.LOBULATED,)))


def test_vessel_holes_in_the_lung_mask_do_not_block_large_lesions():
    hu, lungs, spacing, x_mm = chest()
    # vessels left out of the mask: 2 mm tubes along z every 16 mm, so no 60 mm sphere fits
    # between them
    y_index, x_index = np.mgrid[: lungs.shape[1], : lungs.shape[2]]
    vessels = (y_index % 8 == 0) & (x_index % 8 == 0)
    with_vessels = lungs & ~vessels[None]
    spec = TumourSpec(kinds=(LesionKind.LOBULATED,), lesion_count_range=(1, 1), diameter_range_mm=(60.0, 60.0))
    result = insert_tumours_detailed(hu, spacing, with_vessels, np.random.default_rng(0), spec)
    assert result.lesions[0].diameter_mm == pytest.approx(60.0)
