"""Training recipe of the automatic model on real lesions.

Training cases: the real scans with their GTVs (``GTV*`` of the RTSTRUCT), each scan also
copied ``copies_per_host`` times with real LIDC-IDRI nodules of *train-side* patients
(``models/lidc_split.csv``) placed into its lungs (:mod:`lungseg.tumour.placement`).  Slices
without lesion are the negatives.  Slices are prepared exactly as at inference
(:func:`lungseg.tumour.segment.prepare_slices`), lung region from the unmodified scan.

    python -m lungseg.tumour.recipe --data ../shared/data --hosts LUNG1-001 LUNG1-002 LUNG1-003 --out runs/final
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lungseg.imaging.harmonise import MODEL_WINDOW, normalise
from lungseg.tumour.placement import HostSites, PlacementParams, place_nodules, resample_crop
from lungseg.tumour.segment import SliceStack, prepare_slices


@dataclass(frozen=True)
class RecipeParams:
    copies_per_host: int = 8  # copies of each host scan with nodules placed
    nodules_per_copy: int = 12
    min_nodule_mm: float = 3.0  # smaller LIDC nodules are left out of training
    in_plane_mm: float = 1.5
    seed: int = 0


@dataclass
class Host:
    case_id: str
    hu: np.ndarray  # int16 [z, y, x], canonical
    spacing_zyx: tuple[float, float, float]
    lungs: np.ndarray
    region: np.ndarray
    lesions: np.ndarray  # the reference lesions (GTV*), bool


def cache_dir() -> Path:
    d = Path(os.environ.get("LUNGSEG_TRAIN_CACHE", "/tmp/lungseg-train-cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_host(data: Path, case_id: str) -> Host:
    """A LUNG1 zip (GTV* from its RTSTRUCT) or an image file without lesions, cached as npz."""
    cached = cache_dir() / f"host_{case_id}.npz"
    if cached.exists():
        z = np.load(cached)
        return Host(case_id, z["hu"], tuple(float(v) for v in z["spacing_zyx"]), z["lungs"], z["region"], z["gtv"])
    from lungseg.case import ManualSource, load_manual_mask
    from lungseg.imaging.io import find_structure_set, load_ct
    from lungseg.lungs import isolate

    path = data / f"{case_id}.zip" if (data / f"{case_id}.zip").exists() else data / case_id
    ct = load_ct(path, label=case_id)
    ss = find_structure_set(ct) if path.suffix == ".zip" else None
    gtv = load_manual_mask(ManualSource("rtstruct", None, "GTV*"), ct) if ss is not None else np.zeros(ct.volume.shape, bool)
    lungs = isolate(ct.volume)
    host = Host(case_id, ct.volume.array.astype(np.int16), ct.volume.spacing_zyx, lungs.lungs, lungs.lung_region, gtv)
    np.savez_compressed(cached, hu=host.hu, spacing_zyx=np.array(host.spacing_zyx), lungs=host.lungs, region=host.region, gtv=gtv)
    return host


def lidc_crops(root: Path, side: str, target_zyx, min_diameter_mm: float = 0.0) -> list[tuple]:
    """[(Nodule, HU, mask)] of one side of the split, resampled to ``target_zyx`` spacing."""
    from lungseg.lesion.lidc import load_crop, nodules_in, read_nodules

    out = []
    for n in nodules_in(read_nodules(root), side):
        if n.diameter_mm < min_diameter_mm:
            continue
        vol, mask = load_crop(n)
        hu, m = resample_crop(vol.array.astype(np.float32), mask, vol.spacing_zyx, target_zyx)
        out.append((n, hu, m))
    return out


def isolated_stack(hu: np.ndarray, region: np.ndarray, mask: np.ndarray | None, spacing_zyx, in_plane_mm: float) -> SliceStack:
    """Model-ready slices of an HU array with a known lung region (no new lung isolation)."""
    iso = np.full(hu.shape, MODEL_WINDOW.air_value, np.float32)
    iso[region] = normalise(hu[region], MODEL_WINDOW)
    volume = SimpleNamespace(array=iso)
    ct = SimpleNamespace(spacing=(spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]))
    return prepare_slices(ct, SimpleNamespace(lung_region=region, isolated=volume), mask, in_plane_mm)


def training_cases(hosts: list[Host], crops: list[tuple], params: RecipeParams = RecipeParams(),
                   placement: PlacementParams = PlacementParams(), log=print) -> tuple[list, list[str]]:
    """(slice cases, their ids): each host as it is, plus copies with placed nodules."""
    rng = np.random.default_rng(params.seed)
    usable = [c for c in crops if c[0].diameter_mm >= params.min_nodule_mm]
    cases, ids = [], []
    for host in hosts:
        t = time.perf_counter()
        s = isolated_stack(host.hu, host.region, host.lesions, host.spacing_zyx, params.in_plane_mm)
        cases.append((s.images, s.masks))
        ids.append(host.case_id)
        sites = HostSites.of(host.hu, host.lungs, host.lesions, host.spacing_zyx, placement)
        for k in range(params.copies_per_host):
            pick = rng.choice(len(usable), params.nodules_per_copy, replace=False)
            hu, placed, records = place_nodules(host.hu, sites, host.spacing_zyx, [usable[i][1:] for i in pick], rng, placement)
            s = isolated_stack(hu, host.region, placed | host.lesions, host.spacing_zyx, params.in_plane_mm)
            cases.append((s.images, s.masks))
            ids.append(f"{host.case_id}+lidc-{k}")
        log(f"  {host.case_id}: {params.copies_per_host} copies with nodules in {time.perf_counter() - t:.0f} s")
    return cases, ids


def main(argv=None):
    import torch

    from lungseg.tumour.train import TrainConfig, train
    from lungseg.tumour.unet import UNetConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--hosts", nargs="+", default=["LUNG1-001", "LUNG1-002", "LUNG1-003"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=70)
    ap.add_argument("--positives-per-epoch", type=int, default=100)
    ap.add_argument("--copies", type=int, default=RecipeParams.copies_per_host)
    ap.add_argument("--nodules", type=int, default=RecipeParams.nodules_per_copy)
    ap.add_argument("--in-plane-mm", type=float, default=RecipeParams.in_plane_mm)
    ap.add_argument("--crop", type=int, default=80)
    ap.add_argument("--base-channels", type=int, default=8)
    ap.add_argument("--negative-ratio", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    params = RecipeParams(args.copies, args.nodules, in_plane_mm=args.in_plane_mm, seed=args.seed)
    t0 = time.perf_counter()
    hosts = [load_host(data, h) for h in args.hosts]
    target = hosts[0].spacing_zyx
    crops = lidc_crops(data / "lidc-nodules", "train", target)
    print(f"{len(crops)} train-side LIDC nodules resampled to {target} mm in {time.perf_counter() - t0:.0f} s", flush=True)
    cases, ids = training_cases(hosts, crops, params, log=lambda m: print(m, flush=True))
    # no validation set: the only real patients are the hosts themselves; the final weights are used
    config = TrainConfig(epochs=args.epochs, batch_size=16, crop_size=args.crop, seed=args.seed,
                         negative_ratio=args.negative_ratio, positives_per_epoch=args.positives_per_epoch,
                         unet=UNetConfig(base_channels=args.base_channels), in_plane_spacing_mm=(args.in_plane_mm, args.in_plane_mm))
    print(f"training on {len(cases)} slice cases ({sum(len(c[0]) for c in cases)} slices)", flush=True)
    t = time.perf_counter()
    train(config, cases, None, args.out, resume=True, progress=False, case_ids=ids,
          extra_meta={"in_plane_mm": args.in_plane_mm, "version": "real-lesions-1", "recipe": asdict(params),
                      "lidc_train_nodules": len(crops), "hosts": args.hosts})
    seconds = time.perf_counter() - t
    print(f"trained in {seconds:.0f} s", flush=True)
    (Path(args.out) / "recipe.json").write_text(json.dumps({"args": vars(args), "train_seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
