"""Training samples made on the fly: real lesions pasted into real lung slices (2.5D).

The automatic model sees, per sample, ``2 * context + 1`` neighbouring axial slices of a host scan
(prepared exactly as at inference, :func:`lungseg.tumour.segment.prepare_slices`, 1.5 mm pixels,
lung-isolated, normalised to [0, 1]) cropped to ``crop`` pixels, and the tumour mask of the
centre slice.  Into most samples one to four real lesions are pasted, each a 3D "sprite" (image
and outline on the host's slice spacing) of one of three kinds:

* a LIDC-IDRI nodule of a train-side patient, as it is;
* the same nodule enlarged two to four times (a stand-in for the large primaries that LIDC lacks);
* a GTV of one of the training patients, moved to another place in another (or the same) lung,
  flipped and rescaled.

A sprite is placed with the centroid of its chosen slice on a lung pixel (dark: below
``max_lung_value``) and kept only where most of it lies in the tight lungs; its boundary is
blended with a Gaussian ramp, and outside its outline it only brightens (vessels, pleura stay).
Pure NumPy and SciPy: it runs in data-loader workers, on any machine (no SimpleITK).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class PasteParams:
    crop: int = 160  # pixels (1.5 mm: 240 mm, most of a chest)
    context: int = 1  # neighbouring slices each side (2.5D input of 2 * context + 1 channels)
    paste_probability: float = 0.7
    max_pastes: int = 4
    gtv_slice_share: float = 0.25  # samples centred on a host's own GTV
    large_share: float = 0.15  # pasted sprites that are enlarged nodules
    gtv_sprite_share: float = 0.15  # pasted sprites that are moved GTVs
    max_lung_value: float = 0.3  # a pasted centre lies on lung darker than this (-655 HU)
    min_inside_lungs: float = 0.6  # share of the sprite's outline that must fall in the tight lungs
    blend_sigma_px: float = 0.55  # ≈ 0.8 mm at 1.5 mm pixels
    intensity_scale: float = 0.05  # image * U(1 ± scale) + U(± shift) inside the lung region
    intensity_shift: float = 0.03
    noise_sigma: float = 0.015
    # hard negatives: the lung region grown by up to this much (the isolation's own margin varies from
    # scan to scan), so heart, great vessels and liver dome come into view as tissue that is not tumour
    region_grow_probability: float = 0.0  # 0.5 tried (see the model card); the shipped model used 0
    region_grow_px: float = 10.0  # 15 mm at 1.5 mm pixels
    negative_slice_share: float = 0.25  # samples centred on a host's hard negatives, when it has any


@dataclass
class HostSlices:
    """One training scan on the model grid: [n, h, w] arrays of the stack's slices."""

    name: str
    image: np.ndarray  # uint8 (normalised × 255), lung-isolated
    region: np.ndarray  # bool, the lung region
    lungs: np.ndarray  # bool, the tight lungs (where sprites go)
    gtv: np.ndarray  # bool, the real tumours
    raw: np.ndarray | None = None  # uint8, the same slices not isolated (for the grown regions)
    negative: np.ndarray | None = None  # bool, hard negatives: automatic lesions a reviewer rejected

    @property
    def gtv_slices(self) -> np.ndarray:
        return np.flatnonzero(self.gtv.any(axis=(1, 2)))

    @property
    def lung_slices(self) -> np.ndarray:
        return np.flatnonzero(self.lungs.sum(axis=(1, 2)) > 200)


@dataclass
class Sprite:
    image: np.ndarray  # float32 [d, h, w] normalised, not isolated
    mask: np.ndarray  # bool [d, h, w]
    kind: str  # "nodule", "large", "gtv"


def trim(image: np.ndarray, mask: np.ndarray, pad: int = 3) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(mask)
    box = (slice(int(idx[0].min()), int(idx[0].max()) + 1),) + tuple(
        slice(max(int(i.min()) - pad, 0), min(int(i.max()) + 1 + pad, n)) for i, n in zip(idx[1:], mask.shape[1:]))
    return image[box], mask[box]


