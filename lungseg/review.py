"""Accepting or rejecting a case's automatic and manual contours as a whole review.

The review is stored by the study database (:meth:`lungseg.study.StudyStore.record_case_review`) with who
and when (on a study case it is also the reviewer's study verdict), and each decision in it is also recorded
as a decision on that structure (:func:`lungseg.structures.decide`'s table), so
:func:`lungseg.structures.accepted_structures` and :func:`lungseg.structures.export_structures` (the one
export path) see it.  The study's Review page and the ``review`` command go through :func:`record`.

Lesions added by a click before structures existed (:func:`add_lesion`, :func:`remove_added_lesion`) are
kept with the case review; each is its own accepted structure (C1, C2, ...), never merged into GTV-auto.
New clicked lesions are created as structures (``structures.create_structure(..., ("mask", m,
"SEMIAUTOMATIC", "click"))``).
"""

from __future__ import annotations


import numpy as np

from lungseg.errors import InputError

LOCAL_USER = "local user"
AUTOMATIC_ROI = "GTV-auto"  # the automatic contour's structure name (lungseg.structures.AUTOMATIC_NAME)


def decisions_for(case, accept: set[str] | list[str] | tuple[str, ...], lesions: list[int] | None = None,
                  decided: set[str] | list[str] | tuple[str, ...] | None = None):
    """Decisions for ``case``: the contours in ``accept`` ("automatic", "manual") are accepted, the others
    rejected; ``lesions`` narrows the accepted automatic contour to those lesion numbers (largest first).
    ``decided``: the contours the user decided on (default: every contour of the case); the others get no
    decision at all, so a form where only the manual contour was touched records nothing on the automatic one."""
    from lungseg.study import ContourDecision

    accept = set(accept)
    decided = {"automatic", "manual"} if decided is None else set(decided)
    if accept - decided:
        raise InputError(f"{', '.join(sorted(accept - decided))} accepted but not among the decided contours")
    unknown = accept - {"automatic", "manual"}
    if unknown:
        raise InputError(f"cannot accept {', '.join(sorted(unknown))}: choose automatic and/or manual")
    if lesions is not None and "automatic" not in accept:
        raise InputError("lesion numbers select parts of the automatic contour: accept automatic with them")
    out = []
    if case.automatic is not None and "automatic" in decided:
        if lesions is not None:
            case.automatic.lesion_mask(lesions)  # refuses numbers that are not in the table
        out.append(ContourDecision("automatic", "automatic" in accept,
                                   tuple(sorted(set(int(n) for n in lesions))) if lesions else None,
                                   case.automatic.version or case.automatic.name))
    elif "automatic" in accept:
        raise InputError(f"{case.label}: there is no automatic contour to accept")
    if case.manual is not None and "manual" in decided:
        out.append(ContourDecision("manual", "manual" in accept, None, case.manual.name))
    elif "manual" in accept:
        raise InputError(f"{case.label}: there is no manual contour to accept (name its ROI with --roi)")
    return out


def record(store, case, reviewer, accept, lesions=None, comment: str = "", study=None, case_id=None, added=None,
           name: str | None = None, decided=None):
    """Store a review of ``case`` (who and when are recorded by the store): the contours in ``accept`` are
    accepted and the case's other contours rejected, as the caller chose them.  ``added``: the lesions added
    by click that stand with it; None keeps those of the case's latest review.  ``name``: the accepted
    contour is decided under that structure name by the caller (:func:`accept_as`), not under its own.
    ``decided``: only these contours get a decision (see :func:`decisions_for`); a review with none is refused."""
    from lungseg import structures

    if added is None:
        prev = latest(store, case)
        added = prev.added if prev is not None else ()
    decisions = decisions_for(case, accept, lesions, decided)
    if not decisions:
        raise InputError(f"{case.label}: nothing was chosen, so nothing is recorded")
    saved = store.record_case_review(case.key, case.label, reviewer, decisions, comment=comment,
                                     source=case.source.as_dict(), study=study, case_id=case_id, added=added)
    rows = []
    for d in decisions:
        if name and d.accepted:
            continue  # recorded by accept_as under its own name
        if d.contour == "automatic":
            basis = str(case.automatic.version or case.automatic.name)
            if d.accepted and d.lesions:
                rows += [{"name": structures.AUTOMATIC_NAME, "accepted": n in d.lesions, "version": 0, "lesion": n,
                          "basis": basis} for n in (int(r["lesion"]) for r in case.automatic.lesions)]
            else:
                rows.append({"name": structures.AUTOMATIC_NAME, "accepted": d.accepted, "version": 0, "lesion": None,
                             "basis": basis})
        else:
            rows.append({"name": case.manual.name, "accepted": d.accepted, "version": 0, "lesion": None})
    if rows:
        store.record_structure_decisions(case.key, case.label, reviewer, rows, comment=comment)
    return saved


