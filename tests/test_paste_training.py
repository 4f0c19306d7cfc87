"""The automatic model's training data (issue 11): real lesions pasted into real lung slices, the
training pack, and a 2.5D model trained from it running in the normal `segment` path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from lungseg.tumour.paste import HostSlices, PasteParams, Sprite, make_sample, paste_sprite, sprite_bank


def _host(n=12, h=120, w=150, seed=0) -> HostSlices:
    """Two dark 'lungs' with a bright 'vessel' in each, a brighter 'mediastinum' between, one GTV."""
    rng = np.random.default_rng(seed)
    region = np.zeros((n, h, w), bool)
    region[:, 10:110, 10:140] = True
    lungs = np.zeros_like(region)
    lungs[:, 20:100, 20:65] = True
    lungs[:, 20:100, 85:130] = True
    image = np.where(region, 200, 0).astype(np.uint8)
    image[lungs] = (rng.random(int(lungs.sum())) * 20 + 15).astype(np.uint8)
    gtv = np.zeros_like(region)
    gtv[4:8, 40:55, 30:45] = True
    image[gtv] = 225
    return HostSlices("synthetic", image, region, lungs, gtv)


def _nodule(radius=4, depth=3):
    zz, yy, xx = np.mgrid[:depth, : 2 * radius + 7, : 2 * radius + 7]
    c = radius + 3
    mask = ((yy - c) ** 2 + (xx - c) ** 2 <= radius**2) & (zz >= 0)
    image = np.where(mask, 0.9, 0.05).astype(np.float32)
    return image, mask


def test_pasted_nodule_lands_in_the_lungs_and_in_the_target():
    host = _host()
    params = PasteParams(crop=96, context=1, blend_sigma_px=0.5)
    image = host.image[4:7, 10:106, 20:116].astype(np.float32) / 255
    region, lungs = host.region[5, 10:106, 20:116], host.lungs[5, 10:106, 20:116]
    target = np.zeros(region.shape, bool)
    before = image.copy()
    img, mask = _nodule()
    ok = paste_sprite(image, target, region, lungs, Sprite(img, mask, "nodule"), np.random.default_rng(3), params)
    assert ok
    assert target.sum() == mask[1].sum()  # the centre slice's outline, whole
    assert lungs[target].mean() >= params.min_inside_lungs
    assert image[1][target].mean() > 0.8  # nodule density inside its outline
    changed = np.abs(image - before) > 1e-6
    assert not changed[:, ~region].any()  # nothing pasted outside the lung region (it is air at inference)
    assert (image >= before - 1e-6)[:, ~ndi.binary_dilation(target, iterations=3)].all()  # outside only brightened


def test_sample_is_model_ready_and_reproducible():
    host = _host()
    img, mask = _nodule()
    bank = sprite_bank([(img, mask)] * 4, [host], np.random.default_rng(0))
    assert bank["nodule"] and bank["gtv"] and bank["large"]
    params = PasteParams(crop=96, context=1, paste_probability=1.0)
    a_img, a_t = make_sample([host], bank, np.random.default_rng([1, 7]), params)
    b_img, b_t = make_sample([host], bank, np.random.default_rng([1, 7]), params)
    assert a_img.shape == (3, 96, 96) and a_t.shape == (96, 96)
    assert a_img.dtype == np.float32 and 0.0 <= a_img.min() and a_img.max() <= 1.0
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_t, b_t)
    positives = [make_sample([host], bank, np.random.default_rng([2, i]), params)[1].any() for i in range(20)]
    assert sum(positives) >= 15  # pasted lesions (and the host's own GTV) give most samples a target


def test_trained_2p5d_model_runs_in_the_segment_path(tmp_path):
    """Pack → a few optimiser steps on the CPU → TumourPredictor with neighbouring slices as channels."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from lungseg.training import pack as packing
    from lungseg.training.fit import FitParams, Variant, fit
    from lungseg.tumour.segment import PostProcess, TumourPredictor, prepare_slices
    from lungseg.imaging.volume import Volume

    host = _host()
    img, mask = _nodule()
    arrays = {f"host/h/{k}": getattr(host, k) for k in ("image", "region", "lungs", "gtv")}
    arrays |= {"nodules/image": np.rint(img * 255).astype(np.uint8).ravel(), "nodules/mask": mask.ravel(),
               "nodules/shape": np.array([mask.shape], np.int32),
               "info": np.array('{"hosts": [{"name": "h"}], "in_plane_mm": 1.5, "window": {"low": -1000.0, "high": 150.0},'
                                ' "nodules": 1, "nodule_patients": 1}')}
    np.savez_compressed(tmp_path / "pack.npz", **arrays)
    hosts, nodules, info = packing.load(tmp_path / "pack.npz")
    np.testing.assert_array_equal(hosts["h"].image, host.image)
    np.testing.assert_array_equal(nodules[0][1], mask)

    torch.manual_seed(0)
    params = FitParams(steps=3, batch_size=2, workers=0, variants=(Variant(4, 1), Variant(4, 0)), paste=PasteParams(crop=64))
    paths = fit(str(tmp_path / "pack.npz"), ["h"], str(tmp_path / "run"), params, device="cpu", log=lambda m: None)
    assert [p.parent.name for p in paths] == ["b4c1", "b4c0"]
    predictor = TumourPredictor(paths[0], "cpu")
    assert predictor.context == 1 and predictor.model.config.in_channels == 3

    hu = np.full((10, 64, 80), -850, np.int16)
    volume = Volume(hu, spacing=(1.5, 1.5, 3.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    region = np.zeros(hu.shape, bool)
    region[:, 8:56, 8:72] = True
    lungs = SimpleNamespace(lung_region=region, isolated=volume.with_array(np.where(region, 0.13, 0.0).astype(np.float32)))
    stack = prepare_slices(volume, lungs, in_plane_mm=1.5)
    probability = predictor.tumour_probability(stack)
    assert probability.shape == stack.images.shape and np.isfinite(probability).all()
    prediction = predictor.predict(volume, lungs, PostProcess(candidate_filter=None))
    assert prediction.probability.shape == hu.shape


def test_training_pack_from_real_data_holds_train_side_nodules_only(data_dir, tmp_path, monkeypatch):
    """The pack a GPU trains from: one real host on the model grid, and only train-side LIDC patients."""
    from lungseg.lesion.lidc import read_split
    from lungseg.training import pack as packing
    from lungseg.training.sources import discover

    case = discover(str(data_dir / "LUNG1-003.zip")).cases[0]
    info = packing.build([packing.load_host(case)], [data_dir / "lidc-nodules"], tmp_path / "pack.npz")
    hosts, nodules, read_info = packing.load(tmp_path / "pack.npz")
    assert read_info == info and list(hosts) == ["LUNG1-003"]
    host = hosts["LUNG1-003"]
    assert host.image.shape == host.region.shape == host.lungs.shape == host.gtv.shape == host.raw.shape
    # isolated: air outside the lung region (one pixel of interpolation at its edge)
    near = ndi.binary_dilation(host.region, structure=np.ones((1, 3, 3), bool))
    assert host.image.dtype == np.uint8 and not host.image[~near].any() and host.raw[~near].any()
    gtv_ml = host.gtv.sum() * 3.0 * 1.5 * 1.5 / 1000
    # GTV-1 and GTV-3 (34.7 + 8.7 ml); GTV-2 (38.6 ml, slices 78-91) lies wholly above the lung region,
    # where the seed's pipeline sets everything to air: no lung-isolated model can contour it
    assert gtv_ml == pytest.approx(43.4, rel=0.05)
    split = read_split()
    patients = set(np.load(tmp_path / "pack.npz")["nodules/patient"].tolist())
    assert patients and all(split[p] == "train" for p in patients)
    assert len(nodules) == info["nodules"] >= 700
    assert all(m.any() for _, m in nodules)
