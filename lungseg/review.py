"""Accepting or rejecting a case's automatic and manual contours, and what was accepted.

The decision is stored by the study database (:meth:`lungseg.study.StudyStore.record_case_review`) with who
and when; this module turns a clinician's choice into decisions and a stored review back into the accepted
masks that :func:`export_accepted` writes onto the source CT.  The viewer, the study's Review page and the
``review`` / ``export --accepted`` commands all go through here.

Lesions added by a click in the viewer (:func:`add_lesion`, :func:`remove_added_lesion`) join the
automatic contour: they are accepted by being added, exported as part of ``GTV-auto``, and carried from
one review of the case to the next until removed.
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


def record(store, case, reviewer, accept, lesions=None, comment: str = "", study=None, case_id=None, added=None):
    """Store a review of ``case`` (who and when are recorded by the store).  ``added``: the lesions added
    by click that stand with it; None keeps those of the case's latest review."""
    if added is None:
        prev = latest(store, case)
        added = prev.added if prev is not None else ()
    return store.record_case_review(case.key, case.label, reviewer, decisions_for(case, accept, lesions),
                                    comment=comment, source=case.source.as_dict(), study=study, case_id=case_id,
                                    added=added)


def add_lesion(store, case, reviewer, mask: np.ndarray, point_mm=None, comment: str = ""):
    """Add the lesion ``mask`` (bool, the case's canonical grid; e.g. ``segment_at(...).mask``) to the
    automatic contour: a new review keeping the latest one's decisions and added lesions, plus this one
    (numbered C1, C2, ...).  Returns the new review."""
    from lungseg.lesion.segment import measure
    from lungseg.maskcodec import pack
    from lungseg.study import AddedLesion

    mask = np.asarray(mask)
    if mask.shape != tuple(case.volume.shape):
        raise InputError(f"{case.label}: a lesion mask of shape {mask.shape} does not fit the case's grid "
                         f"{tuple(case.volume.shape)}")
    packed = pack(mask)
    prev = latest(store, case)
    before = prev.added if prev is not None else ()
    same = next((a for a in before if a.mask.digest == packed.digest), None)
    if same is not None:
        raise InputError(f"{case.label}: this lesion is already added (C{same.number})")
    ml, longest, _ = measure(mask.astype(bool, copy=False), case.volume)
    number = max((a.number for a in before), default=0) + 1
    new = AddedLesion(number, packed, point_mm, round(ml, 2), round(longest, 1))
    return store.record_case_review(case.key, case.label, reviewer, prev.decisions if prev is not None else (),
                                    comment=comment or f"added lesion C{number} by click",
                                    source=case.source.as_dict(), added=(*before, new))


def remove_added_lesion(store, case, reviewer, number: int, comment: str = ""):
    """A new review without the added lesion C``number`` (the latest one's decisions kept).  With
    nothing else left in the review, it records every contour of the case as rejected."""
    prev = latest(store, case)
    before = prev.added if prev is not None else ()
    if all(a.number != number for a in before):
        have = ", ".join(a.label for a in before) or "none"
        raise InputError(f"{case.label}: no added lesion C{number} (added lesions: {have})")
    after = tuple(a for a in before if a.number != number)
    decisions = prev.decisions or (() if after else decisions_for(case, set()))
    return store.record_case_review(case.key, case.label, reviewer, decisions,
                                    comment=comment or f"removed added lesion C{number}",
                                    source=case.source.as_dict(), added=after)


def added_mask(case, review) -> np.ndarray | None:
    """The union of the review's lesions added by click on the case's grid, or None if it has none."""
    from lungseg.maskcodec import unpack_box

    if not review.added:
        return None
    shape = tuple(case.volume.shape)
    out = np.zeros(shape, dtype=bool)
    for a in review.added:
        if tuple(a.mask.shape) != shape:
            raise InputError(f"{case.label}: added lesion {a.label} was drawn on a grid of {tuple(a.mask.shape)}, "
                             f"not this case's {shape}")
        out[a.mask.box_slices] |= unpack_box(a.mask)
    return out


def added_lesion_rows(case, review) -> list[dict]:
    """One row per lesion added by click, in the lesion table's terms (``lesion`` is ``"C1"``, ...)."""
    from lungseg.maskcodec import unpack_box

    rows = []
    spine = getattr(case.lungs, "spine_x", None) if getattr(case, "lungs", None) is not None else None
    for a in (review.added if review is not None else ()):
        z0, y0, x0 = a.mask.box[:3]
        centroid = np.argwhere(unpack_box(a.mask)).mean(axis=0) + (z0, y0, x0)
        k = int(round(centroid[0]))
        axis = np.nan if spine is None or k >= len(spine) else float(spine[k])
        midline = case.volume.shape[2] / 2.0 if np.isnan(axis) else axis
        rows.append({"lesion": a.label, "number": a.number, "how": "added by click",
                     "side": "left" if centroid[2] > midline else "right", "volume_ml": a.volume_ml,
                     "longest_axial_diameter_mm": a.longest_axial_diameter_mm, "first_slice": a.mask.box[0],
                     "last_slice": a.mask.box[3] - 1, "centroid_slice": k,
                     "centroid_mm": [round(float(v), 1) for v in case.volume.index_to_physical(centroid[None])[0]],
                     "added_by": a.added_by, "added_at": a.added_at})
    return rows


def latest(store, case):
    """The newest review of this case as opened (same CT, same manual contour), or None."""
    return store.latest_case_review(case.key, source=case.source.as_dict())


def accepted_masks(case, review) -> dict[str, np.ndarray]:
    """ROI name → accepted mask on the case's canonical grid (empty when everything was rejected); the
    lesions added by click are part of the automatic ROI."""
    masks: dict[str, np.ndarray] = {}
    auto = review.decision("automatic")
    if auto is not None and auto.accepted:
        if case.automatic is None:
            raise InputError(f"{case.label}: the review accepted an automatic contour the case no longer has")
        masks[AUTOMATIC_ROI] = case.automatic.lesion_mask(list(auto.lesions) if auto.lesions else None)
    added = added_mask(case, review)
    if added is not None:
        masks[AUTOMATIC_ROI] = added | masks[AUTOMATIC_ROI] if AUTOMATIC_ROI in masks else added
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
