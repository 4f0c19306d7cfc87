"""Accepting or rejecting a case's automatic and manual contours, and what was accepted.

The decision is stored by the study database (:meth:`lungseg.study.StudyStore.record_case_review`) with who
and when; this module turns a clinician's choice into decisions and a stored review back into the accepted
masks that :func:`export_accepted` writes onto the source CT.  The viewer, the study's Review page and the
``review`` / ``export --accepted`` commands all go through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.errors import InputError

LOCAL_USER = "local user"
AUTOMATIC_ROI = "GTV-auto"


def decisions_for(case, accept: set[str] | list[str] | tuple[str, ...], lesions: list[int] | None = None):
    """Decisions for ``case``: the contours in ``accept`` ("automatic", "manual") are accepted, the others
    rejected; ``lesions`` narrows the accepted automatic contour to those lesion numbers (largest first)."""
    from lungseg.study import ContourDecision

    accept = set(accept)
    unknown = accept - {"automatic", "manual"}
    if unknown:
        raise InputError(f"cannot accept {', '.join(sorted(unknown))}: choose automatic and/or manual")
    if lesions is not None and "automatic" not in accept:
        raise InputError("lesion numbers select parts of the automatic contour: accept automatic with them")
    out = []
    if case.automatic is not None:
        if lesions is not None:
            case.automatic.lesion_mask(lesions)  # refuses numbers that are not in the table
        out.append(ContourDecision("automatic", "automatic" in accept,
                                   tuple(sorted(set(int(n) for n in lesions))) if lesions else None,
                                   case.automatic.version or case.automatic.name))
    elif "automatic" in accept:
        raise InputError(f"{case.label}: there is no automatic contour to accept")
    if case.manual is not None:
        out.append(ContourDecision("manual", "manual" in accept, None, case.manual.name))
    elif "manual" in accept:
        raise InputError(f"{case.label}: there is no manual contour to accept (name its ROI with --roi)")
    return out


def record(store, case, reviewer, accept, lesions=None, comment: str = "", study=None, case_id=None):
    """Store a review of ``case`` (who and when are recorded by the store)."""
    return store.record_case_review(case.key, case.label, reviewer, decisions_for(case, accept, lesions),
                                    comment=comment, source=case.source.as_dict(), study=study, case_id=case_id)


def latest(store, case):
    """The newest review of this case as opened (same CT, same manual contour), or None."""
    return store.latest_case_review(case.key, source=case.source.as_dict())


def accepted_masks(case, review) -> dict[str, np.ndarray]:
    """ROI name → accepted mask on the case's canonical grid (empty when everything was rejected)."""
    masks: dict[str, np.ndarray] = {}
    auto = review.decision("automatic")
    if auto is not None and auto.accepted:
        if case.automatic is None:
            raise InputError(f"{case.label}: the review accepted an automatic contour the case no longer has")
        masks[AUTOMATIC_ROI] = case.automatic.lesion_mask(list(auto.lesions) if auto.lesions else None)
    man = review.decision("manual")
    if man is not None and man.accepted:
        if case.manual is None:
            raise InputError(f"{case.label}: the review accepted a manual contour the case no longer has")
        masks[case.manual.name] = case.manual.mask
    return masks


def export_accepted(case, review, fmt: str, out: str | Path, *, contour: str | None = None,
                    ct_out: str | Path | None = None, description: str | None = None) -> list[Path]:
    """Write the accepted contour(s) of ``case`` onto its source CT.

    SEG and RTSTRUCT hold every accepted contour (one segment / ROI each); NIfTI and NRRD hold one binary
    mask, so with both contours accepted ``contour`` must say which.
    """
    from lungseg.case import with_dicom_headers
    from lungseg.export import export_mask, export_masks, with_dicom_series

    masks = accepted_masks(case, review)
    if contour is not None:
        if contour not in ("automatic", "manual"):
            raise InputError(f"no contour {contour!r}: choose automatic or manual")
        want = AUTOMATIC_ROI if contour == "automatic" else case.manual.name if case.manual else None
        masks = {k: v for k, v in masks.items() if k == want}
    if not masks:
        raise InputError(f"{case.label}: nothing accepted to export (the latest review rejected "
                         f"{'it' if contour else 'both contours'})")
    loaded = with_dicom_headers(case.ct)
    if fmt in ("seg", "rtstruct") and loaded.dicom is None:
        if ct_out is None:
            raise InputError(f"{case.label}: {fmt} needs a DICOM CT to reference; give --ct-out DIR to write it")
        loaded = with_dicom_series(loaded, ct_out)
    if len(masks) == 1:
        (name, mask), = masks.items()
        source = "automatic" if name == AUTOMATIC_ROI else "manual"
        return [export_mask(loaded, mask, fmt, Path(out), name=name, description=description, source=source)]
    if fmt in ("nifti", "nrrd"):
        raise InputError("both contours are accepted: a NIfTI/NRRD mask holds one; choose it with --contour")
    sources = {name: ("automatic" if name == AUTOMATIC_ROI else "manual") for name in masks}
    return [export_masks(loaded, masks, fmt, Path(out), description=description, sources=sources)]
