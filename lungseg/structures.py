"""Every structure of a case, its versions, edits, decisions and the one export path.

A case's **structures** are: each ROI of the structure set beside the CT (all of them, e.g. LUNG1-003's
GTV-1, GTV-2, GTV-3, Lung L, ...; source ``"manual"``), the automatic contour ``GTV-auto`` with its lesions
(source ``"automatic"``), and structures created in the app (source ``"created"``: a name and a kind such as
GTVp or GTVn, started from automatic lesions, a manual ROI, a clicked lesion or from nothing).

Edits arrive as per-slice deltas (:mod:`lungseg.editing`: the wire format, brush, threshold brush,
interpolation; re-exported here).

**Versions.**  An original (a manual ROI, the automatic contour) is never stored or overwritten: it is
"version 0" of its name.  Every edit stores a new version (1, 2, ...) in the study database with who, when,
from which version (``parent``), how (``provenance``, ``origin``, the algorithm's name and version) and the
mask (bounding box + packed bits, :mod:`lungseg.maskcodec`).  A created structure starts at version 1.

**Provenance** as DICOM says it (RTSTRUCT ROIGenerationAlgorithm, SEG SegmentAlgorithmType):
``AUTOMATIC`` = the model's output unedited; ``SEMIAUTOMATIC`` = edited (brush, eraser, interpolation,
threshold paint, an edit imported from another tool) or made by a click; ``MANUAL`` = a manual ROI of the
structure set, or a structure drawn by a person from nothing (and edited only by hand).

**Decisions**: per structure, and per lesion of the automatic contour, each of one version; a review starts
with no decision and only what the user chose is recorded (:func:`decide`).  :func:`accepted_structures`
gives what the newest decisions accept, and :func:`export_structures` is the one export path (the viewer,
the Export page, the CLI, the study, the PACS): separate structures stay separate under their names.

**Editing effort** (:func:`editing_effort`): active time from the viewer's activity events (gaps over 60 s
left out), edit operations, and the change from the starting contour (added / removed ml, Dice, HD95,
surface Dice at 2 mm, :mod:`lungseg.metrics`); :func:`effort_csv` writes it as CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lungseg.editing import (AXES, GROUND_GLASS_HU, HU_PRESETS, SOLID_TUMOUR_HU, SliceDelta, apply_deltas, brush,  # noqa: F401
                             decode_deltas, delta_between, deltas_between, encode_deltas, interpolate_slices,
                             threshold_brush)
from lungseg.errors import InputError
from lungseg.maskcodec import PackedMask, pack, pack_region, unpack, unpack_box

PROVENANCE = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
KINDS = ("GTVp", "GTVn", "GTV", "CTV", "other")
AUTOMATIC_NAME = "GTV-auto"
MODEL_ALGORITHM = "lungseg U-Net"
CLICK_ALGORITHM = "lungseg click-to-segment"
EDIT_ALGORITHM = "lungseg editing tools"
IDLE_GAP_S = 60.0

LUNG_BLUE = (0, 120, 255)
AUTOMATIC_RED = (255, 40, 40)
_NAMED_COLOURS = {"gtvp": (255, 140, 0), "gtvn": (40, 200, 80), "gtv-auto": AUTOMATIC_RED}
_PALETTE = ((255, 220, 0), (230, 60, 230), (170, 230, 50), (255, 120, 170), (190, 120, 50), (150, 90, 255),
            (0, 200, 170), (255, 255, 140))


def colour_of(name: str) -> tuple[int, int, int]:
    """The one colour of a structure, used everywhere (viewer, review, rating, report, exported files).

    The lung region and lung ROIs are blue, the automatic contour red, GTVp orange, GTVn green; any other
    structure a palette colour (never red or blue): by its number when its name ends in one (GTV-1,
    GTV-2, ... get the first, second, ... colour), else by a hash of its name, so a name keeps its colour.
    """
    n = str(name).strip().lower()
    if n in _NAMED_COLOURS:
        return _NAMED_COLOURS[n]
    if "lung" in n:
        return LUNG_BLUE if re.search(r"(\b|_)(r|right)$", n) is None else (0, 170, 255)
    m = re.search(r"(\d+)$", n)
    if m:
        return _PALETTE[(int(m.group(1)) - 1) % len(_PALETTE)]
    return _PALETTE[int(hashlib.sha256(n.encode()).hexdigest(), 16) % len(_PALETTE)]


def kind_of(name: str) -> str:
    """The kind a structure's name suggests (GTVp, GTVn, GTV, CTV or other)."""
    n = str(name).strip()
    if re.match(r"^gtv[-_ ]?p", n, re.I):
        return "GTVp"
    if re.match(r"^gtv[-_ ]?n", n, re.I):
        return "GTVn"
    if re.match(r"^(gtv|tumou?r|lesion|nodule)", n, re.I):
        return "GTV"
    if re.match(r"^ctv", n, re.I):
        return "CTV"
    return "other"