def rescale(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Sprite scaled by ``factor`` in every direction (mm stay mm: the grid is unchanged)."""
    img = ndi.zoom(image.astype(np.float32), factor, order=1, prefilter=False)
    m = ndi.zoom(mask.astype(np.float32), factor, order=1, prefilter=False) >= 0.5
    return img, m


def gtv_sprites(host: HostSlices) -> list[Sprite]:
    """Each 3D component of the host's GTV mask with the image under it."""
    lab, n = ndi.label(host.gtv, structure=np.ones((3, 3, 3), bool))
    out = []
    for i, box in enumerate(ndi.find_objects(lab), start=1):
        box = tuple(slice(max(b.start - pad, 0), b.stop + pad) for b, pad in zip(box, (1, 3, 3)))
        mask = lab[box] == i
        out.append(Sprite(host.image[box].astype(np.float32) / 255.0, mask & host.region[box], "gtv"))
    return [s for s in out if s.mask.any()]


def sprite_bank(nodules: list[tuple[np.ndarray, np.ndarray]], hosts: list[HostSlices], rng: np.random.Generator,
                large_factors: tuple[float, float] = (2.0, 4.0), large_min_voxels: int = 20) -> dict[str, list[Sprite]]:
    """Sprites by kind: the nodules (image normalised float, mask), enlarged copies of the larger
    ones, and the hosts' GTVs at scales 0.7–1.2."""
    bank = {"nodule": [Sprite(img.astype(np.float32), m.astype(bool), "nodule") for img, m in nodules if m.any()]}
    large = []
    for s in bank["nodule"]:
        if s.mask.sum() >= large_min_voxels:
            img, m = rescale(s.image, s.mask, float(rng.uniform(*large_factors)))
            if m.any():
                large.append(Sprite(*trim(img, m), "large"))
    bank["large"] = large
    gtvs = []
    for h in hosts:
        for s in gtv_sprites(h):
            for f in (0.7, 0.85, 1.0, 1.2):
                img, m = (s.image, s.mask) if f == 1.0 else rescale(s.image, s.mask, f)
                if m.any():
                    gtvs.append(Sprite(*trim(img, m), "gtv"))
    bank["gtv"] = gtvs
    return bank


def _window(n: int, size: int, anchor: int, rng: np.random.Generator) -> int:
    """Start of a ``size`` window over ``n`` pixels that holds ``anchor`` (may start < 0 or end > n: padding)."""
    if n <= size:
        return -int(rng.integers(0, size - n + 1))
    low, high = max(0, anchor - size + 1), min(anchor, n - size)
    return int(rng.integers(low, high + 1))


def _crop(a: np.ndarray, y0: int, x0: int, size: int, fill=0) -> np.ndarray:
    """``a[..., y0:y0+size, x0:x0+size]`` with ``fill`` beyond the edges."""
    out = np.full(a.shape[:-2] + (size, size), fill, a.dtype)
    h, w = a.shape[-2:]
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + size, h), min(x0 + size, w)
    if ye > ys and xe > xs:
        out[..., ys - y0:ye - y0, xs - x0:xe - x0] = a[..., ys:ye, xs:xe]
    return out


