"""Structure versions, per-structure decisions and editing activity in the study database (schema v6).

The rules (what a version, a decision, an origin means) live in :mod:`lungseg.structures`; this module
only stores and reads them, each write in one transaction.  Masks are kept once each in ``lesion_masks``
(keyed by the digest of their :class:`~lungseg.maskcodec.PackedMask`), as the lesions added by click are.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from lungseg.maskcodec import PackedMask
from lungseg.study.access import AdminSession, RaterSession, actor_name
from lungseg.study.core import MAX_COMMENT, clean_name
from lungseg.study.design import StudyError
from lungseg.study.reviews import Reviewing

PROVENANCES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
_VERSION_COLUMNS = ("id, case_key, case_label, name, kind, version, parent, provenance, origin, algorithm, "
                    "algorithm_version, author, created_at, shape_json, mask_digest, operations")


def person(who: "str | AdminSession | RaterSession") -> str:
    """The name recorded for a person: a plain name, or the signed-in admin's / rater's."""
    if isinstance(who, AdminSession):
        return who.username
    if isinstance(who, RaterSession):
        return who.display_name
    return clean_name(who, "user name")


class Structuring(Reviewing):
    """Versions of a case's structures, decisions on them, and the viewer's activity events."""

    def _with_version_masks(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        masks = self._masks_by_digest(r["mask_digest"] for r in rows)
        for r in rows:
            r["shape"] = tuple(json.loads(r.pop("shape_json")))
            r["mask"] = masks.get(r["mask_digest"]) if r["mask_digest"] else None
        return rows

    def add_structure_version(self, case_key: str, case_label: str, name: str, kind: str, *, provenance: str,
                              origin: str, author: "str | AdminSession | RaterSession", shape: tuple[int, ...],
                              mask: PackedMask | None, parent: int | None, expected_latest: int | None,
                              operations: int = 0, algorithm: str = "", algorithm_version: str = "") -> dict[str, Any]:
        """Store the next version of structure ``name`` of a case and return its row (with ``mask``).

        ``expected_latest``: the version the caller built on (0 or None when there is none yet); another
        version stored meanwhile is refused, so two editors never silently overwrite each other.
        """
        key = clean_name(case_key, "case key")
        name = clean_name(name, "structure name", limit=64)
        if provenance not in PROVENANCES:
            raise StudyError(f"provenance {provenance!r}: choose one of {', '.join(PROVENANCES)}")
        if mask is not None and tuple(mask.shape) != tuple(shape):
            raise StudyError(f"structure {name}: a mask of grid {tuple(mask.shape)} on a case of grid {tuple(shape)}")
        who = person(author)
        now = self.now_iso()
        with self.transaction() as conn:
            row = conn.execute("SELECT MAX(version) FROM structure_versions WHERE case_key = ? AND name = ?",
                               (key, name)).fetchone()
            latest = int(row[0] or 0)
            if int(expected_latest or 0) != latest:
                raise StudyError(f"structure {name}: version {latest} was stored meanwhile (this edit was made on "
                                 f"version {int(expected_latest or 0)}); reload it and edit again")
            if mask is not None:
                conn.execute(
                    "INSERT INTO lesion_masks (digest, shape_json, box_json, voxels, data) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO NOTHING",
                    (mask.digest, json.dumps(list(mask.shape)), json.dumps(list(mask.box)), mask.voxels, mask.data))
            cur = conn.execute(
                "INSERT INTO structure_versions (case_key, case_label, name, kind, version, parent, provenance, origin, "
                "algorithm, algorithm_version, author, created_at, shape_json, mask_digest, operations) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, " ".join(str(case_label or "").split())[:200], name, str(kind), latest + 1, parent, provenance,
                 str(origin)[:200], str(algorithm)[:64], str(algorithm_version)[:64], who, now,
                 json.dumps([int(s) for s in shape]), None if mask is None else mask.digest, int(operations)))
            self.audit(actor_name(who), "structure.version", case_key=key, case=case_label, name=name,
                       version=latest + 1, parent=parent, provenance=provenance, origin=str(origin)[:200])
            new_id = int(cur.lastrowid)
        return self._with_version_masks(
            self._rows(f"SELECT {_VERSION_COLUMNS} FROM structure_versions WHERE id = ?", (new_id,)))[0]

    def structure_versions(self, case_key: str, name: str | None = None, *, latest_only: bool = False,
                           with_masks: bool = True) -> list[dict[str, Any]]:
        """Stored versions of a case's structures (of ``name`` only when given), in the order the structures were
        made, each oldest version first; with
        ``latest_only`` the newest version of each structure."""
        sql = f"SELECT {_VERSION_COLUMNS} FROM structure_versions v WHERE case_key = ?"
        params: list[Any] = [str(case_key)]
        if name is not None:
            sql += " AND name = ?"
            params.append(str(name))
        if latest_only:
            sql += (" AND version = (SELECT MAX(version) FROM structure_versions w "
                    "WHERE w.case_key = v.case_key AND w.name = v.name)")
        rows = self._rows(sql + " ORDER BY (SELECT MIN(id) FROM structure_versions w WHERE w.case_key = v.case_key "
                                "AND w.name = v.name), version", params)  # structures in the order they were made
        if with_masks:
            return self._with_version_masks(rows)
        for r in rows:
            r["shape"] = tuple(json.loads(r.pop("shape_json")))
        return rows

    def record_structure_decisions(self, case_key: str, case_label: str, reviewer: "str | AdminSession | RaterSession",
                                   decisions: Iterable[Mapping[str, Any]], comment: str = "") -> list[dict[str, Any]]:
        """Store decisions (each ``{"name", "accepted", "version", "lesion": None|n, "basis": text}``) in one
        transaction; returns the stored rows."""
        key = clean_name(case_key, "case key")
        who = person(reviewer)
        comment = str(comment or "").strip()
        if len(comment) > MAX_COMMENT:
            raise StudyError(f"comment must be at most {MAX_COMMENT} characters")
        items = list(decisions)
        if not items:
            raise StudyError("no decision to record")
        now = self.now_iso()
        ids = []
        with self.transaction() as conn:
            for d in items:
                if not isinstance(d.get("accepted"), bool):
                    raise StudyError(f"structure {d.get('name')}: accepted must be true or false")
                cur = conn.execute(
                    "INSERT INTO structure_decisions (case_key, case_label, name, lesion, version, basis, accepted, "
                    "reviewer, decided_at, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, " ".join(str(case_label or "").split())[:200], clean_name(d["name"], "structure name", 64),
                     d.get("lesion"), int(d.get("version") or 0), str(d.get("basis") or ""), int(d["accepted"]), who,
                     now, comment))
                ids.append(int(cur.lastrowid))
            self.audit(actor_name(who), "structure.decision", case_key=key, case=case_label,
                       decisions=[{k: d.get(k) for k in ("name", "lesion", "version", "accepted")} for d in items])
        return self._rows(f"SELECT * FROM structure_decisions WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY id", ids)

    def structure_decisions(self, case_key: str) -> list[dict[str, Any]]:
        """Every decision on a case's structures, oldest first (the newest per structure / lesion counts)."""
        rows = self._rows("SELECT * FROM structure_decisions WHERE case_key = ? ORDER BY id", (str(case_key),))
        for r in rows:
            r["accepted"] = bool(r["accepted"])
        return rows

    def record_activity(self, case_key: str, user: "str | AdminSession | RaterSession",
                        events: Iterable[tuple[float, str]]) -> int:
        """Store the viewer's interaction events ``(unix seconds, kind)``; returns how many."""
        key = clean_name(case_key, "case key")
        who = person(user)
        rows = []
        for at, kind in events:
            at = float(at)
            if at != at or at <= 0:
                raise StudyError(f"an activity event needs a time in seconds, got {at!r}")
            rows.append((key, who, at, clean_name(kind, "activity kind", 32)))
        if rows:
            with self.transaction() as conn:
                conn.executemany("INSERT INTO activity (case_key, user, at, kind) VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def activity(self, case_key: str, user: str | None = None) -> list[dict[str, Any]]:
        """Activity events of a case (of one user when given), in time order."""
        sql, params = "SELECT user, at, kind FROM activity WHERE case_key = ?", [str(case_key)]
        if user is not None:
            sql += " AND user = ?"
            params.append(str(user))
        return self._rows(sql + " ORDER BY at, id", params)

    def activity_users(self, case_key: str) -> list[str]:
        return [r["user"] for r in self._rows("SELECT DISTINCT user FROM activity WHERE case_key = ? ORDER BY user",
                                              (str(case_key),))]
