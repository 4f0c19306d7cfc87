"""`python -m lungseg segment` on a case as a whole process, as a user runs it (median of N runs).

Goal: <= 15 s on 2 CPU cores for LUNG1-001.  The last run's own stage times are printed too.
    python benchmarks/bench_segment_process.py [--case LUNG1-001] [--repeat 3] [--model models/lungseg_unet.pt]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, shared_data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="LUNG1-001")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    path = shared_data() / f"{args.case}.zip"
    walls, out = [], ""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "lungseg", "segment", str(path), "--out", str(Path(d) / "mask.nii.gz"), "--no-cache"]
        if args.model:
            cmd += ["--model", args.model]
        for _ in range(args.repeat):
            t = time.perf_counter()
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t)
            out = done.stdout
    print(f"{args.case}: whole process {statistics.median(walls):.2f} s median of {len(walls)} "
          f"({', '.join(f'{w:.2f}' for w in walls)})")
    print(out.strip())


if __name__ == "__main__":
    main()
