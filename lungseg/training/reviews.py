"""Training cases from a review database (``train --data reviews:DB``): every contour the department's
clinicians accepted or corrected in lungseg, with its provenance; the automatic lesions they rejected are
hard negatives (crops of the U-Net's training are centred on them, where the target is empty).

Each case reviewed in the database (``case_reviews``: the case's source as it was opened) is opened again,
and :func:`lungseg.structures.accepted_structures` (the structure versions of the editing work) gives what
the newest decisions accept.  Its tumour structures (kinds GTVp, GTVn, GTV: an accepted ``GTV-auto``, a
manual GTV, a structure corrected with ``review --edited``) together are the case's training contour.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np

from lungseg.errors import InputError

TUMOUR_KINDS = ("GTVp", "GTVn", "GTV")


def reviewed_sources(db: Path) -> list[tuple[str, str, dict]]:
    """(case key, case label, source record) of every case with a review, newest source per case."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT case_key, case_label, source_json FROM case_reviews ORDER BY id").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise InputError(f"reviews:{db}: not a lungseg review database ({exc})") from None
    latest = {}
    for key, label, source in rows:
        latest[key] = (key, label, json.loads(source or "{}"))
    return list(latest.values())


def _rejected_lesions(store, case, automatic_name: str) -> list[int]:
    """The automatic contour's lesions whose newest decision rejects them (a whole rejected, unedited
    automatic contour: all of its lesions)."""
    newest = {}
    for d in store.structure_decisions(case.key):
        if d["name"] == automatic_name and int(d["version"]) == 0:
            newest[d["lesion"]] = d["accepted"]
    if newest.get(None) is False:
        return [int(row["lesion"]) for row in case.automatic.lesions]
    return sorted(int(n) for n, ok in newest.items() if n is not None and ok is False)


def review_cases(db: str, cache: Path | None = None) -> list:
    """One :class:`~lungseg.training.sources.TrainingCase` per reviewed case with an accepted tumour
    structure; its contour and its hard negatives written as label images on the CT's grid in ``cache``."""
    import SimpleITK as sitk

    from lungseg.case import CaseSource, open_case
    from lungseg.imaging.io import cache_dir
    from lungseg.study import StudyStore
    from lungseg.training.sources import TrainingCase, _manual

    try:
        from lungseg import structures
    except ImportError:
        raise InputError("reviews: this lungseg has no structure versions (lungseg.structures): update it") from None
    path = Path(db).expanduser()
    if not path.is_file():
        raise InputError(f"reviews:{db}: no such database")
    cache = cache or cache_dir() / "training-reviews"
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    with StudyStore(path) as store:
        for key, label, record in reviewed_sources(path):
            try:
                source = CaseSource.from_dict(record)
            except InputError as exc:
                raise InputError(f"reviews:{db}: case {label}: {exc}") from None
            case = open_case(source)
            accepted = {n: s for n, s in structures.accepted_structures(store, case).items()
                        if structures.kind_of(n) in TUMOUR_KINDS}
            if not accepted:
                continue
            mask = np.any([s.mask for s in accepted.values()], axis=0)
            rejected = _rejected_lesions(store, case, structures.AUTOMATIC_NAME)
            negatives = case.automatic.lesion_mask(rejected) & ~mask if rejected else None
            stem = hashlib.sha256(key.encode()).hexdigest()[:16]
            contour = cache / f"{stem}-contour.nii.gz"
            sitk.WriteImage(case.ct.mask_to_source(mask), str(contour), useCompression=True)
            negative_path = None
            if negatives is not None and negatives.any():
                negative_path = cache / f"{stem}-rejected.nii.gz"
                sitk.WriteImage(case.ct.mask_to_source(negatives), str(negative_path), useCompression=True)
            decisions = {d["name"]: d for d in store.structure_decisions(case.key)}
            review = [{"structure": n, "version": s.version, "provenance": s.provenance, "origin": s.origin,
                       "algorithm": " ".join(x for x in (s.algorithm_name, s.algorithm_version) if x),
                       "reviewer": decisions.get(n, {}).get("reviewer", ""), "at": decisions.get(n, {}).get("decided_at", "")}
                      for n, s in accepted.items()]
            out.append(TrainingCase(label or stem, source.ct, _manual("label", str(contour)), patient_id=label or stem,
                                    negatives=str(negative_path) if negative_path else None,
                                    provenance={"source": f"reviews:{db}", "layout": "review database",
                                                "review": review, "rejected_automatic_lesions": rejected}))
    if not out:
        raise InputError(f"reviews:{db}: no case with an accepted or corrected tumour contour")
    return out
