"""Write labelled cases in the Medical Segmentation Decathlon layout (``imagesTr/``, ``labelsTr/``,
``dataset.json``): to hand a cohort to other tools, and to build small training sets for checks."""

from __future__ import annotations

import json
from pathlib import Path


def write_msd_task(out: Path, cases) -> Path:
    """Each :class:`~lungseg.training.sources.TrainingCase` as ``imagesTr/ID.nii.gz`` and its contour as
    ``labelsTr/ID.nii.gz`` (uint8, on the CT's own grid)."""
    import SimpleITK as sitk
    import numpy as np

    from lungseg.case import load_manual_mask
    from lungseg.imaging.io import load_ct

    out = Path(out)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for case in cases:
        loaded = load_ct(case.ct, label=case.case_id)
        mask = np.asarray(load_manual_mask(case.manual, loaded), bool)
        image = loaded.mask_to_source(loaded.volume.array.astype(np.int16))
        sitk.WriteImage(image, str(out / "imagesTr" / f"{case.case_id}.nii.gz"), useCompression=True)
        sitk.WriteImage(loaded.mask_to_source(mask), str(out / "labelsTr" / f"{case.case_id}.nii.gz"), useCompression=True)
        training.append({"image": f"./imagesTr/{case.case_id}.nii.gz", "label": f"./labelsTr/{case.case_id}.nii.gz"})
    (out / "dataset.json").write_text(json.dumps({"name": out.name, "modality": {"0": "CT"},
                                                  "labels": {"0": "background", "1": "tumour"},
                                                  "numTraining": len(training), "training": training}, indent=1))
    return out
