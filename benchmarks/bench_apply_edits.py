"""Server side of an edit: ``structures.apply_edits`` (decode the per-slice delta, apply it on the case's grid,
store the new version in SQLite with its audit row), warm, on LUNG1-001's automatic lesion 1.

    python benchmarks/bench_apply_edits.py [--edits 30] [--repeat 3]

Each edit is a 10 mm brush stroke on the lesion's middle slice, sent in the viewer's wire format; prints the
median and 95th percentile of the milliseconds per edit, for each of ``--repeat`` runs on a fresh database.
The browser round trip (delta sent, applied, acknowledged) is ``benchmarks/bench_edit.py``.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import shared_data

from lungseg import structures as S
from lungseg.case import open_case, source_for_input
from lungseg.study import StudyStore


def run(case, edits: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, StudyStore(Path(tmp) / "bench.db") as store:
        v = S.create_structure(store, case, "bench", "GTVp", "GTVp", ("automatic", [1]))
        mask = v.array()
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        k = int(zs[len(zs) // 2])
        y, x = np.argwhere(mask[k])[0]
        times = []
        for i in range(edits):
            before = mask[k].copy()
            after = before | S.brush(case.volume, (k, y + (i % 7) - 3, x + (i % 5) - 2), 5.0)
            wire = S.encode_deltas([d for d in [S.delta_between(before, after, "axial", k)] if d is not None])
            t = time.perf_counter()
            v = S.apply_edits(store, case, "bench", "GTVp", v.version, wire)
            times.append((time.perf_counter() - t) * 1000)
            mask[k] = after
        return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    case = open_case(source_for_input(str(shared_data() / "LUNG1-001.zip")))
    for r in range(args.repeat):
        ms = run(case, args.edits)
        print(f"run {r + 1}: apply_edits median {statistics.median(ms):.1f} ms, "
              f"p95 {np.percentile(ms, 95):.1f} ms over {len(ms)} edits")


if __name__ == "__main__":
    main()