def paste_sprite(image: np.ndarray, target: np.ndarray, region: np.ndarray, lungs: np.ndarray, sprite: Sprite,
                 rng: np.random.Generator, params: PasteParams, attempts: int = 8) -> bool:
    """Blend ``sprite`` into ``image`` [c, s, s] (in place), its outline into ``target`` [s, s]."""
    c = params.context
    flips = tuple(a for a in (1, 2) if rng.random() < 0.5)
    img, msk = (np.flip(sprite.image, flips), np.flip(sprite.mask, flips)) if flips else (sprite.image, sprite.mask)
    if rng.random() < 0.5:
        img, msk = img.transpose(0, 2, 1), msk.transpose(0, 2, 1)
    with_mask = np.flatnonzero(msk.any(axis=(1, 2)))
    j = int(rng.choice(with_mask))
    centre = np.round(ndi.center_of_mass(msk[j])).astype(int)
    options = np.flatnonzero(lungs & (image[c] < params.max_lung_value))
    if options.size == 0:
        return False
    s = image.shape[-1]
    sh, sw = msk.shape[1:]
    for _ in range(attempts):
        py, px = np.unravel_index(int(rng.choice(options)), lungs.shape)
        y0, x0 = py - centre[0], px - centre[1]
        if y0 < 0 or x0 < 0 or y0 + sh > s or x0 + sw > s:
            continue
        box = (slice(y0, y0 + sh), slice(x0, x0 + sw))
        m0 = msk[j]
        if lungs[box][m0].mean() < params.min_inside_lungs or target[box][m0].any():
            continue
        for k in range(-c, c + 1):
            if not 0 <= j + k < len(msk) or not msk[j + k].any():
                continue
            m = msk[j + k]
            weight = np.clip(ndi.gaussian_filter(m.astype(np.float32), params.blend_sigma_px) * 1.6, 0.0, 1.0)
            weight[m] = np.maximum(weight[m], 0.9)
            host = image[c + k][box]
            delta = img[j + k] - host
            delta[~m] = np.maximum(delta[~m], 0.0)
            image[c + k][box] = np.where(region[box], host + weight * delta, host)  # the centre slice's region
        target[box] |= m0 & region[box]
        return True
    return False


def make_sample(hosts: list[HostSlices], bank: dict[str, list[Sprite]], rng: np.random.Generator,
                params: PasteParams = PasteParams()) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [2c + 1, crop, crop], target bool [crop, crop]) — one training sample."""
    host = hosts[int(rng.integers(len(hosts)))]
    c, size = params.context, params.crop
    n = len(host.image)
    on_gtv = host.gtv_slices.size and rng.random() < params.gtv_slice_share
    negative_slices = np.flatnonzero(host.negative.any(axis=(1, 2))) if host.negative is not None else np.zeros(0, int)
    on_negative = not on_gtv and negative_slices.size and rng.random() < params.negative_slice_share
    k = int(rng.choice(host.gtv_slices if on_gtv else (negative_slices if on_negative else host.lung_slices)))
    idx = np.clip(np.arange(k - c, k + c + 1), 0, n - 1)  # edge slices repeated, as at inference
    anchors = np.flatnonzero(host.gtv[k] if on_gtv else (host.negative[k] if on_negative else host.region[k]))
    ay, ax = np.unravel_index(int(rng.choice(anchors)), host.region[k].shape)
    h, w = host.region.shape[1:]
    y0, x0 = _window(h, size, int(ay), rng), _window(w, size, int(ax), rng)
    region = _crop(host.region[k], y0, x0, size, False)
    if host.raw is not None and rng.random() < params.region_grow_probability:
        region = ndi.distance_transform_edt(~region) <= rng.uniform(1.0, params.region_grow_px)
        image = _crop(host.raw[idx], y0, x0, size).astype(np.float32) / 255.0 * region
    else:
        image = _crop(host.image[idx], y0, x0, size).astype(np.float32) / 255.0
    lungs = _crop(host.lungs[k], y0, x0, size, False)
    target = _crop(host.gtv[k], y0, x0, size, False).copy()
    if rng.random() < params.paste_probability:
        kinds = ["nodule", "large", "gtv"]
        p = np.array([1 - params.large_share - params.gtv_sprite_share, params.large_share, params.gtv_sprite_share])
        p = p * np.array([bool(bank.get(kk)) for kk in kinds])
        for _ in range(int(rng.integers(1, params.max_pastes + 1))):
            kind = kinds[int(rng.choice(3, p=p / p.sum()))]
            sprite = bank[kind][int(rng.integers(len(bank[kind])))]
            paste_sprite(image, target, region, lungs, sprite, rng, params)
    tissue = image > 0
    image = np.where(tissue, image * rng.uniform(1 - params.intensity_scale, 1 + params.intensity_scale)
                     + rng.uniform(-params.intensity_shift, params.intensity_shift)
                     + rng.normal(0, rng.uniform(0, params.noise_sigma), image.shape), 0.0)
    return np.clip(image, 0.0, 1.0).astype(np.float32), target
