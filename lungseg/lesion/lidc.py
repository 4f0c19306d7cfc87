"""Reader for the LIDC-IDRI nodule-crop layout and its patient-level train/validation split.

Layout (``DIR`` is e.g. ``../shared/data/lidc-nodules``)::

    DIR/nodules.csv                 one row per crop; ``crop`` is the file name without .nii.gz
    DIR/image/CROP.nii.gz           int16 HU at the scan's own spacing
    DIR/nodule_mask/CROP.nii.gz     the readers' max-voting outline, same grid, never empty

The split is by patient, never by crop (a patient often has several nodules).  It is kept in the repo
(:data:`SPLIT_FILE`) so that every model and every evaluation uses the same validation patients.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungseg.errors import InputError
from lungseg.imaging.io import to_canonical
from lungseg.imaging.volume import Volume

SPLIT_FILE = Path(__file__).resolve().parents[2] / "models" / "lidc_split.csv"
DIAMETER_BANDS = ((0.0, 6.0, "<6 mm"), (6.0, 10.0, "6-10 mm"), (10.0, 20.0, "10-20 mm"), (20.0, float("inf"), ">=20 mm"))
# LIDC texture rating 1-5 (Non-Solid/GGO, Non-Solid/Mixed, Part Solid/Mixed, Solid/Mixed, Solid) in three groups
TEXTURE_GROUPS = {1: "ground-glass", 2: "ground-glass", 3: "part-solid", 4: "solid", 5: "solid"}


@dataclass(frozen=True)
class Nodule:
    crop: str
    patient_id: str
    nodule_id: str
    centre_mm: tuple[float, float, float]  # world (x, y, z) as in the csv
    diameter_mm: float
    texture: str  # solid | part-solid | ground-glass | unknown
    diagnosis: str
    malignancy: int | None
    image_path: Path
    mask_path: Path
    subtlety: int | None = None  # the readers' median rating, 1 (extremely subtle) … 5 (obvious)

    @property
    def diameter_band(self) -> str:
        return diameter_band(self.diameter_mm)


def diameter_band(diameter_mm: float) -> str:
    for lo, hi, name in DIAMETER_BANDS:
        if lo <= diameter_mm < hi:
            return name
    return DIAMETER_BANDS[-1][2]


def texture_group(value) -> str:
    try:
        return TEXTURE_GROUPS.get(int(round(float(value))), "unknown")
    except (TypeError, ValueError):
        return "unknown"


def _rating(value) -> int | None:
    try:
        return int(round(float(value)))
    except (TypeError, ValueError):
        return None


def is_lidc_layout(root: str | Path) -> bool:
    root = Path(root)
    return (root / "nodules.csv").is_file() and (root / "image").is_dir() and (root / "nodule_mask").is_dir()


def read_nodules(root: str | Path) -> list[Nodule]:
    """Every crop listed in ``nodules.csv`` whose image and mask exist; a missing file is an error."""
    root = Path(root)
    if not is_lidc_layout(root):
        raise InputError(f"{root}: not an LIDC crop folder (needs nodules.csv, image/, nodule_mask/)")
    nodules = []
    with open(root / "nodules.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            crop = row["crop"].strip()
            image, mask = root / "image" / f"{crop}.nii.gz", root / "nodule_mask" / f"{crop}.nii.gz"
            if not image.is_file() or not mask.is_file():
                raise InputError(f"{root}: crop {crop} is listed in nodules.csv but its image or mask is missing")
            try:
                malignancy = int(float(row.get("Malignancy_value") or "nan"))
            except ValueError:
                malignancy = None
            nodules.append(Nodule(
                crop=crop, patient_id=row["patient_id"].strip(), nodule_id=str(row["nodule_id"]).strip(),
                centre_mm=(float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])),
                diameter_mm=float(row["diameter_mm"]),
                texture=texture_group(row.get("Texture_value")),
                diagnosis=str(row.get("Diagnosis", "")).strip().lower(), malignancy=malignancy,
                image_path=image, mask_path=mask, subtlety=_rating(row.get("Subtlety_value"))))
    if not nodules:
        raise InputError(f"{root}: nodules.csv lists no crops")
    return nodules


def load_crop(nodule: Nodule) -> tuple[Volume, np.ndarray]:
    """The crop as a canonical (LPS) HU volume and its bool nodule mask on the same grid."""
    image = sitk.ReadImage(str(nodule.image_path))
    mask = sitk.ReadImage(str(nodule.mask_path))
    if image.GetSize() != mask.GetSize():
        raise InputError(f"{nodule.crop}: image {image.GetSize()} and mask {mask.GetSize()} differ in size")
    mask.CopyInformation(image)
    return to_canonical(image), to_canonical(mask).array > 0


# --------------------------------------------------------------------------------------------
# the split


def _is_validation(patient_id: str, fraction: float) -> bool:
    h = int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def make_split(nodules: list[Nodule], validation_fraction: float = 0.2) -> dict[str, str]:
    """patient_id → "train" | "validation", decided by a hash of the patient id (stable as data grows)."""
    return {p: ("validation" if _is_validation(p, validation_fraction) else "train")
            for p in sorted({n.patient_id for n in nodules})}


def write_split(split: dict[str, str], path: Path = SPLIT_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "split"])
        for p in sorted(split):
            w.writerow([p, split[p]])


def read_split(path: Path = SPLIT_FILE) -> dict[str, str]:
    if not Path(path).is_file():
        raise InputError(f"{path}: split file missing")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    split: dict[str, str] = {}
    for r in rows:
        p, s = r["patient_id"].strip(), r["split"].strip()
        if s not in ("train", "validation"):
            raise InputError(f"{path}: patient {p} has unknown split {s!r}")
        if p in split and split[p] != s:
            raise InputError(f"{path}: patient {p} is on both sides of the split")
        split[p] = s
    return split


UNSEEN = "unseen"  # a patient the split file does not list: no model was trained on it


def side_of(patient_id: str, split: dict[str, str]) -> str:
    return split.get(patient_id, UNSEEN)


def nodules_in(nodules: list[Nodule], side: str, split: dict[str, str] | None = None) -> list[Nodule]:
    """The nodules of one side of the split.  Patients the split file does not list were never trained on:
    they are evaluated with the validation side (``side="validation"``) and never used for training."""
    split = split if split is not None else read_split()
    sides = {side, UNSEEN} if side == "validation" else {side}
    return [n for n in nodules if side_of(n.patient_id, split) in sides]
