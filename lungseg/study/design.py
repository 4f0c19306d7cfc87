"""Study design: which slices are shown, in which order, and on which side each contour appears.

Everything here is pure and deterministic for a given seed, so a design can be rebuilt and
checked later.  Randomness comes from :class:`random.Random` seeded by a SHA-256 of the study seed
and the rater key, and only its ``random()`` output is used (the one part of :mod:`random` whose
stream Python guarantees across versions); the shuffle is our own Fisher–Yates on top of it.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from lungseg.errors import LungsegError

SOURCES = ("automatic", "manual")
SIDES = ("left", "right")
SPECIALTIES = (
    "Radiologist",
    "Radiation oncologist",
    "Medical doctor",
    "Computer scientist",
    "Student",
)

DEFAULT_INSTRUCTIONS = (
    "Two contours of the same tumour are shown on the same CT slice. "
    "Choose the contour that outlines the tumour more accurately. "
    "Including tissue that is not tumour (over-inclusion) and leaving out tumour "
    "(under-inclusion) both count as inaccurate. "
    "If both contours are wrong, choose the one that is less wrong. "
    "Do not judge cosmetics such as smoothness or line style: judge only which region is "
    "closer to the true tumour extent."
)


class StudyError(LungsegError):
    """A preference-study request that cannot be carried out, explained in one line."""


def canonical_specialty(name: str) -> str:
    """Trim ``name`` and spell a known specialty the canonical way (case-insensitive match).

    Unknown groups are allowed (a study may include e.g. surgeons) and returned trimmed.
    """
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise StudyError("specialty/group must not be empty")
    for known in SPECIALTIES:
        if known.lower() == cleaned.lower():
            return known
    return cleaned


@dataclass(frozen=True)
class CaseMetadata:
    """Case properties used to stratify the report; every field is optional."""

    slice_thickness_mm: float | None = None
    tumour_volume_ml: float | None = None
    location: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "CaseMetadata":
        data = dict(data or {})

        def number(key: str) -> float | None:
            value = data.pop(key, None)
            if value is None or value == "":
                return None
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise StudyError(f"metadata {key} must be a number, got {value!r}") from None
            if not math.isfinite(out) or out < 0:
                raise StudyError(f"metadata {key} must be a finite non-negative number, got {value!r}")
            return out

        thickness = number("slice_thickness_mm")
        volume = number("tumour_volume_ml")
        location = data.pop("location", None)
        location = None if location in (None, "") else " ".join(str(location).split())
        return cls(thickness, volume, location, data)


@dataclass(frozen=True)
class CaseSpec:
    """One patient case: its id and the axial slice indices where either contour exists."""

    case_id: str
    slices: tuple[int, ...]
    metadata: CaseMetadata = CaseMetadata()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaseSpec":
        """Build from ``{"case_id": ..., "slices": [...], "metadata": {...}}`` (a cases.json entry)."""
        if not isinstance(data, Mapping):
            raise StudyError(f"a case must be an object, got {type(data).__name__}")
        if "case_id" not in data or "slices" not in data:
            raise StudyError("a case needs 'case_id' and 'slices'")
        slices = data["slices"]
        if not isinstance(slices, (list, tuple)):
            raise StudyError(f"case {data['case_id']}: 'slices' must be a list of integers")
        return cls(str(data["case_id"]), tuple(slices), CaseMetadata.from_dict(data.get("metadata")))

    def __post_init__(self) -> None:
        case_id = str(self.case_id).strip()
        if not case_id:
            raise StudyError("case_id must not be empty")
        object.__setattr__(self, "case_id", case_id)
        clean = []
        for s in self.slices:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise StudyError(f"case {case_id}: slice indices must be non-negative integers, got {s!r}")
            clean.append(int(s))
        object.__setattr__(self, "slices", tuple(sorted(set(clean))))
        if not self.slices:
            raise StudyError(f"case {case_id}: no slices with a contour")


@dataclass(frozen=True)
class DesignParams:
    """How a study is built from its cases and how each rater's sequence is randomised.

    ``slices_per_case``: axial slices shown per case, spread evenly over the contoured slices
    (all of them when a case has fewer).  ``repeats``: items shown a second time to each rater
    to measure intra-rater consistency; ``min_repeat_gap``: the least distance in positions
    between an item and its repeat (2 = never adjacent).  ``turing``: also ask which contour
    the rater thinks was drawn by the computer.
    """

    slices_per_case: int = 9
    repeats: int = 0
    min_repeat_gap: int = 2
    turing: bool = False
    seed: int = 0
    instructions: str = DEFAULT_INSTRUCTIONS

    def __post_init__(self) -> None:
        if self.slices_per_case < 1:
            raise StudyError("slices per case must be at least 1")
        if self.repeats < 0:
            raise StudyError("repeats must not be negative")
        if self.min_repeat_gap < 1:
            raise StudyError("min_repeat_gap must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        return {
            "slices_per_case": self.slices_per_case,
            "repeats": self.repeats,
            "min_repeat_gap": self.min_repeat_gap,
            "turing": self.turing,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ItemSpec:
    """A study item: one axial slice of one case; ``repeat_of`` names the item it repeats."""

    key: str
    case_id: str
    slice_index: int | None
    repeat_of: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where an item appears in one rater's sequence and on which side the automatic contour is."""

    item_key: str
    position: int  # 1-based
    auto_side: str  # "left" or "right"


