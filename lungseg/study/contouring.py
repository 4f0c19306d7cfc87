"""Design of a contouring study: which reader contours which case in which arm, in which session.

Every reader contours every case twice, once in each arm: ``scratch`` (an empty start) and ``assisted`` (a
start from the automatic contour).  The arms form a balanced, randomised crossover: a study-level seeded
permutation ranks the cases, and a reader contours case ``c`` from scratch first when
``rank(c) + reader ordinal + coin`` is even (``coin`` a seeded 0/1).  So each reader has ⌊n/2⌋ or ⌈n/2⌉ cases
scratch-first, and each case is read scratch-first by alternate readers.  Optionally ``repeats`` cases per
reader (seeded) are contoured a third time, in ``repeat_arm``, for intra-observer agreement.

A reader's readings of one case are kept apart.  With ``min_gap_sessions = g >= 1`` each reader's cases are
dealt (in a seeded order) into ``g`` blocks; the first readings of block ``b`` are session ``b + 1``, the
second readings session ``g + b + 1``, the repeats session ``2g + b + 1``, so two readings of one case are at
least ``g`` sessions apart.  Empty sessions (a block without repeats) are skipped.  ``min_gap_days`` further
holds a reading back until that many days after the reader submitted an earlier reading of the same case.
With ``g = 0`` all readings are one session, shuffled so that no two readings of a case are adjacent.

Pure and deterministic for a given seed (the randomness helpers of :mod:`.design`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lungseg.study.design import StudyError, rng_for, shuffled

ARMS = ("scratch", "assisted")
MODEL_ARM = "model"
DEFAULT_CONTOURING_INSTRUCTIONS = (
    "Contour the gross tumour volume (primary tumour and involved nodes) on every slice where you see it. "
    "Some cases start from an automatic draft, others from an empty contour: correct or draw until the "
    "contour is the one you would use for treatment, then submit. Work at your usual pace; the time counts "
    "only while you interact with the case (pauses over 60 s are left out)."
)


@dataclass(frozen=True)
class ContouringParams:
    """How a contouring study's readings are planned (see the module docstring)."""

    repeats: int = 0
    repeat_arm: str = "scratch"
    min_gap_sessions: int = 1
    min_gap_days: float = 0.0
    seed: int = 0
    instructions: str = DEFAULT_CONTOURING_INSTRUCTIONS

    def __post_init__(self) -> None:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 0:
            raise StudyError(f"repeats must be a whole number >= 0, got {self.repeats!r}")
        if self.repeat_arm not in ARMS:
            raise StudyError(f"repeat arm must be scratch or assisted, got {self.repeat_arm!r}")
        if isinstance(self.min_gap_sessions, bool) or not isinstance(self.min_gap_sessions, int) \
                or self.min_gap_sessions < 0:
            raise StudyError(f"minimum gap in sessions must be a whole number >= 0, got {self.min_gap_sessions!r}")
        if not isinstance(self.min_gap_days, (int, float)) or not math.isfinite(self.min_gap_days) \
                or self.min_gap_days < 0:
            raise StudyError(f"minimum gap in days must be a number >= 0, got {self.min_gap_days!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "contouring", "repeats": self.repeats, "repeat_arm": self.repeat_arm,
                "min_gap_sessions": self.min_gap_sessions, "min_gap_days": float(self.min_gap_days),
                "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], instructions: str | None = None) -> "ContouringParams":
        known = {k: data[k] for k in ("repeats", "repeat_arm", "min_gap_sessions", "min_gap_days", "seed") if k in data}
        return cls(**known, instructions=instructions or DEFAULT_CONTOURING_INSTRUCTIONS)


@dataclass(frozen=True)
class PlannedReading:
    """One reading in a reader's plan: ``reading`` 1 is a case's reading in ``arm``, 2 its repeat."""

    case_id: str
    arm: str
    reading: int
    session: int
    position: int


def first_arms(case_ids: Sequence[str], params: ContouringParams, reader_ordinal: int) -> dict[str, str]:
    """The arm each case is read in first by the reader invited ``reader_ordinal``-th (0-based)."""
    ranks = {c: i for i, c in enumerate(shuffled(sorted(case_ids), rng_for("crossover", params.seed)))}
    coin = 1 if rng_for("crossover-coin", params.seed).random() < 0.5 else 0
    return {c: ARMS[(ranks[c] + reader_ordinal + coin) % 2] for c in case_ids}


def _apart(order: Sequence[PlannedReading]) -> bool:
    return all(a.case_id != b.case_id for a, b in zip(order, order[1:]))


def plan_readings(case_ids: Sequence[str], params: ContouringParams, reader_ordinal: int,
                  reader_key: object) -> list[PlannedReading]:
    """One reader's readings in order (positions 1..n), sessions as in the module docstring."""
    case_ids = list(case_ids)
    if not case_ids:
        raise StudyError("a contouring study needs at least one case")
    if len(set(case_ids)) != len(case_ids):
        raise StudyError("a case is listed twice")
    if params.repeats > len(case_ids):
        raise StudyError(f"cannot repeat {params.repeats} cases: the study has only {len(case_ids)}")
    gap = params.min_gap_sessions
    if gap > len(case_ids):
        raise StudyError(f"cannot keep readings {gap} sessions apart with only {len(case_ids)} cases")
    first = first_arms(case_ids, params, reader_ordinal)
    rng = rng_for("contouring", params.seed, reader_key)
    dealt = shuffled(case_ids, rng)
    repeated = set(shuffled(case_ids, rng)[: params.repeats])
    periods = [
        [(c, first[c], 1) for c in dealt],
        [(c, ARMS[1 - ARMS.index(first[c])], 1) for c in dealt],
        [(c, params.repeat_arm, 2) for c in dealt if c in repeated],
    ]
    if gap == 0:
        readings = [r for period in periods for r in period]
        for _ in range(10_000):
            order = shuffled(readings, rng)
            if _apart([PlannedReading(c, a, k, 1, 0) for c, a, k in order]):
                break
        else:
            raise StudyError("cannot keep a reader's readings of one case apart with so few cases")
        return [PlannedReading(c, a, k, 1, pos) for pos, (c, a, k) in enumerate(order, start=1)]
    block = {c: i % gap for i, c in enumerate(dealt)}
    sessions: dict[int, list[tuple[str, str, int]]] = {}
    for p, period in enumerate(periods):
        for c, a, k in period:
            sessions.setdefault(p * gap + block[c] + 1, []).append((c, a, k))
    out: list[PlannedReading] = []
    for session in sorted(sessions):
        for c, a, k in shuffled(sessions[session], rng):
            out.append(PlannedReading(c, a, k, session, len(out) + 1))
    return out