def automatic_algorithm(case) -> tuple[str, str]:
    """(name, version) of what made the case's automatic contour: this lungseg's U-Net and its model version,
    or the file another tool wrote."""
    kind = case.source.automatic.kind
    if kind == "model":
        return MODEL_ALGORITHM, str(case.automatic.version or "unknown")
    if kind == "file":
        return f"external tool, {Path(str(case.source.automatic.path)).name}"[:64], "unknown"
    return "lungseg stand-in (demo only)", "none"


def _check_name(name: str) -> str:
    n = " ".join(str(name or "").split())
    if not n or len(n) > 64 or "\\" in n:
        raise InputError(f"structure name {str(name)[:70]!r}: use 1 to 64 printable characters, no backslash")
    return n


# --------------------------------------------------------------------------------------------
# versions and views


@dataclass(frozen=True)
class StructureVersion:
    """One stored version of a structure (``mask`` None: empty)."""

    name: str
    kind: str
    version: int
    parent: int | None
    provenance: str
    origin: str
    author: str
    created_at: str
    mask: PackedMask | None
    shape: tuple[int, int, int]
    operations: int = 0
    algorithm: str = ""
    algorithm_version: str = ""

    def array(self, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The bool mask on the case's grid (``shape`` checked when given)."""
        if shape is not None and tuple(shape) != tuple(self.shape):
            raise InputError(f"structure {self.name} v{self.version} lies on a grid {tuple(self.shape)}, "
                             f"not {tuple(shape)}")
        if self.mask is None:
            return np.zeros(self.shape, bool)
        return unpack(self.mask)

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "StructureVersion":
        return cls(r["name"], r["kind"], int(r["version"]), r["parent"], r["provenance"], r["origin"], r["author"],
                   r["created_at"], r.get("mask"), tuple(r["shape"]), int(r["operations"]), r["algorithm"],
                   r["algorithm_version"])


@dataclass(frozen=True, eq=False)
class StructureView:
    """One structure of a case as the viewer lists it.

    ``source``: ``"manual"`` (a ROI of the structure set), ``"automatic"`` (the model's contour) or
    ``"created"``; ``latest``: the newest stored version (None for an unedited original); ``decision``:
    None (undecided), ``"accepted"`` or ``"rejected"`` (the newest decision; for the automatic contour
    ``"accepted"`` when any of its lesions is, see ``accepted_lesions`` and ``lesion_decisions``, each lesion
    decided on its own); ``decided_version``: the version
    that decision is about (0 = the original).  ``mask()`` is computed on first use.
    """

    name: str
    kind: str
    source: str
    colour: tuple[int, int, int]
    provenance: str
    latest: StructureVersion | None
    decision: str | None
    decided_version: int | None = None
    accepted_lesions: tuple[int, ...] | None = None
    lesions: tuple[dict, ...] = ()
    lesion_decisions: Mapping[int, str] = field(default_factory=dict)  # lesion number -> accepted / rejected
    _mask_of: Any = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def version(self) -> int:
        return self.latest.version if self.latest is not None else 0

    def mask(self) -> np.ndarray:
        """The bool mask [z, y, x] of the newest version on the case's canonical grid."""
        if "mask" not in self._cache:
            self._cache["mask"] = self._mask_of()
        return self._cache["mask"]


_ROI_CACHE: "OrderedDict[tuple, tuple[tuple[int, ...], np.ndarray]]" = OrderedDict()
_ROI_LOCK = threading.Lock()
_ROI_CACHE_SIZE = 48


def roi_names(case) -> list[str]:
    """Every ROI of the structure set(s) beside the CT, and the manual contour's name when it came from a file."""
    names = list(case.ct.roi_names()) if hasattr(case.ct, "roi_names") else []
    if case.manual is not None and case.manual.name not in names:
        names.append(case.manual.name)
    return names


def roi_mask(case, roi: str) -> np.ndarray:
    """The mask of ROI ``roi`` of the structure set beside the CT (read once, kept packed in memory)."""
    if case.manual is not None and case.manual.name == roi:
        return case.manual.mask
    key = (case.key, roi)
    with _ROI_LOCK:
        hit = _ROI_CACHE.get(key)
        if hit is not None:
            _ROI_CACHE.move_to_end(key)
    if hit is None:
        from lungseg.case import load_manual_mask
        from lungseg.case.sources import ManualSource

        if roi not in roi_names(case):
            raise InputError(f"{case.label}: no structure {roi!r} in the structure set")
        mask = np.asarray(load_manual_mask(ManualSource("rtstruct", None, roi), case.ct), bool)
        hit = (mask.shape, np.packbits(mask.ravel()))
        with _ROI_LOCK:
            _ROI_CACHE[key] = hit
            while len(_ROI_CACHE) > _ROI_CACHE_SIZE:
                _ROI_CACHE.popitem(last=False)
    shape, bits = hit
    return np.unpackbits(bits, count=int(np.prod(shape))).view(bool).reshape(shape)


def _sources(case) -> dict[str, str]:
    """Name → source of the case's originals (manual ROIs, the automatic contour)."""
    out = {name: "manual" for name in roi_names(case)}
    if case.automatic is not None:
        out[AUTOMATIC_NAME] = "automatic"
    return out


def _source_mask(case, name: str, lesions: Sequence[int] | None = None) -> np.ndarray:
    if name == AUTOMATIC_NAME:
        if case.automatic is None:
            raise InputError(f"{case.label}: there is no automatic contour")
        return case.automatic.lesion_mask(list(lesions) if lesions is not None else None)
    return roi_mask(case, name)


def _stored(store, case, name: str | None = None, latest_only: bool = False) -> list[StructureVersion]:
    return [StructureVersion.from_row(r) for r in store.structure_versions(case.key, name, latest_only=latest_only)]


def _fold_decisions(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """Name → {"accepted": bool, "version", "lesions": {n: bool} or None, "whole": bool|None} (newest wins)."""
    state: dict[str, dict] = {}
    for r in rows:
        s = state.setdefault(r["name"], {"whole": None, "lesions": {}, "version": 0, "basis": ""})
        s["version"], s["basis"] = int(r["version"]), r.get("basis") or ""
        if r["lesion"] is None:
            s["whole"], s["lesions"] = bool(r["accepted"]), {}
        else:
            if s["whole"] is not None and not s["lesions"]:
                s["lesions"] = {"*": s["whole"]}
            s["lesions"][int(r["lesion"])] = bool(r["accepted"])
            s["whole"] = None
    return state


def _accepted_lesions(state: dict, lesion_numbers: Sequence[int]) -> tuple[int, ...] | None:
    """None = the whole contour accepted; a tuple = only those lesions (empty: none)."""
    if state["whole"] is not None:
        return None if state["whole"] else ()
    default = state["lesions"].get("*", False)
    picked = tuple(n for n in lesion_numbers if state["lesions"].get(n, default))
    return None if picked and len(picked) == len(lesion_numbers) else picked


def _lesion_decisions(state: dict, lesion_numbers: Sequence[int]) -> dict[int, str]:
    """Lesion number → "accepted" / "rejected" for the lesions of the automatic contour that were decided."""
    if state["whole"] is not None:
        return {n: "accepted" if state["whole"] else "rejected" for n in lesion_numbers}
    default = state["lesions"].get("*")
    out = {}
    for n in lesion_numbers:
        value = state["lesions"].get(n, default)
        if value is not None:
            out[n] = "accepted" if value else "rejected"
    return out


def case_structures(store, case) -> list[StructureView]:
    """Every structure of the case: the structure set's ROIs, the automatic contour and those created in the
    app, each with its newest version and the newest decision on it."""
    sources = _sources(case)
    latest = {v.name: v for v in _stored(store, case, latest_only=True)}
    decided = _fold_decisions(store.structure_decisions(case.key))
    legacy = _legacy_added(store, case)
    views = []
    names = list(sources) + [n for n in latest if n not in sources] + [n for n in legacy if n not in sources
                                                                        and n not in latest]
    for name in names:
        v = latest.get(name)
        source = sources.get(name, "created")
        lesions = case.automatic.lesions if name == AUTOMATIC_NAME and case.automatic is not None else ()
        if v is not None:
            provenance, kind = v.provenance, v.kind
            mask_of = (lambda v=v: v.array())
        elif name in legacy:
            provenance, kind = "SEMIAUTOMATIC", "GTV"
            mask_of = (lambda m=legacy[name]: unpack(m))
        else:
            provenance = "AUTOMATIC" if source == "automatic" else "MANUAL"
            kind = "GTV" if source == "automatic" else kind_of(name)
            mask_of = (lambda name=name: _source_mask(case, name))
        s = decided.get(name)
        decision, version, accepted_lesions, lesion_decisions = None, None, None, {}
        if s is not None:
            version = s["version"]
            if name == AUTOMATIC_NAME and version == 0:
                numbers = [int(r["lesion"]) for r in lesions]
                accepted_lesions = _accepted_lesions(s, numbers)
                lesion_decisions = _lesion_decisions(s, numbers)
                if accepted_lesions != ():
                    decision = "accepted"
                elif s["whole"] is not None or len(lesion_decisions) == len(numbers):
                    decision = "rejected"  # every lesion was rejected; one rejected lesion alone decides nothing
                else:
                    decision, accepted_lesions = None, None
            else:
                decision = "accepted" if s["whole"] or any(s["lesions"].values()) else "rejected"
        elif name in legacy and v is None:
            decision, version = "accepted", 0
        views.append(StructureView(name, kind, source, colour_of(name), provenance, v, decision, version,
                                   accepted_lesions, tuple(lesions), lesion_decisions, mask_of))
    return views


def versions(store, case, name: str) -> list[StructureVersion]:
    """Every stored version of structure ``name``, oldest first (an original itself is version 0, not stored)."""
    return _stored(store, case, _check_name(name))


def structure(store, case, name: str) -> StructureView:
    """One structure of :func:`case_structures` by name (InputError naming the known ones otherwise)."""
    views = case_structures(store, case)
    for s in views:
        if s.name == name:
            return s
    raise InputError(f"{case.label}: no structure {name!r} (structures: {', '.join(s.name for s in views)})")


# --------------------------------------------------------------------------------------------
# creating and editing


def create_structure(store, case, author, name: str, kind: str, start: Any = "empty") -> StructureVersion:
    """Create structure ``name`` (version 1) of ``kind`` from ``start``:

    ``"empty"``; ``("automatic", [lesion numbers])`` (None or [] = the whole automatic contour);
    ``("manual", roi_name)``; ``("mask", bool_array, provenance, origin)`` e.g. a clicked lesion
    (``"SEMIAUTOMATIC"``, ``"click"``), optionally with a 5th element (algorithm name, version).
    A name already used by a structure of the case is refused.
    """
    from lungseg import __version__

    name = _check_name(name)
    if kind not in KINDS:
        raise InputError(f"structure kind {kind!r}: choose one of {', '.join(KINDS)}")
    taken = {s.name for s in case_structures(store, case)}
    if name in taken:
        raise InputError(f"{case.label}: a structure named {name!r} exists already; choose another name")
    shape = tuple(case.volume.shape)
    algorithm, algorithm_version = "", ""
    if start == "empty":
        mask, provenance, origin = None, "MANUAL", "empty"
    elif isinstance(start, (tuple, list)) and start and start[0] == "automatic":
        numbers = list(start[1]) if len(start) > 1 and start[1] else None
        mask = _source_mask(case, AUTOMATIC_NAME, numbers)
        provenance = "AUTOMATIC"
        origin = ("automatic contour" if not numbers else
                  f"automatic lesion{'s' if len(numbers) > 1 else ''} {', '.join(map(str, sorted(numbers)))}")
        algorithm, algorithm_version = automatic_algorithm(case)
    elif isinstance(start, (tuple, list)) and len(start) == 2 and start[0] == "manual":
        mask, provenance, origin = _source_mask(case, str(start[1])), "MANUAL", f"manual ROI {start[1]}"
    elif isinstance(start, (tuple, list)) and len(start) in (4, 5) and start[0] == "mask":
        mask, provenance, origin = np.asarray(start[1]), str(start[2]), str(start[3])
        if provenance not in PROVENANCE:
            raise InputError(f"provenance {provenance!r}: choose one of {', '.join(PROVENANCE)}")
        if mask.shape != shape:
            raise InputError(f"{case.label}: a mask of shape {mask.shape} does not fit the case's grid {shape}")
        if len(start) == 5:
            algorithm, algorithm_version = (str(x) for x in start[4])
        elif origin == "click":
            algorithm, algorithm_version = CLICK_ALGORITHM, __version__
        elif provenance == "SEMIAUTOMATIC":
            algorithm, algorithm_version = EDIT_ALGORITHM, __version__
        elif provenance == "AUTOMATIC":
            raise InputError("an AUTOMATIC mask needs the algorithm that made it: give (name, version) as 5th element")
    else:
        raise InputError(f"start {start!r}: use 'empty', ('automatic', [n]), ('manual', roi) or "
                         "('mask', array, provenance, origin)")
    packed = pack(mask) if mask is not None and np.any(mask) else None
    row = store.add_structure_version(case.key, case.label, name, kind, provenance=provenance, origin=origin,
                                      author=author, shape=shape, mask=packed, parent=None, expected_latest=0,
                                      algorithm=algorithm, algorithm_version=algorithm_version)
    return StructureVersion.from_row(row)


def _base(store, case, name: str, base_version: int):
    """(the base's mask: a PackedMask or None (empty) when stored, the full array for an original; the stored
    base version or None for the original; its provenance)."""
    latest = _stored(store, case, name, latest_only=True)
    current = latest[0].version if latest else 0
    if int(base_version) != current:
        raise InputError(f"structure {name}: the edit was made on version {int(base_version)}, but version {current} "
                         "is the latest; reload the structure and edit again")
    if latest:
        if tuple(latest[0].shape) != tuple(case.volume.shape):
            raise InputError(f"structure {name} lies on a grid {latest[0].shape}, not the case's {case.volume.shape}")
        return latest[0].mask, latest[0], latest[0].provenance
    sources = _sources(case)
    if name not in sources:
        raise InputError(f"{case.label}: no structure {name!r} to edit; create it first")
    return _source_mask(case, name), None, "AUTOMATIC" if sources[name] == "automatic" else "MANUAL"


def store_edit(store, case, author, name: str, base_version: int, mask: np.ndarray, *, operations: int = 1,
               origin: str = "edited", assisted: bool = True, algorithm: tuple[str, str] | None = None) -> StructureVersion:
    """Store ``mask`` as the next version of ``name``, made from ``base_version`` (the latest; 0 = the original).

    Provenance: SEMIAUTOMATIC, except that a structure drawn by hand from nothing (or a manual ROI)
    edited only by hand (``assisted=False``: no interpolation, threshold paint or import) stays MANUAL.
    """
    name = _check_name(name)
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(case.volume.shape):
        raise InputError(f"{case.label}: an edited mask of shape {mask.shape} does not fit the grid "
                         f"{tuple(case.volume.shape)}")
    return _store_version(store, case, author, name, base_version, pack(mask) if mask.any() else None,
                          _base(store, case, name, base_version), operations=operations, origin=origin,
                          assisted=assisted, algorithm=algorithm)


def _store_version(store, case, author, name: str, base_version: int, packed: PackedMask | None, based, *,
                   operations: int, origin: str, assisted: bool, algorithm: tuple[str, str] | None) -> StructureVersion:
    from lungseg import __version__

    _, base, base_provenance = based
    provenance = "MANUAL" if base_provenance == "MANUAL" and not assisted else "SEMIAUTOMATIC"
    if algorithm is not None:
        algo, algo_version = algorithm
    elif provenance == "MANUAL":
        algo, algo_version = "", ""
    else:
        first = base.algorithm if base is not None else (automatic_algorithm(case)[0] if name == AUTOMATIC_NAME
                                                         else "")
        algo = f"{first} + {EDIT_ALGORITHM}" if first and EDIT_ALGORITHM not in first else first or EDIT_ALGORITHM
        algo_version = __version__
    kind = base.kind if base is not None else ("GTV" if name == AUTOMATIC_NAME else kind_of(name))
    row = store.add_structure_version(case.key, case.label, name, kind, provenance=provenance, origin=origin,
                                      author=author, shape=tuple(case.volume.shape), mask=packed, parent=int(base_version),
                                      expected_latest=int(base_version), operations=int(operations),
                                      algorithm=algo, algorithm_version=algo_version)
    return StructureVersion.from_row(row)


def apply_edits(store, case, author, name: str, base_version: int, deltas: "str | bytes | Iterable[SliceDelta]",
                operations: int = 1, *, assisted: bool = True) -> StructureVersion:
    """Apply per-slice ``deltas`` (wire form or :class:`SliceDelta`) to version ``base_version`` of ``name``
    (which must be its latest; 0 = the original) on the case's own grid, and store the result as a new
    version (parent = ``base_version``).  The original and earlier versions are never changed."""
    shape = tuple(case.volume.shape)
    if isinstance(deltas, (str, bytes)):
        deltas = decode_deltas(deltas, shape)
    else:
        deltas = [d for d in deltas if d is not None]
    name = _check_name(name)
    based = _base(store, case, name, base_version)
    return _store_version(store, case, author, name, base_version, _edited(based[0], deltas, shape), based,
                          operations=operations, origin="edited", assisted=assisted, algorithm=None)


def _edited(base: "np.ndarray | PackedMask | None", deltas: list[SliceDelta], shape) -> PackedMask | None:
    """The base mask with ``deltas`` applied, packed; a stored base is edited inside the box that holds it and
    the deltas (a few slices of a lesion), never on the whole grid."""
    if isinstance(base, np.ndarray):
        region, offset = apply_deltas(base, deltas), (0, 0, 0)
    else:
        bounds = [d.bounds() for d in deltas] + ([(base.box[:3], base.box[3:])] if base is not None else [])
        if not bounds:
            return None
        lo = [min(b[0][i] for b in bounds) for i in range(3)]
        hi = [max(b[1][i] for b in bounds) for i in range(3)]
        if any(h > n for h, n in zip(hi, shape)):
            raise InputError(f"an edit lies outside the case's grid {tuple(shape)}")
        region = np.zeros([h - low for low, h in zip(lo, hi)], bool)
        if base is not None:
            z0, y0, x0, z1, y1, x1 = (v - lo[i % 3] for i, v in enumerate(base.box))
            region[z0:z1, y0:y1, x0:x1] = unpack_box(base)
        region, offset = apply_deltas(region, deltas, lo), tuple(lo)
    return pack_region(region, offset, shape) if region.any() else None


def interpolate_structure(store, case, author, name: str, base_version: int,
                          edited_slices: Sequence[int]) -> StructureVersion:
    """Interpolate the latest version of ``name`` between its ``edited_slices`` (:func:`interpolate_slices`,
    the case's in-plane spacing) and store the result as a new SEMIAUTOMATIC version (one operation)."""
    name = _check_name(name)
    base, _, _ = _base(store, case, name, base_version)
    shape = tuple(case.volume.shape)
    full = base if isinstance(base, np.ndarray) else unpack(base) if base is not None else np.zeros(shape, bool)
    spacing = case.volume.spacing_zyx
    return store_edit(store, case, author, name, base_version,
                      interpolate_slices(full, edited_slices, (spacing[1], spacing[2])), operations=1,
                      origin="interpolated", assisted=True)


# --------------------------------------------------------------------------------------------
# decisions and what is accepted


def decide(store, case, reviewer, name: str, accepted: bool, lesions: Sequence[int] | None = None,
           comment: str = "", version: int | None = None) -> StructureView:
    """Record one decision the user chose: accept or reject structure ``name`` (its latest version unless
    ``version`` says which; 0 = the original), or with ``lesions`` only those lesions of the unedited
    automatic contour.  Returns the structure as it now stands."""
    if not isinstance(accepted, bool):
        raise InputError(f"structure {name}: accepted must be true or false")
    view = structure(store, case, name)
    version = view.version if version is None else int(version)
    if not 0 <= version <= view.version:
        raise InputError(f"structure {name}: no version {version} (latest {view.version})")
    basis = ""
    if view.source == "automatic" and version == 0:
        basis = str(case.automatic.version or case.automatic.name)
    if lesions is not None:
        if view.source != "automatic" or version != 0:
            raise InputError("lesion numbers select lesions of the unedited automatic contour")
        numbers = sorted({int(n) for n in lesions})
        if not numbers:
            raise InputError("give at least one lesion number, or none for the whole structure")
        case.automatic.lesion_mask(numbers)  # refuses numbers the table does not have
        rows = [{"name": name, "accepted": accepted, "version": 0, "lesion": n, "basis": basis} for n in numbers]
    else:
        rows = [{"name": name, "accepted": accepted, "version": version, "lesion": None, "basis": basis}]
    store.record_structure_decisions(case.key, case.label, reviewer, rows, comment=comment)
    return structure(store, case, name)


@dataclass(frozen=True, eq=False)
class AcceptedStructure:
    """An accepted structure as it is exported: its mask (bool, the case's canonical grid) and provenance."""

    name: str
    mask: np.ndarray
    provenance: str
    algorithm_name: str
    algorithm_version: str
    origin: str
    version: int = 0
    colour: tuple[int, int, int] = (255, 220, 0)


def _accepted_original(case, name: str, lesions: tuple[int, ...] | None) -> AcceptedStructure:
    if name == AUTOMATIC_NAME:
        mask = _source_mask(case, name, lesions)
        origin = "automatic contour" if lesions is None else f"automatic lesion(s) {', '.join(map(str, lesions))}"
        return AcceptedStructure(name, mask, "AUTOMATIC", *automatic_algorithm(case), origin, 0, colour_of(name))
    return AcceptedStructure(name, _source_mask(case, name), "MANUAL", "", "", f"manual ROI {name}", 0,
                             colour_of(name))


def accepted_structures(store, case) -> dict[str, AcceptedStructure]:
    """Name → the accepted version of every structure the newest decisions accept (the version decided on;
    masks exactly as stored), in the order of :func:`case_structures`."""
    out: dict[str, AcceptedStructure] = {}
    views = case_structures(store, case)
    decided = _fold_decisions(store.structure_decisions(case.key))
    if not decided:
        return accepted_from_review(case, _latest_review(store, case))
    legacy = _legacy_added(store, case)
    for view in views:
        s = decided.get(view.name)
        if s is None:
            if view.name in legacy and view.latest is None:
                out[view.name] = _legacy_structure(view.name, legacy[view.name])
            continue
        if view.decision != "accepted":
            continue
        version = s["version"]
        if version == 0:
            if view.source == "automatic" and s["basis"] and s["basis"] != str(case.automatic.version or case.automatic.name):
                raise InputError(f"{case.label}: {view.name} was accepted on automatic contour {s['basis']}, the case "
                                 f"now has {case.automatic.version}; review it again")
            out[view.name] = _accepted_original(case, view.name, view.accepted_lesions)
            continue
        rows = [StructureVersion.from_row(r) for r in store.structure_versions(case.key, view.name)
                if int(r["version"]) == version]
        if not rows:
            raise InputError(f"{case.label}: structure {view.name} has no stored version {version}")
        v = rows[0]
        out[view.name] = AcceptedStructure(view.name, v.array(tuple(case.volume.shape)), v.provenance, v.algorithm,
                                           v.algorithm_version, v.origin, v.version, colour_of(view.name))
    return out


def _latest_review(store, case):
    return store.latest_case_review(case.key, source=case.source.as_dict())


def _legacy_added(store, case) -> dict[str, PackedMask]:
    """Lesions added by click before structures existed (``case_reviews.added``): each its own structure C1, ..."""
    review = _latest_review(store, case)
    if review is None or not review.added:
        return {}
    return {a.label: a.mask for a in review.added if tuple(a.mask.shape) == tuple(case.volume.shape)}


def _legacy_structure(name: str, mask: PackedMask) -> AcceptedStructure:
    from lungseg import __version__

    return AcceptedStructure(name, unpack(mask), "SEMIAUTOMATIC", CLICK_ALGORITHM, __version__, "click", 0,
                             colour_of(name))


def accepted_from_review(case, review, name: str | None = None) -> dict[str, AcceptedStructure]:
    """What a stored case review (:class:`lungseg.study.CaseReview`) accepts, as structures: the automatic
    contour (or its accepted lesions) as ``name`` (default GTV-auto), the manual contour under its ROI name,
    each lesion added by click as its own structure (C1, C2, ...)."""
    out: dict[str, AcceptedStructure] = {}
    if review is None:
        return out
    auto = review.decision("automatic")
    if auto is not None and auto.accepted:
        if case.automatic is None:
            raise InputError(f"{case.label}: the review accepted an automatic contour the case no longer has")
        a = _accepted_original(case, AUTOMATIC_NAME, auto.lesions)
        out[name or AUTOMATIC_NAME] = AcceptedStructure(name or AUTOMATIC_NAME, a.mask, a.provenance, a.algorithm_name,
                                                        a.algorithm_version, a.origin, 0, colour_of(name or a.name))
    man = review.decision("manual")
    if man is not None and man.accepted:
        if case.manual is None:
            raise InputError(f"{case.label}: the review accepted a manual contour the case no longer has")
        out[case.manual.name] = AcceptedStructure(case.manual.name, case.manual.mask, "MANUAL", "", "",
                                                  f"manual ROI {case.manual.name}", 0, colour_of(case.manual.name))
    for a in review.added:
        out.setdefault(a.label, _legacy_structure(a.label, a.mask))
    return out


def accepted_from_verdict(case, verdict: Mapping[str, Any], review=None) -> dict[str, AcceptedStructure]:
    """What a study verdict (a ``StudyStore.reviews_table`` row) accepts, with the case review it came from
    (only its accepted lesions then, and its lesions added by click)."""
    source = verdict["accepted_source"]
    if source not in ("automatic", "manual"):
        raise InputError(f"case {verdict['case_id']}: no contour was accepted")
    if review is not None:
        got = accepted_from_review(case, review)
        keep = {AUTOMATIC_NAME} | {a.label for a in review.added} if source == "automatic" else \
            {case.manual.name if case.manual else ""}
        return {k: v for k, v in got.items() if k in keep}
    if source == "automatic":
        return {AUTOMATIC_NAME: _accepted_original(case, AUTOMATIC_NAME, None)}
    if case.manual is None:
        raise InputError(f"case {verdict['case_id']}: the verdict accepted a manual contour the case does not have")
    return {case.manual.name: AcceptedStructure(case.manual.name, case.manual.mask, "MANUAL", "", "",
                                                f"manual ROI {case.manual.name}", 0, colour_of(case.manual.name))}


# --------------------------------------------------------------------------------------------
# the one export path


def export_structures(case, accepted: Mapping[str, AcceptedStructure], fmt: str, out: str | Path, *,
                      names: Sequence[str] | None = None, ct_out: str | Path | None = None,
                      description: str | None = None) -> list[Path]:
    """Write accepted structures onto the case's source CT, each under its own name with its provenance.

    SEG: one segment per structure (SegmentAlgorithmType, algorithm name and version); RTSTRUCT: one ROI
    per structure (ROIGenerationAlgorithm, ROIGenerationDescription naming the algorithm and version);
    NIfTI/NRRD: one label image, value i for the i-th structure (structures must not overlap there).
    ``names`` picks some of them.  A non-DICOM CT needs ``ct_out`` for SEG/RTSTRUCT (the CT is written there
    as a DICOM series first).  Returns the paths written.
    """
    from lungseg.case import with_dicom_headers
    from lungseg.export import MaskInfo, export_masks, with_dicom_series

    chosen = dict(accepted)
    if names is not None:
        unknown = [n for n in names if n not in chosen]
        if unknown:
            raise InputError(f"{case.label}: {', '.join(unknown)} not accepted (accepted: "
                             f"{', '.join(chosen) or 'nothing'})")
        chosen = {n: chosen[n] for n in names}
    if not chosen:
        raise InputError(f"{case.label}: nothing accepted to export (accept a structure first)")
    loaded = case.ct
    if fmt in ("seg", "rtstruct"):
        loaded = with_dicom_headers(loaded)
        if loaded.dicom is None:
            if ct_out is None:
                raise InputError(f"{case.label}: {fmt} needs a DICOM CT to reference; give --ct-out DIR to write it")
            loaded = with_dicom_series(loaded, ct_out)
    info = {n: MaskInfo(a.provenance, a.algorithm_name, a.algorithm_version, a.colour) for n, a in chosen.items()}
    return [export_masks(loaded, {n: a.mask for n, a in chosen.items()}, fmt, Path(out), description=description,
                         info=info)]


DOWNLOAD_SUFFIX = {"nifti": ".nii.gz", "nrrd": ".nrrd", "seg": ".seg.dcm", "rtstruct": ".rtstruct.dcm"}


def export_download(case, accepted: Mapping[str, AcceptedStructure], fmt: str, *, names: Sequence[str] | None = None,
                    stem: str | None = None, description: str | None = None) -> tuple[bytes, str, str]:
    """:func:`export_structures` as a download: (bytes, file name, MIME type).  A SEG/RTSTRUCT of a non-DICOM
    CT comes as a zip with the CT series written for it (``ct/``)."""
    import tempfile

    if fmt not in DOWNLOAD_SUFFIX:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(DOWNLOAD_SUFFIX)}")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem or f"{case.label}-accepted").strip("._") or "accepted"
    with tempfile.TemporaryDirectory(prefix="lungseg-export-") as tmp:
        tmp = Path(tmp)
        ct_out = tmp / "ct" if fmt in ("seg", "rtstruct") and case.ct.dicom is None else None
        (path,) = export_structures(case, accepted, fmt, tmp / f"{stem}{DOWNLOAD_SUFFIX[fmt]}", names=names,
                                    ct_out=ct_out, description=description)
        if ct_out is None:
            return path.read_bytes(), path.name, "application/octet-stream"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(ct_out.rglob("*")):
                if f.is_file():
                    z.write(f, f"ct/{f.relative_to(ct_out)}")
            z.write(path, path.name)
        return buf.getvalue(), f"{stem}-{fmt}-with-ct.zip", "application/zip"


# --------------------------------------------------------------------------------------------
# editing effort


def record_activity(store, case, user, events: Iterable[tuple[float, str]]) -> int:
    """Store the viewer's interaction events ``(unix time in s, kind)``, kind e.g. pointer, key, edit."""
    return store.record_activity(case.key, user, events)


def active_seconds(times: Iterable[float], idle_gap_s: float = IDLE_GAP_S) -> float:
    """Time spent interacting: the sum of the gaps between consecutive events, gaps over ``idle_gap_s`` left out."""
    t = np.sort(np.asarray(list(times), float))
    if t.size < 2:
        return 0.0
    gaps = np.diff(t)
    return float(gaps[gaps <= idle_gap_s].sum())


@dataclass(frozen=True)
class EditingEffort:
    """One user's effort on one structure of a case."""

    case: str
    user: str
    name: str | None
    active_s: float
    operations: int
    added_ml: float
    removed_ml: float
    dice: float
    hd95_mm: float
    surface_dice_2mm: float
    from_version: int | None
    to_version: int | None

    def as_row(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def editing_efforts(store, case, user) -> list[EditingEffort]:
    """``user``'s effort on each structure they edited in ``case`` (one row without a structure if none):
    active time on the case, edit operations, and the change from the structure's starting contour (version 1
    of a created structure, the original of an edited one) to the user's latest version."""
    from lungseg import metrics
    from lungseg.study.structures import person

    who = person(user)
    active = active_seconds(r["at"] for r in store.activity(case.key, who))
    rows = store.structure_versions(case.key, with_masks=False)
    mine = [r for r in rows if r["author"] == who]
    by_name: dict[str, list] = {}
    for r in mine:
        by_name.setdefault(r["name"], []).append(r)
    if not by_name:
        return [EditingEffort(case.label, who, None, active, 0, 0.0, 0.0, float("nan"), float("nan"), float("nan"),
                              None, None)]
    spacing_zyx = tuple(case.volume.spacing_zyx)
    voxel_ml = case.volume.voxel_volume_ml
    out = []
    for name, versions in by_name.items():
        first_all = min(int(r["version"]) for r in rows if r["name"] == name)
        start = first_all if first_all == 1 and next(r for r in rows if r["name"] == name and r["version"] == 1)[
            "parent"] is None else 0
        to = max(int(r["version"]) for r in versions)
        ops = sum(int(r["operations"]) for r in versions)
        stored = {v.version: v for v in _stored(store, case, name)}
        before = stored[start].array() if start in stored else _source_mask(case, name)
        after = stored[to].array()
        out.append(EditingEffort(case.label, who, name, active, ops, float((after & ~before).sum() * voxel_ml),
                                 float((before & ~after).sum() * voxel_ml), metrics.dice(after, before),
                                 metrics.hd95(after, before, spacing_zyx),
                                 metrics.surface_dice(after, before, spacing_zyx, 2.0), start, to))
    return out


def editing_effort(store, case, user, name: str | None = None) -> EditingEffort:
    """:func:`editing_efforts` of one structure (``name``; default the one the user edited last)."""
    efforts = editing_efforts(store, case, user)
    if name is None:
        return efforts[-1] if len(efforts) == 1 else max(efforts, key=lambda e: (e.to_version or 0, e.name or ""))
    for e in efforts:
        if e.name == name:
            return e
    raise InputError(f"{case.label}: {user} edited no structure {name!r}")


EFFORT_COLUMNS = ("case", "user", "name", "active_s", "operations", "added_ml", "removed_ml", "dice", "hd95_mm",
                  "surface_dice_2mm", "from_version", "to_version")


def effort_csv(efforts: Iterable[EditingEffort], out: str | Path | None = None) -> str:
    """The efforts as CSV text (header :data:`EFFORT_COLUMNS`); also written to ``out`` when given."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EFFORT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for e in efforts:
        w.writerow(e.as_row())
    text = buf.getvalue()
    if out is not None:
        Path(out).write_text(text)
    return text


def case_efforts(store, case) -> list[EditingEffort]:
    """Every user's efforts on a case (users with activity or versions)."""
    users = set(store.activity_users(case.key)) | {r["author"] for r in store.structure_versions(case.key,
                                                                                                  with_masks=False)}
    return [e for u in sorted(users) for e in editing_efforts(store, case, u)]
