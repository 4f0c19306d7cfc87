"""Clinical reviews: the verdicts on study cases, and the accept/reject decisions on any case.

Two kinds of record:

- a study *verdict* (:class:`Review`, table ``reviews``): which contour of a study case is
  clinically acceptable, ``automatic``, ``manual`` or ``none``; one per reviewer and case, a new
  verdict replaces the reviewer's earlier one.  The study report and ``export --db`` read these.
- a *case review* (:class:`CaseReview`, table ``case_reviews``): the accept/reject decisions on
  any opened case (the viewer, ``python -m lungseg review``), per contour and, for the automatic
  contour, per lesion.  Every review is kept; the newest is the current one.  A case review of a
  study case (``study=``/``case_id=``) also sets the reviewer's study verdict (see
  :func:`study_verdict`), so the study report and export see it.

A case review also lists the lesions a reviewer added to the automatic contour by a click in the viewer
(:class:`AddedLesion`): each with who added it and when, and its mask (compact, exact: see
:mod:`lungseg.maskcodec`) stored once in ``lesion_masks``.  Like the decisions, the list is that of the
review: the next review carries it over, or leaves a removed lesion out.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from lungseg.maskcodec import PackedMask
from lungseg.study.access import AccessDenied, AdminSession, RaterSession, actor_name
from lungseg.study.core import MAX_COMMENT, clean_name
from lungseg.study.design import StudyError, canonical_specialty
from lungseg.study.studies import Study
from lungseg.study.votes import Voting


@dataclass(frozen=True)
class Review:
    """One clinical verdict on a case, by a rater (``rater_id``) or by an admin (``admin``)."""

    case_id: str
    rater_id: int | None
    accepted_source: str
    reason: str
    reviewed_at: str
    admin: str | None = None


CONTOURS = ("automatic", "manual")
REVIEWER_KINDS = ("admin", "rater", "local")


@dataclass(frozen=True)
class ContourDecision:
    """The verdict on one contour of a case.

    ``contour``: ``"automatic"`` or ``"manual"``.  ``lesions`` (automatic contour only, with
    ``accepted=True``): the accepted lesions, numbered as in the case's lesion table (1-based,
    largest first); ``None`` means the whole contour.  ``name``: what the contour was, e.g. the
    manual ROI name (``"GTV-1"``) or the model version.  Bad values raise :class:`StudyError`.
    """

    contour: str
    accepted: bool
    lesions: tuple[int, ...] | None = None
    name: str | None = None

    def __post_init__(self):
        if self.contour not in CONTOURS:
            raise StudyError(f"contour {self.contour!r}: choose automatic or manual")
        if not isinstance(self.accepted, bool):
            raise StudyError(f"{self.contour} contour: accepted must be true or false, got {self.accepted!r}")
        if self.lesions is not None:
            if self.contour != "automatic":
                raise StudyError("lesions can be chosen on the automatic contour only")
            if not self.accepted:
                raise StudyError("lesion numbers name the accepted lesions: give them with accepted=True")
            numbers = tuple(self.lesions) if isinstance(self.lesions, (list, tuple)) else None
            if not numbers:
                raise StudyError("accepted lesions: give at least one lesion number, or None for the whole contour")
            bad = [n for n in numbers if isinstance(n, bool) or not isinstance(n, int) or n < 1]
            if bad:
                raise StudyError(f"lesion numbers are whole numbers from 1 (largest lesion first), got {bad[0]!r}")
            object.__setattr__(self, "lesions", tuple(sorted(set(numbers))))
        if self.name is not None:
            object.__setattr__(self, "name", clean_name(self.name, f"{self.contour} contour name"))

    def as_dict(self) -> dict[str, Any]:
        return {"contour": self.contour, "accepted": self.accepted,
                "lesions": None if self.lesions is None else list(self.lesions), "name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ContourDecision":
        lesions = data.get("lesions")
        return cls(data["contour"], data["accepted"], None if lesions is None else tuple(lesions), data.get("name"))

    @property
    def whole(self) -> bool:
        """Accepted as a whole (not only some lesions)."""
        return self.accepted and self.lesions is None


@dataclass(frozen=True)
class AddedLesion:
    """A lesion added to a case's automatic contour by a click (``point_mm``, LPS).

    ``number``: 1, 2, ... within the case (shown as ``C1``, ``C2``, ...); ``mask``: on the case's
    canonical grid.  ``added_by``/``added_at`` are stamped by the store when the lesion is first
    recorded (leave them None) and kept when a later review carries the lesion over.
    """

    number: int
    mask: PackedMask
    point_mm: tuple[float, float, float] | None = None
    volume_ml: float = 0.0
    longest_axial_diameter_mm: float = 0.0
    added_by: str | None = None
    added_at: str | None = None

    def __post_init__(self):
        if isinstance(self.number, bool) or not isinstance(self.number, int) or self.number < 1:
            raise StudyError(f"an added lesion's number is a whole number from 1, got {self.number!r}")
        if not isinstance(self.mask, PackedMask):
            raise StudyError(f"added lesion C{self.number}: its mask must be a PackedMask (lungseg.maskcodec.pack)")
        if self.point_mm is not None:
            point = tuple(float(v) for v in self.point_mm)
            if len(point) != 3 or not all(math.isfinite(v) for v in point):
                raise StudyError(f"added lesion C{self.number}: the click point needs three finite mm coordinates")
            object.__setattr__(self, "point_mm", point)
        for name in ("volume_ml", "longest_axial_diameter_mm"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise StudyError(f"added lesion C{self.number}: {name} must be a finite number >= 0")
            object.__setattr__(self, name, value)

    @property
    def label(self) -> str:
        return f"C{self.number}"

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "mask": self.mask.digest, "point_mm": None if self.point_mm is None else
                list(self.point_mm), "volume_ml": self.volume_ml,
                "longest_axial_diameter_mm": self.longest_axial_diameter_mm, "added_by": self.added_by,
                "added_at": self.added_at}


@dataclass(frozen=True)
class CaseReview:
    """One accept/reject review of a case, as recorded (see :meth:`Reviewing.record_case_review`).

    ``reviewer_kind``: ``"admin"``, ``"rater"`` or ``"local"`` (the user of a single-user install);
    ``decided_at``: ISO 8601 UTC; ``source``: the case's ``CaseSource.as_dict()`` (``{}`` if not
    given); ``study``/``case_id``: the study and its case id when the review is of a study case.
    """

    id: int
    case_key: str
    case_label: str
    reviewer: str
    reviewer_kind: str
    decided_at: str
    decisions: tuple[ContourDecision, ...]
    comment: str
    source: dict
    study: str | None
    case_id: str | None
    added: tuple[AddedLesion, ...] = ()

    def decision(self, contour: str) -> ContourDecision | None:
        """The decision on ``"automatic"`` or ``"manual"``, or None if the review has none."""
        if contour not in CONTOURS:
            raise StudyError(f"contour {contour!r}: choose automatic or manual")
        return next((d for d in self.decisions if d.contour == contour), None)

    @property
    def accepted(self) -> tuple[ContourDecision, ...]:
        return tuple(d for d in self.decisions if d.accepted)


def study_verdict(decisions: Iterable[ContourDecision], added: Iterable[AddedLesion] = ()) -> str:
    """The study verdict (``reviews.accepted_source``) a case review stands for.

    The accepted contour (``"automatic"`` also when only some of its lesions are accepted, or when
    lesions were added to it by click), or ``"none"`` when no contour is accepted.  A study verdict
    names one contour: accepting both is refused.
    """
    accepted = sorted({d.contour for d in decisions if d.accepted} | ({"automatic"} if tuple(added) else set()))
    if len(accepted) > 1:
        raise StudyError("a study verdict accepts one contour (automatic or manual), not both")
    return accepted[0] if accepted else "none"


def source_record(source: Any) -> tuple[str, str]:
    """(canonical JSON, lookup key) of a case source: a ``CaseSource``, its ``as_dict()``, or None."""
    if source is None:
        data: Any = {}
    elif hasattr(source, "as_dict"):
        data = source.as_dict()
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise StudyError(f"a review's source must be a CaseSource or its as_dict(), got {type(source).__name__}")
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        raise StudyError("a review's source must be plain JSON data (CaseSource.as_dict())") from None
    return text, hashlib.sha256(text.encode()).hexdigest()[:32]


def _decisions(decisions: Any, added: tuple[AddedLesion, ...] = (), allow_empty: bool = False) -> tuple[ContourDecision, ...]:
    if isinstance(decisions, (ContourDecision, Mapping, str)) or not isinstance(decisions, Iterable):
        raise StudyError("decisions must be a list of ContourDecision")
    out = tuple(d if isinstance(d, ContourDecision) else ContourDecision.from_dict(d) if isinstance(d, Mapping)
                else _not_a_decision(d) for d in decisions)
    if not out and not added and not allow_empty:
        raise StudyError("a review needs a decision on at least one contour")
    seen = [d.contour for d in out]
    if len(set(seen)) != len(seen):
        raise StudyError("one decision per contour: the review names a contour twice")
    return out


def _not_a_decision(value: Any) -> ContourDecision:
    raise StudyError(f"decisions must be ContourDecision, got {type(value).__name__}")


def _added(added: Any) -> tuple[AddedLesion, ...]:
    if isinstance(added, (AddedLesion, Mapping, str)) or not isinstance(added, Iterable):
        raise StudyError("added lesions must be a list of AddedLesion")
    out = tuple(added)
    bad = [a for a in out if not isinstance(a, AddedLesion)]
    if bad:
        raise StudyError(f"added lesions must be AddedLesion, got {type(bad[0]).__name__}")
    numbers = [a.number for a in out]
    if len(set(numbers)) != len(numbers):
        raise StudyError("added lesions: each number once")
    shapes = {tuple(a.mask.shape) for a in out}
    if len(shapes) > 1:
        raise StudyError("added lesions of one case lie on one grid")
    return tuple(sorted(out, key=lambda a: a.number))


_CASE_REVIEW_SQL = (
    "SELECT cr.id, cr.case_key, cr.case_label, cr.reviewer, cr.reviewer_kind, cr.decided_at, cr.decisions_json, "
    "cr.comment, cr.source_json, cr.added_json, s.name AS study, c.case_key AS study_case "
    "FROM case_reviews cr LEFT JOIN studies s ON s.id = cr.study_id LEFT JOIN cases c ON c.id = cr.study_case_id "
)


def _case_review(row: Mapping[str, Any], masks: Mapping[str, PackedMask]) -> CaseReview:
    added = tuple(
        AddedLesion(int(a["number"]), masks[a["mask"]], None if a.get("point_mm") is None else tuple(a["point_mm"]),
                    a.get("volume_ml") or 0.0, a.get("longest_axial_diameter_mm") or 0.0, a.get("added_by"),
                    a.get("added_at"))
        for a in json.loads(row["added_json"] or "[]"))
    return CaseReview(
        id=row["id"], case_key=row["case_key"], case_label=row["case_label"], reviewer=row["reviewer"],
        reviewer_kind=row["reviewer_kind"], decided_at=row["decided_at"],
        decisions=tuple(ContourDecision.from_dict(d) for d in json.loads(row["decisions_json"])),
        comment=row["comment"], source=json.loads(row["source_json"]), study=row["study"], case_id=row["study_case"],
        added=added)


class Reviewing(Voting):
    """Clinical verdicts on study cases (by raters and admins) and reviews of any case."""

    @staticmethod
    def _verdict(accepted_source: Any, reason: Any) -> tuple[str, str]:
        source = str(accepted_source or "").strip().lower()
        if source not in ("automatic", "manual", "none"):
            raise StudyError(f"accepted source must be automatic, manual or none, got {accepted_source!r}")
        reason = str(reason or "").strip()
        if len(reason) > MAX_COMMENT:
            raise StudyError(f"reason must be at most {MAX_COMMENT} characters")
        return source, reason

    def record_review(self, session: RaterSession, case_id: str, accepted_source: str, reason: str = "") -> Review:
        """The clinical verdict of the signed-in rater on a whole case of their study.

        ``accepted_source``: ``"automatic"``, ``"manual"`` or ``"none"`` (neither is clinically
        acceptable); ``reason`` is free text.  Recording again replaces the earlier verdict.
        """
        source, reason = self._verdict(accepted_source, reason)
        now = self.now_iso()
        with self.transaction() as conn:
            self._check_session(conn, session)
            row = self._case_row(conn, session.study_id, case_id)
            if row is None:
                raise AccessDenied(f"case {case_id} is not part of your study")
            conn.execute(
                "INSERT INTO reviews (study_id, case_id, rater_id, accepted_source, reason, reviewed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, rater_id) DO UPDATE SET "
                "accepted_source = excluded.accepted_source, reason = excluded.reason, "
                "reviewed_at = excluded.reviewed_at, case_review_id = NULL",
                (session.study_id, row[0], session.rater_id, source, reason, now),
            )
        return Review(str(case_id), session.rater_id, source, reason, now)

    @staticmethod
    def _case_row(conn: sqlite3.Connection, study_id: int, case_id: str):
        """The ``cases`` row id of ``case_id`` in a study, or None."""
        return conn.execute("SELECT id FROM cases WHERE study_id = ? AND case_key = ?", (study_id, str(case_id))).fetchone()

    def record_admin_review(
        self,
        admin: AdminSession,
        study: "str | int | Study",
        case_id: str,
        accepted_source: str,
        reason: str = "",
        *,
        specialty: str | None = None,
    ) -> Review:
        """The clinical verdict of a signed-in admin on a case of ``study`` (not blinded).

        As :meth:`record_review`, but the reviewer is the admin (no rater record, no items):
        recording again replaces the same admin's earlier verdict on that case.  ``specialty``
        (optional) is kept with the verdict.  Raises :class:`AccessDenied` for an expired or
        forged session.  Audited as ``review.recorded``.
        """
        source, reason = self._verdict(accepted_source, reason)
        spec = None if specialty is None else canonical_specialty(specialty)
        st = self.study(study)
        now = self.now_iso()
        with self.transaction() as conn:
            self._check_admin(conn, admin)
            row = self._case_row(conn, st.id, case_id)
            if row is None:
                raise StudyError(f"case {case_id} is not in study {st.name!r}")
            previous = conn.execute(
                "SELECT accepted_source FROM reviews WHERE case_id = ? AND admin_username = ?",
                (row[0], admin.username),
            ).fetchone()
            conn.execute(
                "INSERT INTO reviews (study_id, case_id, admin_username, specialty, accepted_source, reason, "
                "reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, admin_username) DO UPDATE SET "
                "specialty = excluded.specialty, accepted_source = excluded.accepted_source, "
                "reason = excluded.reason, reviewed_at = excluded.reviewed_at, case_review_id = NULL",
                (st.id, row[0], admin.username, spec, source, reason, now),
            )
            self.audit(admin, "review.recorded", study=st.name, case=str(case_id), accepted=source,
                       replaced=previous[0] if previous else None)
        return Review(str(case_id), None, source, reason, now, admin=admin.username)

    def reviews_table(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """Every clinical verdict of a study as plain rows, newest first.

        Rater and admin reviews alike: ``reviewer_kind`` is ``"rater"`` or ``"admin"``;
        ``rater_id`` is the rater's id (as in :meth:`votes_table`) or ``admin:<username>``,
        ``rater_name`` the rater's display name or the admin's username, ``rater_group`` the
        specialty (for an admin, the one given with the verdict, if any).  The first row of a
        case is its latest verdict (see :meth:`latest_review`).  ``case_review_id`` is the
        :class:`CaseReview` the verdict came from (which lesions were accepted), or None.
        """
        return self._rows(
            "SELECT CASE WHEN v.rater_id IS NULL THEN 'admin:' || v.admin_username "
            "ELSE COALESCE(r.external_id, CAST(r.id AS TEXT)) END AS rater_id, "
            "COALESCE(r.display_name, v.admin_username) AS rater_name, "
            "COALESCE(r.specialty, v.specialty) AS rater_group, "
            "CASE WHEN v.rater_id IS NULL THEN 'admin' ELSE 'rater' END AS reviewer_kind, "
            "c.case_key AS case_id, v.accepted_source, v.reason, v.reviewed_at, v.case_review_id "
            "FROM reviews v LEFT JOIN raters r ON r.id = v.rater_id JOIN cases c ON c.id = v.case_id "
            "WHERE v.study_id = ? ORDER BY v.reviewed_at DESC, v.id DESC",
            (self.study(study).id,),
        )

    def latest_review(self, study: "str | int | Study", case_id: str) -> dict[str, Any] | None:
        """The newest verdict on a case (by a rater or an admin), a :meth:`reviews_table` row."""
        return next((r for r in self.reviews_table(study) if r["case_id"] == str(case_id)), None)

    # -- reviews of any case -----------------------------------------------------------------

    def record_case_review(
        self,
        case_key: str,
        case_label: str,
        reviewer: "str | AdminSession | RaterSession",
        decisions: Iterable[ContourDecision],
        comment: str = "",
        source: Any = None,
        study: "str | int | Study | None" = None,
        case_id: str | None = None,
        added: Iterable[AddedLesion] = (),
        allow_empty: bool = False,
    ) -> CaseReview:
        """Record the accept/reject decisions of ``reviewer`` on an opened case (one transaction).

        ``case_key``: the case's content key (``Case.key``); ``case_label``: its label (never a
        patient identifier).  ``reviewer``: a plain name is the local user of a single-user
        install (``reviewer_kind="local"``); an :class:`AdminSession` or a :class:`RaterSession`
        is re-checked against the database (expired, revoked or forged sessions are refused).
        ``decisions``: at most one :class:`ContourDecision` per contour (the store checks their form;
        that lesion numbers exist in the case's lesion table is checked by the caller, who has the
        case: :func:`lungseg.review.decisions_for`).  ``source``: the
        ``CaseSource`` the case was opened from (or its ``as_dict()``), so that
        :meth:`latest_case_review` can tell reviews of the same case with another manual ROI apart.

        With ``study`` and ``case_id`` (a case of that study) the review also becomes the
        reviewer's study verdict (:func:`study_verdict`: the accepted contour, or ``none``),
        replacing their earlier one, so :meth:`latest_review`, :meth:`reviews_table` and the study
        report see it.  A local user cannot review a study case, and a rater only a case of their
        own study.  Every review is audited as ``case_review.recorded``.

        ``added``: the lesions added to the automatic contour by click that stand with this review
        (:class:`AddedLesion`); one without ``added_by`` is new and gets this reviewer and time.  A
        review may hold added lesions and no decision; with ``allow_empty`` it may hold neither (the
        removal of the last added lesion records no decision the reviewer did not make).
        """
        key = clean_name(case_key, "case key")
        label = " ".join(str(case_label or "").split())[:200]
        added = _added(added)
        chosen = _decisions(decisions, added, allow_empty)
        comment = str(comment or "").strip()
        if len(comment) > MAX_COMMENT:
            raise StudyError(f"comment must be at most {MAX_COMMENT} characters")
        source_json, source_key = source_record(source)
        if (study is None) != (case_id is None):
            raise StudyError("a review of a study case needs both the study and the case id")
        st = None if study is None else self.study(study)
        verdict = None if st is None else study_verdict(chosen, added)
        if isinstance(reviewer, AdminSession):
            kind, name = "admin", reviewer.username
        elif isinstance(reviewer, RaterSession):
            kind, name = "rater", reviewer.display_name
        elif isinstance(reviewer, str):
            kind, name = "local", clean_name(reviewer, "reviewer name")
            if st is not None:
                raise AccessDenied("a review of a study case needs a signed-in admin or rater")
        else:
            raise StudyError(f"reviewer must be a name or a signed-in session, got {type(reviewer).__name__}")
        now = self.now_iso()
        added = tuple(a if a.added_by else replace(a, added_by=name, added_at=now) for a in added)
        with self.transaction() as conn:
            if kind == "admin":
                self._check_admin(conn, reviewer)
            elif kind == "rater":
                self._check_session(conn, reviewer)
                if st is not None and st.id != reviewer.study_id:
                    raise AccessDenied(f"case {case_id} is not part of your study")
            study_case = None
            if st is not None:
                row = self._case_row(conn, st.id, str(case_id))
                if row is None:
                    raise StudyError(f"case {case_id} is not in study {st.name!r}")
                study_case = row[0]
            for a in added:
                m = a.mask
                conn.execute(
                    "INSERT INTO lesion_masks (digest, shape_json, box_json, voxels, data) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO NOTHING",
                    (m.digest, json.dumps(list(m.shape)), json.dumps(list(m.box)), m.voxels, m.data),
                )
            cur = conn.execute(
                "INSERT INTO case_reviews (case_key, case_label, reviewer, reviewer_kind, admin_username, rater_id, "
                "decided_at, decisions_json, comment, source_json, source_key, study_id, study_case_id, added_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, label, name, kind, name if kind == "admin" else None,
                 reviewer.rater_id if kind == "rater" else None, now,
                 json.dumps([d.as_dict() for d in chosen]), comment, source_json, source_key,
                 None if st is None else st.id, study_case, json.dumps([a.as_dict() for a in added])),
            )
            review_id = int(cur.lastrowid)
            if st is not None:
                who = "admin_username" if kind == "admin" else "rater_id"
                conn.execute(
                    f"INSERT INTO reviews (study_id, case_id, {who}, accepted_source, reason, reviewed_at, "
                    f"case_review_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, {who}) DO UPDATE SET "
                    "accepted_source = excluded.accepted_source, reason = excluded.reason, "
                    "reviewed_at = excluded.reviewed_at, case_review_id = excluded.case_review_id",
                    (st.id, study_case, name if kind == "admin" else reviewer.rater_id, verdict, comment, now,
                     review_id),
                )
            self.audit(reviewer if kind == "admin" else actor_name(name), "case_review.recorded",
                       review_id=review_id, case_key=key, case=label, reviewer_kind=kind,
                       decisions=[d.as_dict() for d in chosen], added=[a.label for a in added],
                       study=None if st is None else st.name,
                       case_id=None if case_id is None else str(case_id), verdict=verdict)
        return self.case_review(review_id)

    def case_review(self, review_id: int) -> CaseReview:
        """A case review by its id; :class:`StudyError` if there is none."""
        row = self._one(_CASE_REVIEW_SQL + "WHERE cr.id = ?", (int(review_id),))
        if row is None:
            raise StudyError(f"no case review {review_id}")
        return self._with_masks([row])[0]

    def case_reviews(self, case_key: str) -> list[CaseReview]:
        """Every review of a case (by its content key), newest first."""
        rows = self._rows(_CASE_REVIEW_SQL + "WHERE cr.case_key = ? ORDER BY cr.decided_at DESC, cr.id DESC",
                          (str(case_key),))
        return self._with_masks(rows)

    def latest_case_review(self, case_key: str, source: Any = None) -> CaseReview | None:
        """The newest review of a case; with ``source`` (a ``CaseSource`` or its ``as_dict()``),
        the newest made on that same source (same manual ROI, same automatic contour, ...)."""
        sql, params = _CASE_REVIEW_SQL + "WHERE cr.case_key = ?", [str(case_key)]
        if source is not None:
            sql += " AND cr.source_key = ?"
            params.append(source_record(source)[1])
        row = self._one(sql + " ORDER BY cr.decided_at DESC, cr.id DESC LIMIT 1", params)
        return None if row is None else self._with_masks([row])[0]

    def _with_masks(self, rows: list[Mapping[str, Any]]) -> list[CaseReview]:
        """Case reviews from their rows, with the masks of their added lesions."""
        masks = self._masks_by_digest(a["mask"] for r in rows for a in json.loads(r["added_json"] or "[]"))
        return [_case_review(r, masks) for r in rows]

    def _masks_by_digest(self, digests: Iterable[str]) -> dict[str, PackedMask]:
        """The stored masks (``lesion_masks``) of these digests."""
        digests = sorted({d for d in digests if d})
        out: dict[str, PackedMask] = {}
        for i in range(0, len(digests), 500):
            chunk = digests[i:i + 500]
            for m in self._rows(f"SELECT digest, shape_json, box_json, voxels, data FROM lesion_masks WHERE digest IN "
                                f"({', '.join('?' * len(chunk))})", chunk):
                out[m["digest"]] = PackedMask(tuple(json.loads(m["shape_json"])), tuple(json.loads(m["box_json"])),
                                              int(m["voxels"]), bytes(m["data"]))
        return out
