"""Where a case comes from: the CT, the manual contour and the automatic contour, typed and validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from lungseg.dicomweb import is_dicomweb_url, parse_series_url
from lungseg.errors import InputError

DEMO = "demo"
AUTOMATIC_KINDS = ("model", "file", "stand-in")
MANUAL_KINDS = ("rtstruct", "seg", "label", "demo-truth")


@dataclass(frozen=True)

class ManualSource:
    """The manual contour.

    ``rtstruct``: ROI ``roi`` (a name or glob such as ``GTV*``) of the RTSTRUCT at ``path``, or of the
    structure set found beside the CT when ``path`` is None; with no ``roi``, the default GTV (``GTV-1``,
    else the first ``GTV*``).  ``seg``: segment ``roi`` (label or number;
    all segments when None) of a DICOM SEG.  ``label``: voxels equal to ``roi`` (any > 0 when None) of a
    label image on the CT's grid.  ``demo-truth``: the demo phantom's known tumour.
    """

    kind: str = "rtstruct"
    path: str | None = None
    roi: str | None = None

    def __post_init__(self):
        if self.kind not in MANUAL_KINDS:
            raise InputError(f"manual contour kind {self.kind!r}: expected one of {', '.join(MANUAL_KINDS)}")
        if self.kind in ("seg", "label") and not self.path:
            raise InputError(f"a {self.kind} manual contour needs a file")

    @property
    def name(self) -> str:
        if self.kind == "demo-truth":
            return "phantom truth"
        if self.kind == "rtstruct":
            return str(self.roi or "GTV (default)")
        return Path(str(self.path)).name + (f" · {self.roi}" if self.roi else "")


@dataclass(frozen=True)

class AutomaticSource:
    """The automatic contour: ``model`` (weights at ``model``, the shipped model when None), ``file``
    (a mask, SEG or RTSTRUCT ROI ``roi`` at ``path``, made by any tool), or ``stand-in`` (demo/test only)."""

    kind: str = "model"
    model: str | None = None
    path: str | None = None
    roi: str | None = None

    def __post_init__(self):
        if self.kind not in AUTOMATIC_KINDS:
            raise InputError(f"automatic contour kind {self.kind!r}: expected one of {', '.join(AUTOMATIC_KINDS)}")
        if self.kind == "file" and not self.path:
            raise InputError("an automatic contour of kind 'file' needs its path")

    @property
    def description(self) -> str:
        if self.kind == "model":
            return "tumour model output"
        if self.kind == "file":
            return f"contour from {Path(str(self.path)).name}" + (f" ({self.roi})" if self.roi else "")
        return "stand-in: the manual contour dilated and shifted (demo/test only, not a model)"


@dataclass(frozen=True)

class CaseSource:
    """Everything needed to open a case. ``ct`` is a file, a DICOM folder, a zip, a DICOMweb series URL
    (``http(s)://…/studies/STUDY/series/SERIES``) or ``"demo"``."""

    ct: str
    automatic: AutomaticSource = AutomaticSource()
    manual: ManualSource | None = None
    series_uid: str | None = None
    label: str | None = None
    skip_unreadable: bool = False  # go on without unreadable DICOM slices (a warning), instead of refusing

    def __post_init__(self):
        if not self.ct:
            raise InputError("a case needs its CT")
        if is_dicomweb_url(self.ct):
            parse_series_url(self.ct)  # a malformed URL is refused here, in one line
        if self.automatic.kind == "stand-in" and self.manual is None:
            raise InputError("the stand-in automatic contour is made from the manual contour: give one")

    @classmethod
    def demo(cls, automatic: AutomaticSource | None = None) -> "CaseSource":
        return cls(DEMO, automatic or AutomaticSource("model"), ManualSource("demo-truth"))

    @property
    def is_demo(self) -> bool:
        return self.ct == DEMO

    def as_dict(self) -> dict:
        return {"ct": self.ct, "series_uid": self.series_uid, "label": self.label,
                "manual": asdict(self.manual) if self.manual else None, "automatic": asdict(self.automatic)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None) -> "CaseSource":
        """A case record as JSON: ``{"ct": PATH|"demo", "manual": {...}, "automatic": {...}}``.

        Relative paths are taken from ``base``.  Raises :class:`InputError` naming the bad field.
        """
        if not isinstance(data, Mapping):
            raise InputError("a case record must be a JSON object")
        unknown = set(data) - {"ct", "manual", "automatic", "series_uid", "label", "case_id"}
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}")

        def path(value: Any, what: str) -> str:
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{what}: expected a path")
            p = Path(value).expanduser()
            if base is not None and not p.is_absolute():
                p = base / p
            return str(p)

        ct = data.get("ct")
        if ct != DEMO and not is_dicomweb_url(ct):
            ct = path(ct, "ct")
        auto = data.get("automatic")
        if not isinstance(auto, Mapping) or "kind" not in auto:
            raise InputError('automatic: required, e.g. {"kind": "model"} or {"kind": "file", "path": ...}')
        extra = set(auto) - {"kind", "model", "path", "roi"}
        if extra:
            raise InputError(f"automatic: unknown field(s) {', '.join(sorted(extra))}")
        automatic = AutomaticSource(
            kind=str(auto["kind"]),
            model=path(auto["model"], "automatic.model") if auto.get("model") else None,
            path=path(auto["path"], "automatic.path") if auto.get("path") else None,
            roi=str(auto["roi"]) if auto.get("roi") is not None else None)
        man = data.get("manual")
        manual = None
        if man is not None:
            if not isinstance(man, Mapping) or "kind" not in man:
                raise InputError('manual: expected e.g. {"kind": "rtstruct", "roi": "GTV-1"}')
            extra = set(man) - {"kind", "path", "roi"}
            if extra:
                raise InputError(f"manual: unknown field(s) {', '.join(sorted(extra))}")
            manual = ManualSource(kind=str(man["kind"]),
                                  path=path(man["path"], "manual.path") if man.get("path") else None,
                                  roi=str(man["roi"]) if man.get("roi") is not None else None)
        if ct == DEMO and manual is None:
            manual = ManualSource("demo-truth")
        return cls(ct=ct, automatic=automatic, manual=manual, series_uid=data.get("series_uid") or None,
                   label=data.get("label") or None)

    def check_exists(self) -> None:
        """Every named file is there (one-line error otherwise)."""
        for what, p in (("ct", None if self.is_demo or is_dicomweb_url(self.ct) else self.ct),
                        ("manual", self.manual.path if self.manual else None),
                        ("automatic", self.automatic.path), ("automatic model", self.automatic.model)):
            if p and not Path(p).exists():
                raise InputError(f"{what}: {p} does not exist")


