"""Studies, their cases and their items."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Sequence

from lungseg.study.access import AdminSession
from lungseg.study.contouring import ContouringParams
from lungseg.study.core import StoreCore, clean_name
from lungseg.study.design import CaseSpec, DesignParams, ItemSpec, StudyError, plan_items

STUDY_KINDS = ("preference", "contouring")


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    instructions: str
    params: DesignParams | ContouringParams | None  # None for a study made by importing votes or readings
    turing: bool
    created_at: str
    kind: str = "preference"  # or "contouring" (see lungseg.study.readings)


class StudyTables(StoreCore):
    """Studies, cases and items (the part of the store every other part looks studies up in)."""

    def _study_from_row(self, row: dict[str, Any]) -> Study:
        params: DesignParams | ContouringParams | None = None
        kind = row.get("kind") or "preference"
        if row["design_json"]:
            data = json.loads(row["design_json"])
            if kind == "contouring":
                params = ContouringParams.from_dict(data, row["instructions"])
            else:
                params = DesignParams(**data, instructions=row["instructions"])
        return Study(row["id"], row["name"], row["instructions"], params, bool(row["turing"]), row["created_at"], kind)

    def studies(self) -> list[Study]:
        return [self._study_from_row(r) for r in self._rows("SELECT * FROM studies ORDER BY id")]

    def study(self, ref: "str | int | Study") -> Study:
        """A study by name or id; :class:`StudyError` if there is none."""
        if isinstance(ref, Study):
            return ref
        if isinstance(ref, int) and not isinstance(ref, bool):
            row = self._one("SELECT * FROM studies WHERE id = ?", (ref,))
        else:
            row = self._one("SELECT * FROM studies WHERE name = ?", (" ".join(str(ref).split()),))
        if row is None:
            raise StudyError(f"no study {ref!r} in {self.path}")
        return self._study_from_row(row)

    def create_study(
        self,
        name: str,
        cases: Sequence[CaseSpec] = (),
        params: DesignParams | None = None,
        *,
        actor: "str | AdminSession",
        imported: bool = False,
        turing: bool | None = None,
    ) -> Study:
        """Create a study and, if ``cases`` are given, its items per ``params`` (one transaction).

        ``params=None`` means the defaults for an in-app study; ``imported=True`` makes a study
        without a design, to hold votes collected elsewhere (see :mod:`.csvio`).  ``turing``
        overrides ``params.turing``.  Audited as ``study.create``.
        """
        name = clean_name(name, "study name")
        params = params or DesignParams()
        items = plan_items(cases, params) if cases else []
        asks_turing = params.turing if turing is None else turing
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                raise StudyError(f"a study named {name!r} already exists")
            if imported:
                study_id = self._insert_study(conn, name, "", None, asks_turing)
            else:
                study_id = self._insert_study(conn, name, params.instructions, params, asks_turing)
            for case in cases:
                self._insert_case(conn, study_id, case)
            self._insert_items(conn, study_id, items)
            self.audit(actor, "study.create", study=name, study_id=study_id, cases=len(cases), items=len(items),
                       imported=imported)
        return self.study(study_id)

    def _insert_study(
        self, conn: sqlite3.Connection, name: str, instructions: str,
        params: DesignParams | ContouringParams | None, turing: bool, kind: str = "preference",
    ) -> int:
        if kind not in STUDY_KINDS:
            raise StudyError(f"study kind must be preference or contouring, got {kind!r}")
        design = None
        if params is not None:
            design = json.dumps(params.as_dict(), sort_keys=True)
        cur = conn.execute(
            "INSERT INTO studies (name, instructions, design_json, turing, created_at, kind) VALUES (?, ?, ?, ?, ?, ?)",
            (name, instructions, design, int(turing), self.now_iso(), kind),
        )
        return int(cur.lastrowid)

    def _insert_case(self, conn: sqlite3.Connection, study_id: int, case: CaseSpec) -> int:
        meta = case.metadata
        try:
            cur = conn.execute(
                "INSERT INTO cases (study_id, case_key, slice_thickness_mm, tumour_volume_ml, location, metadata_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    study_id,
                    case.case_id,
                    meta.slice_thickness_mm,
                    meta.tumour_volume_ml,
                    meta.location,
                    json.dumps({"slices": list(case.slices), **dict(meta.extra)}, default=str),
                ),
            )
        except sqlite3.IntegrityError:
            raise StudyError(f"case {case.case_id} is already in this study") from None
        return int(cur.lastrowid)

    def _insert_items(self, conn: sqlite3.Connection, study_id: int, items: Sequence[ItemSpec]) -> list[int]:
        if not items:
            return []
        if conn.execute("SELECT 1 FROM raters WHERE study_id = ? LIMIT 1", (study_id,)).fetchone():
            raise StudyError("this study already has raters: its items can no longer change")
        cases = dict(conn.execute("SELECT case_key, id FROM cases WHERE study_id = ?", (study_id,)).fetchall())
        ids: dict[str, int] = dict(
            conn.execute("SELECT item_key, id FROM items WHERE study_id = ?", (study_id,)).fetchall()
        )
        out = []
        for item in items:
            if item.case_id not in cases:
                raise StudyError(f"item {item.key}: case {item.case_id} is not in this study")
            if item.key in ids:
                raise StudyError(f"item {item.key} is already in this study")
            repeat_of = None
            if item.repeat_of is not None:
                if item.repeat_of not in ids:
                    raise StudyError(f"item {item.key} repeats {item.repeat_of}, which is not in this study")
                repeat_of = ids[item.repeat_of]
            cur = conn.execute(
                "INSERT INTO items (study_id, case_id, item_key, slice_index, repeat_of) VALUES (?, ?, ?, ?, ?)",
                (study_id, cases[item.case_id], item.key, item.slice_index, repeat_of),
            )
            ids[item.key] = int(cur.lastrowid)
            out.append(ids[item.key])
        return out

    def add_case(self, study: "str | int | Study", case: CaseSpec) -> int:
        """Add a case (no items yet) to a study; returns its database id."""
        study_id = self.study(study).id
        with self.transaction() as conn:
            return self._insert_case(conn, study_id, case)

    def add_items(self, study: "str | int | Study", items: Sequence[ItemSpec]) -> list[int]:
        """Add items (slices of cases already in the study); refused once raters are invited."""
        study_id = self.study(study).id
        with self.transaction() as conn:
            return self._insert_items(conn, study_id, list(items))

    def item_specs(self, study: "str | int | Study") -> list[ItemSpec]:
        """The study's items in creation order."""
        rows = self._rows(
            "SELECT i.item_key, c.case_key, i.slice_index, r.item_key AS repeat_key FROM items i "
            "JOIN cases c ON c.id = i.case_id LEFT JOIN items r ON r.id = i.repeat_of "
            "WHERE i.study_id = ? ORDER BY i.id",
            (self.study(study).id,),
        )
        return [ItemSpec(r["item_key"], r["case_key"], r["slice_index"], r["repeat_key"]) for r in rows]

    def cases(self, study: "str | int | Study") -> list[dict[str, Any]]:
        """The study's cases: ``case_id``, the three stratification fields, and free metadata."""
        rows = self._rows(
            "SELECT case_key AS case_id, slice_thickness_mm, tumour_volume_ml, location, metadata_json "
            "FROM cases WHERE study_id = ? ORDER BY id",
            (self.study(study).id,),
        )
        for row in rows:
            row["metadata"] = json.loads(row.pop("metadata_json"))
        return rows