def item_key(case_id: str, slice_index: int) -> str:
    """The stable key of an original item, e.g. ``LUNG1-001/z057``."""
    return f"{case_id}/z{slice_index:03d}"


def pick_slices(slices: Sequence[int], n: int) -> list[int]:
    """``n`` of ``slices`` spread evenly: the middle slice of each of ``n`` equal runs.

    Taking bin centres rather than ``linspace`` end points avoids the first and last contoured
    slices, where a tumour is a few pixels and the comparison says little.
    """
    ordered = sorted(set(slices))
    m = len(ordered)
    if n >= m:
        return ordered
    # step m/n >= 1, so the indices are strictly increasing (distinct).
    return [ordered[((2 * i + 1) * m) // (2 * n)] for i in range(n)]


def rng_for(*parts: object) -> random.Random:
    """A :class:`random.Random` seeded from ``parts`` via SHA-256 (stable across runs/platforms)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _below(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def shuffled(values: Sequence[Any], rng: random.Random) -> list[Any]:
    """A Fisher–Yates shuffle that only depends on ``rng.random()``."""
    out = list(values)
    for i in range(len(out) - 1, 0, -1):
        j = _below(rng, i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def plan_items(cases: Iterable[CaseSpec], params: DesignParams) -> list[ItemSpec]:
    """The study's items: ``slices_per_case`` slices per case, then ``repeats`` repeated items.

    Repeated items are drawn at random (seeded) from the originals and get keys ``<key>#r``.
    """
    cases = list(cases)
    seen: set[str] = set()
    items: list[ItemSpec] = []
    for case in cases:
        if case.case_id in seen:
            raise StudyError(f"case {case.case_id} is listed twice")
        seen.add(case.case_id)
        for z in pick_slices(case.slices, params.slices_per_case):
            items.append(ItemSpec(item_key(case.case_id, z), case.case_id, z))
    if not items:
        raise StudyError("a study needs at least one case")
    if params.repeats > len(items):
        raise StudyError(f"cannot repeat {params.repeats} items: the study has only {len(items)}")
    rng = rng_for("repeats", params.seed)
    chosen = sorted(shuffled(range(len(items)), rng)[: params.repeats])
    items += [
        ItemSpec(items[i].key + "#r", items[i].case_id, items[i].slice_index, items[i].key) for i in chosen
    ]
    return items


def balanced_sides(n: int, rng: random.Random) -> list[str]:
    """``n`` sides for the automatic contour, ``left`` for ⌊n/2⌋ or ⌈n/2⌉ of them, shuffled."""
    n_left = n // 2 + (n % 2 and _below(rng, 2))
    return shuffled(["left"] * n_left + ["right"] * (n - n_left), rng)


def _repeat_gaps_ok(order: Sequence[ItemSpec], min_gap: int) -> bool:
    where = {it.key: i for i, it in enumerate(order)}
    return all(abs(where[it.key] - where[it.repeat_of]) >= min_gap for it in order if it.repeat_of)


def assign(items: Sequence[ItemSpec], params: DesignParams, rater_key: object) -> list[Placement]:
    """One rater's sequence: a seeded shuffle of ``items`` and a balanced left/right for each.

    The same ``(params.seed, rater_key)`` always gives the same sequence.  A repeat is never
    closer than ``params.min_repeat_gap`` positions to its original.
    """
    if not items:
        raise StudyError("the study has no items to assign")
    rng = rng_for("assign", params.seed, rater_key)
    for _ in range(10_000):
        order = shuffled(items, rng)
        if _repeat_gaps_ok(order, params.min_repeat_gap):
            break
    else:
        raise StudyError(
            f"cannot keep repeats {params.min_repeat_gap} positions from their originals "
            f"with only {len(items)} items"
        )
    sides = balanced_sides(len(order), rng)
    return [Placement(it.key, pos, side) for pos, (it, side) in enumerate(zip(order, sides), start=1)]
