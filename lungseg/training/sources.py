"""Where training cases come from: every published layout ``python -m lungseg train --data`` takes.

A SOURCE is one of

* a case: a DICOM folder or ``.zip`` with its RTSTRUCT (the tumour ROI: ``GTV*`` by default);
* a Medical Segmentation Decathlon task folder (``imagesTr/``, ``labelsTr/``, with or without
  ``dataset.json``, as Task06_Lung ships);
* a folder of image/label pairs (``NAME.nii.gz`` beside ``NAME_label|_seg|_mask.nii.gz``);
* a folder of cases (zips or DICOM folders), which covers the NSCLC-Radiomics download layout from
  TCIA (``LUNG1-xxx/STUDY/SERIES/`` with the CT and the RTSTRUCT series);
* LIDC-IDRI crops in the shared layout (``nodules.csv``, ``image/``, ``nodule_mask/``): not hosts but
  real nodules pasted into the hosts' lungs (train-side patients of ``models/lidc_split.csv`` only);
* a training pack made before (``PACK.npz``, :mod:`lungseg.training.pack`): for machines without a
  DICOM reader.

Every case keeps its provenance (where it came from, which contour), which the model card lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lungseg.errors import InputError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")  # lungseg.imaging.io's, without its imports

LABEL_SUFFIXES = ("_label", "_seg", "_mask")


@dataclass(frozen=True)
class TrainingCase:
    """One labelled scan: the CT, its tumour contour and where both came from."""

    case_id: str
    ct: str
    manual: "ManualSource"  # lungseg.case.ManualSource
    patient_id: str = ""  # cases of one patient are held out together (defaults to case_id)
    negatives: str | None = None  # a label image of hard negatives (automatic lesions a reviewer rejected)
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def patient(self) -> str:
        return self.patient_id or self.case_id


@dataclass
class Sources:
    """What ``--data`` names: host cases, LIDC crop folders, training packs."""

    cases: list[TrainingCase] = field(default_factory=list)
    lidc_roots: list[Path] = field(default_factory=list)
    packs: list[Path] = field(default_factory=list)

    def extend(self, other: "Sources") -> None:
        self.cases += other.cases
        self.lidc_roots += other.lidc_roots
        self.packs += other.packs

    def check(self) -> None:
        ids = [c.case_id for c in self.cases]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise InputError(f"training case {dup[0]} is given twice (--data names it in two sources)")
        if not self.cases and not self.packs:
            raise InputError("no training case with a tumour contour in --data "
                             "(case folders or zips with an RTSTRUCT, MSD imagesTr/labelsTr, image/label pairs, TCIA layout)")


def image_stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz",) + IMAGE_SUFFIXES + (".zip",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_image(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)


def _manual(kind: str, path: str | None = None, roi: str | None = None):
    from lungseg.case.sources import ManualSource  # imported here: a pack alone trains without DICOM readers

    return ManualSource(kind, path, roi)


def _msd(root: Path) -> list[TrainingCase]:
    pairs = []
    meta = root / "dataset.json"
    if meta.exists():
        for item in json.loads(meta.read_text()).get("training", []):
            pairs.append((root / item["image"].lstrip("./"), root / item["label"].lstrip("./")))
    else:
        for image in sorted((root / "imagesTr").iterdir()):
            if _is_image(image) and not image.name.startswith("."):
                name = image.name.replace("_0000.", ".")  # nnU-Net's channel suffix
                pairs.append((image, root / "labelsTr" / name))
    cases = []
    for image, label in pairs:
        if not label.exists():
            raise InputError(f"{root}: {image.name} has no label {label.relative_to(root)}")
        case_id = image_stem(image).removesuffix("_0000")
        cases.append(TrainingCase(case_id, str(image), _manual("label", str(label)),
                                  provenance={"source": str(root), "layout": "MSD task folder", "label": str(label.name)}))
    return cases


def _pairs(root: Path) -> list[TrainingCase]:
    cases = []
    for p in sorted(root.iterdir()):
        stem = image_stem(p)
        if not _is_image(p) or p.name.startswith(".") or stem.endswith(LABEL_SUFFIXES):
            continue
        for suffix in LABEL_SUFFIXES:
            hits = sorted(q for q in root.glob(stem + suffix + ".*") if _is_image(q))
            if hits:
                cases.append(TrainingCase(stem, str(p), _manual("label", str(hits[0])),
                                          provenance={"source": str(root), "layout": "image/label pairs",
                                                      "label": hits[0].name}))
                break
    return cases


def _dicom_case(path: Path, roi: str, layout: str) -> TrainingCase:
    case_id = image_stem(path)
    return TrainingCase(case_id, str(path), _manual("rtstruct", None, roi),
                        provenance={"source": str(path), "layout": layout, "roi": roi})


def _holds_dicom(folder: Path) -> bool:
    return any(p.is_file() and (p.suffix.lower() == ".dcm" or p.suffix == "") for p in folder.rglob("*"))


def discover(source: str, roi: str = "GTV*") -> Sources:
    """The training material one ``--data`` SOURCE names (a one-line :class:`InputError` if none)."""
    if source.startswith("reviews:"):
        from lungseg.training.reviews import review_cases

        return Sources(cases=review_cases(source.removeprefix("reviews:")))
    if source.startswith("pacs:"):
        from lungseg.training.pacs import pacs_cases

        return Sources(cases=pacs_cases(source.removeprefix("pacs:"), roi))
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"--data {source}: no such file or folder")
    if path.is_file():
        if path.suffix == ".npz":
            return Sources(packs=[path])
        if path.suffix.lower() == ".zip":
            return Sources(cases=[_dicom_case(path, roi, "DICOM zip with RTSTRUCT")])
        raise InputError(f"--data {source}: a file must be a DICOM .zip or a training pack .npz "
                         "(an image with its label: give their folder)")
    if (path / "nodules.csv").is_file() and (path / "image").is_dir() and (path / "nodule_mask").is_dir():  # LIDC crops
        return Sources(lidc_roots=[path])
    if (path / "imagesTr").is_dir() and (path / "labelsTr").is_dir():
        return Sources(cases=_msd(path))
    pairs = _pairs(path)
    if pairs:
        return Sources(cases=pairs)
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if any(p.is_file() and _is_dicom_name(p) for p in children):
        return Sources(cases=[_dicom_case(path, roi, "DICOM folder with RTSTRUCT")])
    out = Sources()
    for child in children:
        if child.suffix.lower() == ".zip":
            out.cases.append(_dicom_case(child, roi, "folder of DICOM zips"))
        elif child.is_dir() and _holds_dicom(child):
            # NSCLC-Radiomics from TCIA: LUNG1-xxx/STUDY/SERIES/, the CT and RTSTRUCT series under one patient
            out.cases.append(_dicom_case(child, roi, "patient folders (TCIA layout)"))
    if not out.cases:
        raise InputError(f"--data {source}: no labelled case found (expected a DICOM folder or zip with an RTSTRUCT, "
                         "imagesTr/ and labelsTr/, image/label pairs, patient folders or LIDC crops)")
    return out


def _is_dicom_name(p: Path) -> bool:
    if p.suffix.lower() == ".dcm":
        return True
    if p.suffix:
        return False
    with open(p, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def discover_all(sources: list[str], roi: str = "GTV*") -> Sources:
    out = Sources()
    for s in sources:
        out.extend(discover(s, roi))
    out.check()
    return out
