"""`train` as a user runs it on a CPU: an MSD-layout folder holding LUNG1-001 and LUNG1-002 (GTV-1 as the
label), `--steps 40`, pinned to 2 cores, whole process, median of 3 (a fresh run folder each time); then
`segment --model` with the weights it wrote.

    python benchmarks/bench_train.py [--repeat 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from _common import load_note, lungseg_cmd, median, run_process, shared_data, verdict


def msd_folder(out: Path) -> Path:
    from lungseg.training.msd import write_msd_task
    from lungseg.training.sources import discover

    if (out / "dataset.json").exists():
        return out
    cases = [discover(str(shared_data() / f"{name}.zip"), "GTV-1").cases[0] for name in ("LUNG1-001", "LUNG1-002")]
    return write_msd_task(out, cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    data = msd_folder(Path(tempfile.gettempdir()) / "lungseg-bench" / "msd-lung1-001-002")
    pin = ["taskset", "-c", "0,1"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []
    runs = []
    for i in range(args.repeat):
        out = Path(tempfile.mkdtemp(prefix="bench-train-")) / "m.pt"
        run = run_process(pin + lungseg_cmd("train", "--data", data, "--out", out, "--steps", args.steps))
        card = out.with_suffix(".md").read_text()
        names = all(f"| {c} |" in card for c in ("LUNG1-001", "LUNG1-002"))
        print(f"run {i + 1}: {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU, peak RSS {run.peak_rss_mb:.0f} MB; "
              f"m.pt {out.stat().st_size / 1e6:.1f} MB; m.md names both training cases: {names}; {load_note()}", flush=True)
        runs.append((run, out))
    wall = median(r.wall_s for r, _ in runs)
    size = max(o.stat().st_size for _, o in runs) / 1e6
    print(f"train --steps {args.steps}, 2 cores, median of {len(runs)}: {wall:.1f} s {verdict(wall, 180)}; "
          f"weights {size:.1f} MB {verdict(size, 20)}")
    seg = run_process(lungseg_cmd("segment", shared_data() / "LUNG1-001.zip", "--out", runs[0][1].with_name("t.nii.gz"),
                                  "--model", runs[0][1], "--no-cache"))
    print(f"segment --model m.pt: {seg.output.strip().splitlines()[0]} ({seg.wall_s:.1f} s)")


if __name__ == "__main__":
    main()
