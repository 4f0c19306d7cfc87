"""The training pack: every array the fit needs, in one compressed ``.npz`` that needs no DICOM or
SimpleITK to read (so the fit can run on any machine with PyTorch, a GPU one included).

* per host scan (``host/NAME/...``): the model-ready slices (:func:`prepare_slices`, lung region from the
  unmodified scan, ``in_plane_mm`` pixels) as uint8, and on the same grid the lung region, the tight
  lungs, the tumour (the case's contour) and the slices not isolated;
* the train-side LIDC-IDRI nodules (``models/lidc_split.csv``; validation patients are never packed) on
  the hosts' slice spacing and ``in_plane_mm`` pixels, normalised with the model window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy import ndimage as ndi

from lungseg.tumour.paste import HostSlices

# Building a pack reads DICOM and isolates lungs (SimpleITK); loading one must not need it (GPU machines
# without it fit from a pack), so the imaging modules are imported where a pack is built.


@dataclass
class Host:
    """A training scan in HU on its canonical grid, with its lung isolation and tumour."""

    case_id: str
    hu: np.ndarray  # int16 [z, y, x]
    spacing_zyx: tuple[float, float, float]
    lungs: np.ndarray
    region: np.ndarray
    lesions: np.ndarray  # the tumour contour, bool
    negatives: np.ndarray | None = None  # hard negatives (rejected automatic lesions), bool


def load_host(case, cache: Path | None = None) -> Host:
    """A :class:`lungseg.training.sources.TrainingCase` opened (CT, contour, lung isolation); cached as
    ``cache/host_ID.npz`` so a resumed run does not redo it."""
    cached = cache / f"host_{case.case_id}.npz" if cache else None
    if cached is not None and cached.exists():
        z = np.load(cached)
        return Host(case.case_id, z["hu"], tuple(float(v) for v in z["spacing_zyx"]), z["lungs"], z["region"], z["gtv"],
                    z["negatives"] if "negatives" in z else None)
    from lungseg.case import load_manual_mask
    from lungseg.errors import InputError
    from lungseg.imaging.io import load_ct
    from lungseg.lungs import isolate

    ct = load_ct(case.ct, label=case.case_id)
    gtv = np.asarray(load_manual_mask(case.manual, ct), bool)
    if not gtv.any():
        raise InputError(f"training case {case.case_id}: its tumour contour ({case.manual.name}) is empty")
    negatives = None
    if getattr(case, "negatives", None):
        negatives = np.asarray(load_manual_mask(type(case.manual)("label", case.negatives), ct), bool) & ~gtv
    lungs = isolate(ct.volume)
    host = Host(case.case_id, ct.volume.array.astype(np.int16), ct.volume.spacing_zyx, lungs.lungs, lungs.lung_region, gtv,
                negatives)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        extra = {} if negatives is None else {"negatives": negatives}
        np.savez_compressed(tmp, hu=host.hu, spacing_zyx=np.array(host.spacing_zyx), lungs=host.lungs,
                            region=host.region, gtv=gtv, **extra)
        tmp.replace(cached)
    return host


def lidc_crops(root: Path, side: str, target_zyx, min_diameter_mm: float = 0.0) -> list[tuple]:
    """[(Nodule, HU, mask)] of one side of the split, resampled to ``target_zyx`` spacing."""
    from lungseg.lesion.lidc import load_crop, nodules_in, read_nodules
    from lungseg.tumour.placement import resample_crop

    out = []
    for n in nodules_in(read_nodules(root), side):
        if n.diameter_mm < min_diameter_mm:
            continue
        vol, mask = load_crop(n)
        hu, m = resample_crop(vol.array.astype(np.float32), mask, vol.spacing_zyx, target_zyx)
        out.append((n, hu, m))
    return out


def isolated_stack(hu: np.ndarray, region: np.ndarray, mask: np.ndarray | None, spacing_zyx, in_plane_mm: float):
    """Model-ready slices (a :class:`lungseg.tumour.segment.SliceStack`) of an HU array with a known lung
    region (no new lung isolation)."""
    from lungseg.imaging.harmonise import MODEL_WINDOW, normalise
    from lungseg.tumour.segment import prepare_slices

    iso = np.full(hu.shape, MODEL_WINDOW.air_value, np.float32)
    iso[region] = normalise(hu[region], MODEL_WINDOW)
    ct = SimpleNamespace(spacing=(spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]))
    return prepare_slices(ct, SimpleNamespace(lung_region=region, isolated=SimpleNamespace(array=iso)), mask, in_plane_mm)


def host_slices(host: Host, in_plane_mm: float) -> HostSlices:
    """A :class:`Host` on the model grid."""
    from lungseg.imaging.harmonise import MODEL_WINDOW, normalise

    stack = isolated_stack(host.hu, host.region, host.lesions, host.spacing_zyx, in_plane_mm)

    def grid(mask):
        m = mask[stack.slices][:, stack.box[0], stack.box[1]].astype(np.float32)
        return ndi.zoom(m, (1, *stack.zoom), order=1, prefilter=False) >= 0.5

    image = np.rint(np.clip(stack.images, 0, 1) * 255).astype(np.uint8)
    raw = normalise(host.hu[stack.slices][:, stack.box[0], stack.box[1]].astype(np.float32), MODEL_WINDOW)
    raw = ndi.zoom(raw, (1, *stack.zoom), order=1, prefilter=False)
    raw = np.rint(np.clip(raw, 0, 1) * 255).astype(np.uint8)
    negative = grid(host.negatives) if host.negatives is not None and host.negatives.any() else None
    return HostSlices(host.case_id, image, grid(host.region), grid(host.lungs), stack.masks, raw, negative)


def build(hosts: list[Host], lidc_roots: list[Path], out: Path, in_plane_mm: float = 1.5,
          min_nodule_mm: float = 3.0, manifest: dict | None = None) -> dict:
    """Write the pack of ``hosts`` (and the train-side nodules of every LIDC root) to ``out``."""
    from lungseg.imaging.harmonise import MODEL_WINDOW, normalise

    arrays, info = {}, {"hosts": [], "in_plane_mm": in_plane_mm, "window": MODEL_WINDOW.as_dict(), "manifest": manifest}
    for host in hosts:
        s = host_slices(host, in_plane_mm)
        for key in ("image", "region", "lungs", "gtv", "raw", "negative"):
            if getattr(s, key) is not None:
                arrays[f"host/{host.case_id}/{key}"] = getattr(s, key)
        info["hosts"].append({"name": host.case_id, "slices": len(s.image), "shape": list(s.image.shape[1:]),
                              "spacing_zyx": list(host.spacing_zyx),
                              "gtv_ml": float(host.lesions.sum() * np.prod(host.spacing_zyx) / 1000)})
    target = (hosts[0].spacing_zyx[0], in_plane_mm, in_plane_mm) if hosts else (3.0, in_plane_mm, in_plane_mm)
    images, masks, shapes, patients = [], [], [], []
    for root in lidc_roots:
        for n, hu, m in lidc_crops(root, "train", target, min_nodule_mm):
            images.append(np.rint(normalise(hu, MODEL_WINDOW) * 255).astype(np.uint8).ravel())
            masks.append(m.ravel())
            shapes.append(m.shape)
            patients.append(n.patient_id)
    arrays["nodules/image"] = np.concatenate(images) if images else np.zeros(0, np.uint8)
    arrays["nodules/mask"] = np.concatenate(masks) if masks else np.zeros(0, bool)
    arrays["nodules/shape"] = np.array(shapes, np.int32).reshape(-1, 3)
    arrays["nodules/patient"] = np.array(patients, dtype=str)
    info.update(nodule_spacing_zyx=list(target), nodules=len(shapes), nodule_patients=len(set(patients)))
    arrays["info"] = np.array(json.dumps(info))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return info


def load(path: str | Path) -> tuple[dict[str, HostSlices], list[tuple[np.ndarray, np.ndarray]], dict]:
    """(hosts by name, nodules as (normalised float image, mask), info) of a pack."""
    z = np.load(path)
    info = json.loads(str(z["info"]))
    def optional(name, key):
        return z[f"host/{name}/{key}"] if f"host/{name}/{key}" in z else None

    hosts = {h["name"]: HostSlices(h["name"], *(z[f"host/{h['name']}/{k}"] for k in ("image", "region", "lungs", "gtv")),
                                   raw=optional(h["name"], "raw"), negative=optional(h["name"], "negative"))
             for h in info["hosts"]}
    image, mask, shapes = z["nodules/image"], z["nodules/mask"], z["nodules/shape"]
    nodules, at = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        nodules.append((image[at:at + size].reshape(shape).astype(np.float32) / 255.0, mask[at:at + size].reshape(shape)))
        at += size
    return hosts, nodules, info