def source_for_input(input: str, *, roi: str | None = None, manual: str | None = None,
                     automatic: str | None = None, automatic_roi: str | None = None, model: str | None = None,
                     series_uid: str | None = None, stand_in_ok: bool = False,
                     default_manual: bool = True, skip_unreadable: bool = False) -> CaseSource:
    """The CaseSource of a CLI INPUT and its options (one place for every command).

    ``manual``: a contour file (RTSTRUCT/SEG/label); ``roi``: its ROI/segment/label, or the ROI of the
    structure set beside the CT when no file is given.  ``automatic``: a contour file made by another
    tool (else the model at ``model``, the shipped one by default).
    """
    man = None
    if manual:
        kind = contour_file_kind(manual)
        man = ManualSource(kind, manual, roi)
    elif roi:
        man = ManualSource("rtstruct", None, roi)
    elif input == DEMO:
        man = ManualSource("demo-truth")
    elif default_manual:
        man = ManualSource("rtstruct", None, None)  # the default GTV of the structure set, if there is one
    if automatic == "stand-in":
        if not stand_in_ok:
            raise InputError("the stand-in automatic contour is for demos and tests only")
        auto = AutomaticSource("stand-in")
    elif automatic:
        auto = AutomaticSource("file", path=automatic, roi=automatic_roi)
    else:
        auto = AutomaticSource("model", model=model)
    return CaseSource(ct=input, automatic=auto, manual=man, series_uid=series_uid, skip_unreadable=skip_unreadable)


def contour_file_kind(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_file():
        try:
            import pydicom

            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Modality"])
            modality = str(ds.get("Modality", ""))
            if modality == "RTSTRUCT":
                return "rtstruct"
            if modality == "SEG":
                return "seg"
        except Exception:  # noqa: BLE001 - not DICOM: a label image
            pass
    return "label"
