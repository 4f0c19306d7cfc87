"""The training pack of the automatic model: every array :mod:`lungseg.tumour.fit` needs, in one
compressed ``.npz`` that needs no DICOM or SimpleITK to read (so training can run on any machine
with PyTorch, a GPU one included).

* per real host scan (``host/NAME/...``): the model-ready slices (:func:`prepare_slices`, lung
  region from the unmodified scan, ``in_plane_mm`` pixels) as uint8, and on the same grid the lung
  region, the tight lungs and the GTVs (``GTV*`` of the RTSTRUCT);
* the train-side LIDC-IDRI nodules (``models/lidc_split.csv``; validation patients are never
  packed) on the hosts' slice spacing and ``in_plane_mm`` pixels, normalised with the model window.

    python -m lungseg.tumour.pack --data ../shared/data --out /tmp/lungseg-pack.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lungseg.tumour.paste import HostSlices

PATIENTS = ["LUNG1-001", "LUNG1-002", "LUNG1-003"]


def host_slices(host, in_plane_mm: float) -> HostSlices:
    """A :class:`lungseg.tumour.recipe.Host` on the model grid."""
    from lungseg.tumour.recipe import isolated_stack

    stack = isolated_stack(host.hu, host.region, host.lesions, host.spacing_zyx, in_plane_mm)

    def grid(mask):
        m = mask[stack.slices][:, stack.box[0], stack.box[1]].astype(np.float32)
        return ndi.zoom(m, (1, *stack.zoom), order=1, prefilter=False) >= 0.5

    from lungseg.imaging.harmonise import MODEL_WINDOW, normalise

    image = np.rint(np.clip(stack.images, 0, 1) * 255).astype(np.uint8)
    raw = normalise(host.hu[stack.slices][:, stack.box[0], stack.box[1]].astype(np.float32), MODEL_WINDOW)
    raw = ndi.zoom(raw, (1, *stack.zoom), order=1, prefilter=False)
    raw = np.rint(np.clip(raw, 0, 1) * 255).astype(np.uint8)
    return HostSlices(host.case_id, image, grid(host.region), grid(host.lungs), stack.masks, raw)


def build(data: Path, out: Path, hosts=PATIENTS, in_plane_mm: float = 1.5, min_nodule_mm: float = 3.0) -> dict:
    from lungseg.imaging.harmonise import MODEL_WINDOW, normalise
    from lungseg.tumour.recipe import lidc_crops, load_host

    arrays, info = {}, {"hosts": [], "in_plane_mm": in_plane_mm, "window": MODEL_WINDOW.as_dict()}
    spacing = None
    for name in hosts:
        host = load_host(data, name)
        spacing = spacing or host.spacing_zyx
        s = host_slices(host, in_plane_mm)
        for key in ("image", "region", "lungs", "gtv", "raw"):
            arrays[f"host/{name}/{key}"] = getattr(s, key)
        info["hosts"].append({"name": name, "slices": len(s.image), "shape": list(s.image.shape[1:]),
                              "gtv_ml": float(host.lesions.sum() * np.prod(host.spacing_zyx) / 1000)})
    target = (spacing[0], in_plane_mm, in_plane_mm)
    crops = lidc_crops(data / "lidc-nodules", "train", target, min_nodule_mm)
    images, masks, shapes, patients = [], [], [], []
    for n, hu, m in crops:
        images.append(np.rint(normalise(hu, MODEL_WINDOW) * 255).astype(np.uint8).ravel())
        masks.append(m.ravel())
        shapes.append(m.shape)
        patients.append(n.patient_id)
    arrays["nodules/image"] = np.concatenate(images)
    arrays["nodules/mask"] = np.concatenate(masks)
    arrays["nodules/shape"] = np.array(shapes, np.int32)
    arrays["nodules/patient"] = np.array(patients)
    info.update(nodule_spacing_zyx=list(target), nodules=len(crops), nodule_patients=len(set(patients)))
    arrays["info"] = np.array(json.dumps(info))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return info


def load(path: str | Path) -> tuple[dict[str, HostSlices], list[tuple[np.ndarray, np.ndarray]], dict]:
    """(hosts by name, nodules as (normalised float image, mask), info) of a pack."""
    z = np.load(path)
    info = json.loads(str(z["info"]))
    hosts = {h["name"]: HostSlices(h["name"], *(z[f"host/{h['name']}/{k}"] for k in ("image", "region", "lungs", "gtv")),
                                   raw=z[f"host/{h['name']}/raw"] if f"host/{h['name']}/raw" in z else None)
             for h in info["hosts"]}
    image, mask, shapes = z["nodules/image"], z["nodules/mask"], z["nodules/shape"]
    nodules, at = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        nodules.append((image[at:at + size].reshape(shape).astype(np.float32) / 255.0, mask[at:at + size].reshape(shape)))
        at += size
    return hosts, nodules, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--hosts", nargs="+", default=PATIENTS)
    ap.add_argument("--in-plane-mm", type=float, default=1.5)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    info = build(Path(args.data), Path(args.out), args.hosts, args.in_plane_mm)
    print(json.dumps(info), f"\n{Path(args.out).stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
