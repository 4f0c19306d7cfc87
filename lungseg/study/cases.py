"""Study cases: typed case records in, opened cases (:mod:`lungseg.case`) out.

A study is created from a JSON list of case records (``python -m lungseg study create NAME
--cases cases.json``), one per case::

    [{"case_id": "LUNG1-001", "ct": "LUNG1-001.zip",
      "manual": {"kind": "rtstruct", "roi": "GTV-1"},
      "automatic": {"kind": "model"}},
     {"case_id": "LUNG1-002", "ct": "scans/LUNG1-002",
      "manual": {"kind": "rtstruct", "roi": "GTV-1"},
      "automatic": {"kind": "file", "path": "other-tool/LUNG1-002-seg.dcm", "roi": "Tumour"},
      "metadata": {"location": "RUL"}},
     {"case_id": "demo", "ct": "demo", "automatic": {"kind": "stand-in"}}]

Each record is a :class:`~lungseg.case.CaseSource` (read by ``CaseSource.from_dict``; paths
relative to the JSON file) plus ``case_id`` (required, unique) and optional ``metadata``
(``location`` and other stratification fields).  A study needs the manual contour (the demo CT's
is the phantom's true tumour) and always names the automatic one: ``model`` (the shipped U-Net,
or ``"model": PATH``), ``file`` (a contour made by any other tool), or ``stand-in`` (the manual
contour dilated and shifted: demos and tests only, and labelled as such in the case list and the
report).  There is no default, so a study never silently compares the manual contour with itself.

:func:`study_case` opens a case and returns its :class:`~lungseg.study.design.CaseSpec`: the
slices where either contour has voxels and the stratification metadata, with the case record
itself under ``metadata["source"]``; :func:`study_case_source` reads that record back (also from
studies made before case records, whose metadata held ``{"source", "roi", "automatic"}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lungseg.case import AutomaticSource, Case, CaseSource, ManualSource, default_predictor, model_version, open_case
from lungseg.errors import LungsegError
from lungseg.study.design import CaseMetadata, CaseSpec, StudyError

RECORD_FIELDS = ("case_id", "ct", "manual", "automatic", "series_uid", "label", "metadata")
# before case records: metadata["automatic"] named the automatic contour
_LEGACY_AUTOMATIC = {"model": "model", "perturbed-manual": "stand-in"}


@dataclass(frozen=True)
class CaseRecord:
    """One validated entry of a cases file: the study's case id, its source and extra metadata."""

    case_id: str
    source: CaseSource
    metadata: Mapping[str, Any] = field(default_factory=dict)


