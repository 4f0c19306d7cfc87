"""Training and evaluation cases in their published layouts, as model-ready slice stacks.

Layouts: a folder of cases (DICOM folders or zips with an RTSTRUCT whose ROIs match a pattern
such as ``GTV*``; or image files with a label file beside them named ``<stem>_label``,
``<stem>_seg`` or ``<stem>_mask``), the Medical Segmentation Decathlon layout (``dataset.json``,
``imagesTr/``, ``labelsTr/``, as Task06_Lung ships), and the project's synthetic generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from lungseg.errors import LungsegError
from lungseg.imaging.io import IMAGE_SUFFIXES, load_ct
from lungseg.lungs import isolate
from lungseg.tumour.segment import SliceStack, prepare_slices
from lungseg.imaging.volume import Volume


@dataclass(frozen=True)
class CaseRef:
    case_id: str
    image: Path
    label: Path | None = None  # label image; None = the RTSTRUCT found with the image
    roi: str = "GTV*"


def _stem(p: Path) -> str:
    n = p.name
    for s in (".nii.gz",) + IMAGE_SUFFIXES + (".zip",):
        if n.lower().endswith(s):
            return n[: -len(s)]
    return n


def discover(root: str | Path, roi: str = "GTV*") -> list[CaseRef]:
    """Every labelled case under ``root`` in one of the supported layouts."""
    root = Path(root)
    if not root.exists():
        raise LungsegError(f"{root}: no such folder")
    if (root / "dataset.json").exists() and (root / "imagesTr").is_dir():
        meta = json.loads((root / "dataset.json").read_text())
        cases = []
        for item in meta.get("training", []):
            image = root / item["image"].lstrip("./")
            label = root / item["label"].lstrip("./")
            cases.append(CaseRef(_stem(image), image, label))
        return cases
    cases = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        stem = _stem(p)
        if p.suffix.lower() == ".zip" or p.is_dir():
            cases.append(CaseRef(stem, p, None, roi))
        elif p.name.lower().endswith(IMAGE_SUFFIXES) and not any(stem.endswith(s) for s in ("_label", "_seg", "_mask")):
            for suffix in ("_label", "_seg", "_mask"):
                hits = [q for q in root.glob(stem + suffix + ".*") if q.name.lower().endswith(IMAGE_SUFFIXES)]
                if hits:
                    cases.append(CaseRef(stem, p, hits[0]))
                    break
    return cases


def load_case_slices(ref: CaseRef, in_plane_mm: float = 1.0) -> tuple[SliceStack, Volume, np.ndarray]:
    """(slices, canonical CT, tumour mask) for one case."""
    from lungseg.case import ManualSource, load_manual_mask

    ct = load_ct(ref.image, label=ref.case_id)
    manual = ManualSource("label", str(ref.label)) if ref.label is not None else ManualSource("rtstruct", None, ref.roi)
    mask = load_manual_mask(manual, ct)
    lungs = isolate(ct.volume)
    return prepare_slices(ct.volume, lungs, mask, in_plane_mm), ct.volume, mask


def synthetic_cases(n: int, seed: int = 0, in_plane_mm: float = 1.0) -> Iterator[tuple[str, SliceStack]]:
    """Phantom chests with synthetic tumours of every kind (different seeds per case)."""
    from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct
    from lungseg.tumour.synthetic import insert_tumours

    for i in range(n):
        rng = np.random.default_rng(seed * 10_000 + i)
        p = synthetic_chest_ct(PhantomSpec(seed=seed * 10_000 + i, with_tumour=False))
        hu, mask = insert_tumours(p.ct.array.astype(np.float32), p.ct.spacing_zyx, p.lungs, rng)
        ct = p.ct.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
        yield f"synthetic-{seed}-{i}", prepare_slices(ct, isolate(ct), mask, in_plane_mm)


def real_with_synthetic_tumours(ct: Volume, n: int, seed: int, in_plane_mm: float = 1.0) -> Iterator[SliceStack]:
    """Synthetic tumours inserted into a real CT's lungs: many labelled slices from one scan."""
    from lungseg.tumour.synthetic import insert_tumours

    lungs = isolate(ct)
    for i in range(n):
        rng = np.random.default_rng(seed * 10_000 + i)
        hu, mask = insert_tumours(ct.array.astype(np.float32), ct.spacing_zyx, lungs.lungs, rng)
        new = ct.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
        yield prepare_slices(new, isolate(new), mask, in_plane_mm)
