"""Import a contouring study run elsewhere: times from a CSV file, contours from a folder.

**Times** (``python -m lungseg study import-times TIMES.csv --study NAME``): a CSV file with the header
``reader,case,seconds,arm`` (any order, extra columns ignored) and an optional ``reading`` column (1, or 2
for a repeated reading; default 1).  ``arm`` is ``scratch``, ``assisted`` or ``model`` (the automatic
model's own time on the case; its ``reader`` is ignored).

**Contours** (``python -m lungseg study import-contours DIR --study NAME``): one folder per case::

    DIR/CASE/ct.nii.gz                      the case's CT (or ct.nii, ct.nrrd, ct.mha, a ct/ DICOM folder, ct.zip):
                                            it defines the case's grid and voxel spacing
    DIR/CASE/automatic.nii.gz               optional: the automatic model's contour
    DIR/CASE/READER.nii.gz                  READER's contour, arm scratch, first reading
    DIR/CASE/READER__ARM.nii.gz             ... in arm scratch or assisted
    DIR/CASE/READER__ARM__2.nii.gz          ... the repeated reading (intra-observer)

Every mask (voxels > 0; ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` too) must be on the grid of its case's CT
(same size, spacing, origin and orientation); it is stored on the CT's canonical grid.  A reader's time and
contour of one reading meet in one reading whichever is imported first.

Both imports check every row or file before writing anything and write in one transaction: a bad row or
file stops the import with a one-line :class:`StudyError` naming it (``times.csv, row 3: ...``) and nothing
is imported.  Importing the same data again changes nothing (``already_present``); a different value for a
reading already stored is refused.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import LungsegError
from lungseg.maskcodec import PackedMask, pack
from lungseg.study.access import AdminSession
from lungseg.study.contouring import ARMS, MODEL_ARM
from lungseg.study.design import StudyError
from lungseg.study.readings import ContouringCase
from lungseg.study.store import StudyStore

TIME_COLUMNS = ("reader", "case", "seconds", "arm")
MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
CT_NAMES = tuple(f"ct{s}" for s in MASK_SUFFIXES) + ("ct.mhd", "ct.zip", "ct")
IMPORTED_GROUP = "imported reader"


@dataclass(frozen=True)
class ContouringImportResult:
    study_id: int
    rows: int  # CSV rows or mask files read
    imported: int  # readings (or model times) written or completed
    already_present: int  # identical to what the database held (a re-import)
    readers: int
    cases: int


@dataclass(frozen=True)
class _Time:
    row: int
    reader: str
    case: str
    arm: str
    reading: int
    seconds: float


@dataclass(frozen=True)
class _Contour:
    where: str
    reader: str
    case: str
    arm: str
    reading: int
    mask: PackedMask | None  # None: an empty contour


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----------------------------------------------------------------------------- reading the inputs


def read_times_csv(path: str | os.PathLike) -> list[_Time]:
    """Every row of a times file, checked (one-line :class:`StudyError` naming the first bad row)."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot be read ({_one_line(exc)})") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [(h or "").strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in TIME_COLUMNS if c not in header]
        if missing:
            raise StudyError(f"{path.name}: missing column(s) {', '.join(missing)} (need {','.join(TIME_COLUMNS)})")
        reader.fieldnames = header
        rows: list[_Time] = []
        seen: dict[tuple, int] = {}
        try:
            for n, raw in enumerate(reader, start=1):
                rows.append(_time_row(path.name, n, raw, seen))
        except csv.Error as exc:
            raise StudyError(f"{path.name}: not a readable CSV file ({_one_line(exc)})") from None
    if not rows:
        raise StudyError(f"{path.name}: no rows")
    return rows