def case_record(entry: Any, base: Path | None = None) -> CaseRecord:
    """One case record (a JSON object) as a :class:`CaseRecord`; :class:`StudyError` says why not."""
    if not isinstance(entry, Mapping):
        raise StudyError("expected a JSON object")
    if "slices" in entry and "ct" not in entry:
        raise StudyError('the {"case_id", "slices", "metadata"} form is no longer read: give ct, manual and '
                         "automatic (see the README, Preference study)")
    case_id = entry.get("case_id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise StudyError("case_id: required, a non-empty string")
    unknown = sorted(set(entry) - set(RECORD_FIELDS))
    if unknown:
        raise StudyError(f"unknown field(s) {', '.join(unknown)}")
    meta = entry.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise StudyError("metadata: expected a JSON object")
    reserved = sorted(set(meta) & {"slices", "source", "automatic_kind", "model_version"})
    if reserved:
        raise StudyError(f"metadata: {', '.join(reserved)} are set by lungseg")
    CaseMetadata.from_dict(meta)  # numbers are numbers
    source = CaseSource.from_dict({k: v for k, v in entry.items() if k not in ("case_id", "metadata")}, base)
    if source.manual is None:
        raise StudyError('manual: required for a study, e.g. {"kind": "rtstruct", "roi": "GTV-1"}')
    source.check_exists()
    return CaseRecord(" ".join(case_id.split()), source, dict(meta))


def read_case_records(path: str | Path) -> list[CaseRecord]:
    """Every record of a cases JSON file, checked before anything is opened or written.

    A bad entry raises :class:`StudyError` on one line with its number (from 1), its case id and
    the reason, e.g. ``cases.json entry 3 (LUNG1-002): automatic: required, ...``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path.name}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, list) or not data:
        raise StudyError(f"{path.name}: expected a JSON list of case records")
    base = path.resolve().parent
    records: list[CaseRecord] = []
    seen: set[str] = set()
    for n, entry in enumerate(data, start=1):
        where = entry_name(path, n, entry)
        try:
            record = case_record(entry, base)
        except LungsegError as exc:
            raise StudyError(f"{where}: {one_line(exc)}") from None
        if record.case_id in seen:
            raise StudyError(f"{where}: case_id {record.case_id!r} is used by an earlier entry")
        seen.add(record.case_id)
        records.append(record)
    return records


def entry_name(path: Path, n: int, entry: Any) -> str:
    case_id = entry.get("case_id") if isinstance(entry, Mapping) else None
    return f"{path.name} entry {n}" + (f" ({case_id})" if isinstance(case_id, str) and case_id.strip() else "")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def contour_slices(case: Case) -> list[int]:
    """Axial slices where either contour of an opened case has voxels."""
    masks = [c.mask for c in (case.automatic, case.manual) if c is not None]
    if not masks:
        return []
    both = np.logical_or.reduce(masks)
    return [int(k) for k in np.flatnonzero(both.reshape(both.shape[0], -1).any(axis=1))]


def study_case(case_id: str, source: CaseSource, predictor=None, *, metadata: Mapping[str, Any] | None = None,
               **open_kwargs) -> tuple[CaseSpec, Case]:
    """Open a study case and describe it: (its :class:`CaseSpec`, the opened :class:`Case`).

    The spec lists the slices where either contour has voxels and the stratification metadata
    (slice thickness, the manual contour's volume, ``metadata`` such as ``location``), and keeps
    the case record (``source``) and what the automatic contour is (``automatic_kind``,
    ``automatic_description``, ``model_version``) so the study can be reopened and reported
    exactly.  ``open_kwargs`` go to :func:`lungseg.case.open_case`.
    """
    if source.manual is None:
        raise StudyError(f"case {case_id}: a study case needs the manual contour")
    case = open_case(source, predictor, **open_kwargs)
    manual, automatic = case.manual, case.automatic
    if manual is None or not manual.mask.any():
        raise StudyError(f"case {case_id}: the manual contour ({source.manual.name}) is empty")
    v = case.ct.volume
    info = {
        **dict(metadata or {}),
        "slice_thickness_mm": case.ct.info.get("slice_thickness_mm") or v.spacing[2],
        "tumour_volume_ml": round(float(manual.mask.sum()) * v.voxel_volume_ml, 3),
        "source": source.as_dict(),
        "automatic_kind": source.automatic.kind,
        "automatic_description": automatic.description if automatic is not None else source.automatic.description,
        "model_version": automatic.version if automatic is not None else None,
        "manual_name": manual.name,
    }
    return CaseSpec(case_id, tuple(contour_slices(case)), CaseMetadata.from_dict(info)), case


def study_case_source(metadata: Mapping[str, Any]) -> CaseSource:
    """The :class:`CaseSource` of a study case, from its stored metadata.

    Studies made before case records stored ``{"source": "demo" | PATH, "roi": NAME,
    "automatic": "model" | "perturbed-manual"}``; those map to the same case (a missing
    ``automatic`` was the stand-in then, and is the stand-in here, labelled as such).
    """
    src = metadata.get("source")
    if isinstance(src, Mapping):
        return CaseSource.from_dict(src)
    kind = str(metadata.get("automatic") or "perturbed-manual")
    if kind not in _LEGACY_AUTOMATIC:
        raise StudyError(f"unknown automatic contour kind {kind!r} in the study record")
    automatic = AutomaticSource(_LEGACY_AUTOMATIC[kind])
    if src == "demo":
        return CaseSource.demo(automatic)
    if not src:
        raise StudyError("the study does not record where this case's images are")
    roi = metadata.get("roi")
    if not roi:
        raise StudyError("the study does not record the manual contour's ROI of this case")
    return CaseSource(str(src), automatic, ManualSource("rtstruct", None, str(roi)))


def load_predictor(source: CaseSource):
    """The (process-wide) predictor of a case whose automatic contour is a model's; one line if it cannot load."""
    try:
        return default_predictor(source.automatic.model)
    except LungsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing weights or torch: say so on one line
        raise StudyError(f"the tumour model cannot be loaded ({one_line(exc)})") from None


def check_model_version(source: CaseSource, metadata: Mapping[str, Any], predictor=None):
    """The predictor to open a study case with; refused (one line) when the installed model is not the
    version the study was set up with (the raters would see other contours)."""
    recorded = metadata.get("model_version")
    if source.automatic.kind != "model" or not recorded:
        return predictor
    if predictor is None:
        predictor = load_predictor(source)
    version = model_version(predictor)
    if version != recorded:
        raise StudyError(f"the study was set up with model {recorded}, this install has {version}: "
                         "its automatic contours would differ")
    return predictor


def open_study_case(case_id: str, metadata: Mapping[str, Any], predictor=None, **open_kwargs) -> Case:
    """Open a case of a study from its stored metadata, as it was when the study was made.

    Refused (one line) when the images are gone or when the automatic contour comes from another
    model version than the one the study was set up with (the raters would see other contours).
    """
    try:
        source = study_case_source(metadata)
        if not source.is_demo and not Path(source.ct).exists():
            raise StudyError("its images are no longer available")
        predictor = check_model_version(source, metadata, predictor)
        return open_case(source, predictor, **open_kwargs)
    except (LungsegError, OSError, ValueError) as exc:
        raise StudyError(f"case {case_id}: {one_line(exc)}") from None


def automatic_summary(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the automatic contours of a study's cases are (rows of ``StudyStore.cases``):
    ``{"kinds": {kind: n}, "stand_in": [case ids], "model_versions": [...]}``."""
    kinds: dict[str, int] = {}
    stand_in, versions = [], []
    for row in cases:
        meta = row.get("metadata") or {}
        try:
            kind = study_case_source(meta).automatic.kind
        except LungsegError:
            kind = "not recorded"
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "stand-in":
            stand_in.append(str(row["case_id"]))
        if meta.get("model_version") and meta["model_version"] not in versions:
            versions.append(meta["model_version"])
    return {"kinds": kinds, "stand_in": stand_in, "model_versions": versions}


def automatic_label(metadata: Mapping[str, Any]) -> str:
    """What a study case's automatic contour is, in words (the stand-in always says so)."""
    try:
        automatic = study_case_source(metadata).automatic
    except LungsegError:
        return "not recorded"
    text = str(metadata.get("automatic_description") or automatic.description)
    if automatic.kind == "stand-in" and "stand-in" not in text.lower():
        text = f"stand-in: {text}"
    version = metadata.get("model_version")
    return f"{text} ({version})" if version and version not in text else text


def model_seconds(case: Case, predictor) -> float:
    """The automatic model's own time on an opened case, measured afresh (no cache): the lung region and the
    tumour model from the loaded CT, as a user waits for them when a case is first segmented."""
    import time

    from lungseg.lungs import LungParams, isolate
    from lungseg.tumour.segment import PostProcess

    t0 = time.perf_counter()
    lungs = isolate(case.volume, LungParams())
    predictor.predict(case.volume, lungs, PostProcess())
    return time.perf_counter() - t0


def contouring_case(case_id: str, source: CaseSource, predictor=None, *, metadata: Mapping[str, Any] | None = None,
                    **open_kwargs):
    """Open a case for a contouring study: its grid, the automatic contour the assisted arm starts from
    (packed), and, when that contour is the model's, the model's own time on it (:func:`model_seconds`;
    the ``model`` arm of the report).  Returns a :class:`~lungseg.study.readings.ContouringCase`."""
    from lungseg.maskcodec import pack
    from lungseg.study.readings import ContouringCase

    if source.automatic.kind == "model" and predictor is None:
        predictor = load_predictor(source)
    spec, case = study_case(case_id, source, predictor, metadata=metadata, **open_kwargs)
    automatic = case.automatic
    seconds = version = None
    if source.automatic.kind == "model":
        seconds, version = model_seconds(case, predictor), automatic.version
    v = case.volume
    return ContouringCase(
        case_id=spec.case_id, grid_shape=tuple(v.shape), spacing_zyx=tuple(v.spacing_zyx),
        automatic=pack(automatic.mask) if automatic is not None and automatic.mask.any() else None,
        model_seconds=seconds, model_version=version,
        metadata={**dict(spec.metadata.extra), "slices": list(spec.slices),
                  "automatic_empty": automatic is not None and not automatic.mask.any(),
                  "slice_thickness_mm": spec.metadata.slice_thickness_mm,
                  "tumour_volume_ml": spec.metadata.tumour_volume_ml, "location": spec.metadata.location},
    )