def accept_as(store, case, reviewer, name: str, contour: str, lesions=None, edited=None, edited_origin: str = "",
              kind: str | None = None, comment: str = ""):
    """Accept the ``contour`` ("automatic": its ``lesions`` or all of it; "manual": the case's manual ROI) as
    the structure ``name``, optionally as corrected elsewhere (``edited``: a bool mask on the case's grid,
    stored as a new SEMIAUTOMATIC version of the structure, parent = the unedited one, origin
    ``edited_origin``).  The structure is created (version 1, the contour as it is) unless it exists with that
    same mask.  Returns the accepted :class:`~lungseg.structures.StructureVersion`."""
    import numpy as np

    from lungseg import structures

    if contour == "automatic":
        if case.automatic is None:
            raise InputError(f"{case.label}: there is no automatic contour to accept")
        start = ("automatic", list(lesions) if lesions else None)
        start_mask = case.automatic.lesion_mask(list(lesions) if lesions else None)
    elif contour == "manual":
        if case.manual is None:
            raise InputError(f"{case.label}: there is no manual contour to accept (name its ROI with --roi)")
        start, start_mask = ("manual", case.manual.name), case.manual.mask
    else:
        raise InputError(f"cannot accept {contour!r} as {name}: choose automatic or manual")
    kind = kind or structures.kind_of(name)
    if kind not in structures.KINDS:
        kind = "other"
    existing = [v for v in structures.case_structures(store, case) if v.name == name]
    if existing and existing[0].source != "created":
        raise InputError(f"{case.label}: {name!r} is the name of the case's {existing[0].source} contour; "
                         "choose another --name")
    if existing and existing[0].latest is not None and np.array_equal(existing[0].mask(), start_mask):
        version = existing[0].latest
    elif existing and existing[0].latest is not None:
        raise InputError(f"{case.label}: a structure {name!r} with another contour exists already; choose another "
                         "--name")
    else:
        version = structures.create_structure(store, case, reviewer, name, kind, start)
    if edited is not None:
        edited = np.asarray(edited, bool)
        if edited.shape != start_mask.shape:
            raise InputError(f"{case.label}: the edited mask's grid {edited.shape} is not the case's {start_mask.shape}")
        if not np.array_equal(edited, version.array()):
            version = structures.store_edit(store, case, reviewer, name, version.version, edited,
                                            origin=edited_origin or "edited elsewhere", assisted=True)
    structures.decide(store, case, reviewer, name, True, comment=comment, version=version.version)
    return version


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
    """A new review without the added lesion C``number``: the latest one's decisions kept as they were, and
    no decision recorded that the reviewer did not make."""
    prev = latest(store, case)
    before = prev.added if prev is not None else ()
    if all(a.number != number for a in before):
        have = ", ".join(a.label for a in before) or "none"
        raise InputError(f"{case.label}: no added lesion C{number} (added lesions: {have})")
    after = tuple(a for a in before if a.number != number)
    return store.record_case_review(case.key, case.label, reviewer, prev.decisions,
                                    comment=comment or f"removed added lesion C{number}",
                                    source=case.source.as_dict(), added=after, allow_empty=True)


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