def _time_row(name: str, n: int, raw: dict[str, Any], seen: dict[tuple, int]) -> _Time:
    def fail(problem: str) -> StudyError:
        return StudyError(f"{name}, row {n}: {problem}")

    if None in raw:
        raise fail("more values than columns")
    get = {k: " ".join(str(v or "").split()) for k, v in raw.items()}
    arm = get["arm"].lower()
    if arm not in (*ARMS, MODEL_ARM):
        raise fail(f"arm must be scratch, assisted or model, got {get['arm']!r}")
    reader = get["reader"] if arm != MODEL_ARM else MODEL_ARM
    if not reader:
        raise fail("reader is empty")
    case = get["case"]
    if not case:
        raise fail("case is empty")
    try:
        seconds = float(get["seconds"])
    except ValueError:
        raise fail(f"seconds must be a number, got {get['seconds']!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise fail(f"seconds must be a finite number >= 0, got {get['seconds']!r}")
    reading_text = get.get("reading") or "1"
    if reading_text not in ("1", "2") or (arm == MODEL_ARM and reading_text != "1"):
        raise fail(f"reading must be 1 or 2 (2 = the repeat; model rows 1), got {reading_text!r}")
    key = (reader, case, arm, int(reading_text))
    if key in seen:
        raise fail(f"the same reading as row {seen[key]} ({reader}, {case}, {arm}, reading {reading_text})")
    seen[key] = n
    return _Time(n, reader, case, arm, int(reading_text), seconds)


def _mask_name(path: Path) -> tuple[str, str, int] | None:
    """(reader, arm, reading) of a mask file name, or None when it is not one (CT, automatic, other files)."""
    name = path.name
    suffix = next((s for s in MASK_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None or name.lower() in CT_NAMES:
        return None
    stem = name[: -len(suffix)]
    if stem.lower() == "automatic":
        return None
    parts = stem.split("__")
    if len(parts) > 3 or not parts[0].strip():
        raise StudyError(f"{path}: name it READER.nii.gz, READER__ARM.nii.gz or READER__ARM__2.nii.gz")
    arm = parts[1].lower() if len(parts) > 1 else "scratch"
    if arm not in ARMS:
        raise StudyError(f"{path}: arm must be scratch or assisted, got {parts[1]!r}")
    reading = parts[2] if len(parts) > 2 else "1"
    if reading not in ("1", "2"):
        raise StudyError(f"{path}: the reading is 1 or 2 (2 = the repeat), got {reading!r}")
    return parts[0].strip(), arm, int(reading)


def _case_mask(path: Path, ct) -> PackedMask | None:
    """A mask file on the case's CT grid, on the canonical grid (None when empty)."""
    import SimpleITK as sitk

    from lungseg.imaging.io import check_image_data_files
    from lungseg.imaging.volume import Grid

    check_image_data_files(path)  # a header naming a data file outside its own folder is refused, not read
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise StudyError(f"{path}: not a readable image ({_one_line(exc).split(' Reason:')[0][:160]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise StudyError(f"{path}: a mask is a 3-D single-channel image")
    if not Grid.of(image).matches(ct.source_grid, tol_mm=0.01 * min(ct.source_grid.spacing)):
        got = Grid.of(image)
        raise StudyError(f"{path}: not on the case's grid (size {got.size}, spacing "
                         f"{tuple(round(s, 3) for s in got.spacing)}; the CT has size {ct.source_grid.size}, spacing "
                         f"{tuple(round(s, 3) for s in ct.source_grid.spacing)}, and the same origin and orientation)")
    arr = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")) > 0
    if arr.shape != ct.volume.shape:
        raise StudyError(f"{path}: not on the case's grid")
    return pack(arr) if arr.any() else None


def read_contour_folder(folder: str | os.PathLike) -> tuple[list[ContouringCase], list[_Contour]]:
    """Every case (grid, automatic contour) and reader contour of an import folder, checked and packed."""
    from lungseg.imaging.io import load_ct

    root = Path(folder)
    if not root.is_dir():
        raise StudyError(f"{root}: no such folder")
    cases: list[ContouringCase] = []
    contours: list[_Contour] = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        ct_path = next((case_dir / n for n in CT_NAMES if (case_dir / n).exists()), None)
        if ct_path is None:
            raise StudyError(f"{case_dir}: no CT reference (ct.nii.gz, ct.nrrd, ct.mha, a ct/ DICOM folder or ct.zip)")
        try:
            ct = load_ct(ct_path, label=case_dir.name)
        except LungsegError as exc:
            raise StudyError(f"{ct_path}: {_one_line(exc)}") from None
        automatic_path = next((case_dir / f"automatic{s}" for s in MASK_SUFFIXES
                               if (case_dir / f"automatic{s}").exists()), None)
        automatic = _case_mask(automatic_path, ct) if automatic_path else None
        v = ct.volume
        cases.append(ContouringCase(case_dir.name, tuple(v.shape), tuple(v.spacing_zyx), automatic,
                                    metadata={"slice_thickness_mm": ct.info.get("slice_thickness_mm"),
                                              "automatic_empty": automatic_path is not None and automatic is None,
                                              "imported_from": case_dir.name}))
        for path in sorted(case_dir.iterdir()):
            if not path.is_file():
                continue
            named = _mask_name(path)
            if named is not None:
                contours.append(_Contour(str(path), named[0], case_dir.name, named[1], named[2],
                                         _case_mask(path, ct)))
    if not cases:
        raise StudyError(f"{root}: no case folders (DIR/CASE/ct.nii.gz and DIR/CASE/READER.nii.gz)")
    if not contours:
        raise StudyError(f"{root}: no reader contours (DIR/CASE/READER[__ARM][__2].nii.gz)")
    return cases, contours


# ----------------------------------------------------------------------------- writing


def _target_study(store: StudyStore, conn: sqlite3.Connection, name: str, actor: "str | AdminSession") -> int:
    row = conn.execute("SELECT id, kind FROM studies WHERE name = ?", (" ".join(name.split()),)).fetchone()
    if row is None:
        return store.create_contouring_study(name, (), actor=actor, imported=True).id
    if row[1] != "contouring":
        raise StudyError(f"study {name!r} is a {row[1]} study: import into a contouring study")
    return int(row[0])


def _case_rows(conn: sqlite3.Connection, study_id: int) -> dict[str, tuple[int, dict]]:
    return {k: (i, json.loads(m)) for i, k, m in
            conn.execute("SELECT id, case_key, metadata_json FROM cases WHERE study_id = ?", (study_id,))}


def _reader_id(store: StudyStore, conn: sqlite3.Connection, study_id: int, reader: str) -> int:
    row = conn.execute(
        "SELECT id FROM raters WHERE study_id = ? AND (external_id = ? OR (external_id IS NULL AND CAST(id AS TEXT) = ?))",
        (study_id, reader, reader),
    ).fetchone()
    if row is not None:
        return int(row[0])
    cur = conn.execute(
        "INSERT INTO raters (study_id, display_name, specialty, external_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (study_id, reader, IMPORTED_GROUP, reader, store.now_iso()),
    )
    return int(cur.lastrowid)


def _reading(conn: sqlite3.Connection, store: StudyStore, study_id: int, rater_id: int, case_row: int, arm: str,
             reading: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, submitted_at, active_s, mask_digest, mask_voxels FROM contouring_readings "
        "WHERE rater_id = ? AND case_id = ? AND arm = ? AND reading = ?",
        (rater_id, case_row, arm, reading),
    ).fetchone()
    if row is not None:
        return dict(zip(("id", "submitted_at", "active_s", "mask_digest", "mask_voxels"), row))
    position = conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM contouring_readings WHERE rater_id = ?",
                            (rater_id,)).fetchone()[0]
    cur = conn.execute(
        "INSERT INTO contouring_readings (study_id, rater_id, case_id, arm, reading, session, position, submitted_at, "
        "origin) VALUES (?, ?, ?, ?, ?, 1, ?, ?, 'import')",
        (study_id, rater_id, case_row, arm, reading, position, store.now_iso()),
    )
    return {"id": int(cur.lastrowid), "submitted_at": None, "active_s": None, "mask_digest": None, "mask_voxels": None}


def _plain_case(store: StudyStore, conn: sqlite3.Connection, study_id: int, case: str) -> int:
    cur = conn.execute("INSERT INTO cases (study_id, case_key, metadata_json) VALUES (?, ?, '{}')", (study_id, case))
    return int(cur.lastrowid)


def import_times(store: StudyStore, path: str | os.PathLike, study: str, *,
                 actor: "str | AdminSession") -> ContouringImportResult:
    """Import a times file into contouring study ``study`` (created, as an imported study, if absent)."""
    rows = read_times_csv(path)
    name = Path(path).name
    imported = present = 0
    with store.transaction() as conn:
        study_id = _target_study(store, conn, study, actor)
        cases = _case_rows(conn, study_id)
        readers: set[str] = set()
        for t in rows:
            if t.case not in cases:
                cases[t.case] = (_plain_case(store, conn, study_id, t.case), {})
            case_row = cases[t.case][0]
            if t.arm == MODEL_ARM:
                old = conn.execute("SELECT seconds FROM contouring_model_times WHERE case_id = ? AND origin = 'import'",
                                   (case_row,)).fetchone()
                if old is not None and not math.isclose(old[0], t.seconds, rel_tol=1e-9, abs_tol=1e-9):
                    raise StudyError(f"{name}, row {t.row}: the model's time on {t.case} is already {old[0]:g} s")
                if old is not None:
                    present += 1
                    continue
                store._put_model_time(conn, study_id, case_row, t.seconds, None, "import")
                imported += 1
                continue
            readers.add(t.reader)
            rater_id = _reader_id(store, conn, study_id, t.reader)
            r = _reading(conn, store, study_id, rater_id, case_row, t.arm, t.reading)
            if r["active_s"] is not None:
                if not math.isclose(r["active_s"], t.seconds, rel_tol=1e-9, abs_tol=1e-9):
                    raise StudyError(f"{name}, row {t.row}: {t.reader}'s {t.arm} reading of {t.case} already has "
                                     f"{r['active_s']:g} s")
                present += 1
                continue
            conn.execute("UPDATE contouring_readings SET active_s = ?, submitted_at = COALESCE(submitted_at, ?) "
                         "WHERE id = ?", (t.seconds, store.now_iso(), r["id"]))
            imported += 1
        store.audit(actor, "contouring.import_times", study_id=study_id, file=name, rows=len(rows), imported=imported)
    return ContouringImportResult(study_id, len(rows), imported, present, len(readers), len({t.case for t in rows}))


def import_contours(store: StudyStore, folder: str | os.PathLike, study: str, *,
                    actor: "str | AdminSession") -> ContouringImportResult:
    """Import a contour folder (layout: the module docstring) into contouring study ``study``."""
    cases, contours = read_contour_folder(folder)
    imported = present = 0
    with store.transaction() as conn:
        study_id = _target_study(store, conn, study, actor)
        known = _case_rows(conn, study_id)
        for case in cases:
            if case.case_id not in known:
                store._insert_contouring_case(conn, study_id, case)
                continue
            case_row, meta = known[case.case_id]
            if meta.get("grid_shape") is not None:
                if tuple(meta["grid_shape"]) != tuple(case.grid_shape) or not np.allclose(
                        meta["spacing_zyx"], case.spacing_zyx, atol=1e-3):
                    raise StudyError(f"{Path(folder) / case.case_id}: the CT's grid differs from the one case "
                                     f"{case.case_id} has in the study")
            meta.update(grid_shape=list(case.grid_shape), spacing_zyx=list(case.spacing_zyx))
            meta.update({k: v for k, v in (case.metadata or {}).items() if k not in meta or k == "automatic_empty"})
            if case.automatic is not None:
                if meta.get("automatic_digest") not in (None, case.automatic.digest):
                    raise StudyError(f"{Path(folder) / case.case_id}: the automatic contour differs from the one "
                                     f"case {case.case_id} has in the study")
                meta["automatic_digest"] = store._store_mask(conn, case.automatic)
            conn.execute("UPDATE cases SET metadata_json = ? WHERE id = ?", (json.dumps(meta, default=str), case_row))
        rows = _case_rows(conn, study_id)
        for c in contours:
            rater_id = _reader_id(store, conn, study_id, c.reader)
            r = _reading(conn, store, study_id, rater_id, rows[c.case][0], c.arm, c.reading)
            digest = None if c.mask is None else c.mask.digest
            if r["mask_voxels"] is not None:
                if r["mask_digest"] != digest:
                    raise StudyError(f"{c.where}: {c.reader}'s {c.arm} reading of {c.case} already has another contour")
                present += 1
                continue
            if c.mask is not None:
                store._store_mask(conn, c.mask)
            conn.execute("UPDATE contouring_readings SET mask_digest = ?, mask_voxels = ?, "
                         "submitted_at = COALESCE(submitted_at, ?) WHERE id = ?",
                         (digest, 0 if c.mask is None else c.mask.voxels, store.now_iso(), r["id"]))
            imported += 1
        store.audit(actor, "contouring.import_contours", study_id=study_id, folder=str(folder), files=len(contours),
                    imported=imported)
    return ContouringImportResult(study_id, len(contours), imported, present, len({c.reader for c in contours}),
                                  len(cases))
