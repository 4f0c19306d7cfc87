"""`lungs` as whole processes (start-up, imports, reading, isolation, writing), against a naive
threshold prototype (`naive_lungs.py`) run on the same input in the same run, interleaved.

Inputs: LUNG1-001 (134 × 512², 3 mm) and LUNG1-001 resampled to 1 mm slices, 300 × 512² (a DICOM
series written once under /tmp).  Both programs read the same extracted DICOM folder.  Medians of
``--repeat`` runs (default 3); wall time, CPU time (user + system) and peak RSS per process.
Issue 13's goals (2 cores):
  LUNG1-001: lungs ≤ 0.5 × naive, isolation ≤ 1.5 s;  1 mm scan: isolation ≤ 3 s, whole ≤ 5 s,
  peak RSS ≤ 2 GB;  `python -m lungseg --help` ≤ 1 s.
    python benchmarks/bench_lungs.py [--repeat 3]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from _common import extracted_case, load_note, lungseg_cmd, median, one_mm_scan, run_process, verdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    case = extracted_case("LUNG1-001")
    big = one_mm_scan()
    out = Path(tempfile.mkdtemp(prefix="lungseg-bench-"))
    naive = [sys.executable, str(Path(__file__).with_name("naive_lungs.py"))]
    print(f"before: {load_note()}")

    runs = {"naive": [], "lungs": [], "lungs 1 mm": [], "help": []}
    for i in range(args.repeat):  # interleaved, so that a burst of load hits every program alike
        runs["naive"].append(run_process([*naive, case, out / "naive.nii.gz"]))
        runs["lungs"].append(run_process(lungseg_cmd("lungs", case, "--no-cache", "--out", out / "lungs.nii.gz",
                                                     "--region-out", out / "region.nii.gz")))
        runs["lungs 1 mm"].append(run_process(lungseg_cmd("lungs", big, "--no-cache", "--out", out / "lungs1mm.nii.gz",
                                                          "--region-out", out / "region1mm.nii.gz")))
        runs["help"].append(run_process(lungseg_cmd("--help")))
    print(f"after:  {load_note()}")
    print(runs["lungs"][-1].output.strip())
    print(runs["lungs 1 mm"][-1].output.strip())
    print(runs["naive"][-1].output.strip())

    print(f"\nmedians of {args.repeat} whole-process runs: wall s | CPU s | isolation s (printed by the program) | peak RSS MB")
    for name, rs in runs.items():
        iso = median(r.seconds("isolation") for r in rs)
        print(f"  {name:12s} {median(r.wall_s for r in rs):6.2f} | {median(r.cpu_s for r in rs):6.2f} | "
              f"{iso:6.2f} | {max(r.peak_rss_mb for r in rs):6.0f}   (wall: {', '.join(f'{r.wall_s:.2f}' for r in rs)})")

    lungs, naive_runs, big_runs = runs["lungs"], runs["naive"], runs["lungs 1 mm"]
    ratio = median(r.wall_s / n.wall_s for r, n in zip(lungs, naive_runs))
    cpu_ratio = median(r.cpu_s / n.cpu_s for r, n in zip(lungs, naive_runs))
    print("\ngoals:")
    print(f"  LUNG1-001 lungs / naive (wall, paired runs): {ratio:.2f}  {verdict(ratio, 0.5)};  CPU ratio {cpu_ratio:.2f}")
    print(f"  LUNG1-001 isolation {median(r.seconds('isolation') for r in lungs):.2f} s  "
          f"{verdict(median(r.seconds('isolation') for r in lungs), 1.5)}")
    print(f"  1 mm 300-slice isolation {median(r.seconds('isolation') for r in big_runs):.2f} s  "
          f"{verdict(median(r.seconds('isolation') for r in big_runs), 3.0)}")
    print(f"  1 mm 300-slice whole process {median(r.wall_s for r in big_runs):.2f} s  "
          f"{verdict(median(r.wall_s for r in big_runs), 5.0)}")
    print(f"  1 mm 300-slice peak RSS {max(r.peak_rss_mb for r in big_runs):.0f} MB  "
          f"{verdict(max(r.peak_rss_mb for r in big_runs), 2048)}")
    print(f"  --help {median(r.wall_s for r in runs['help']):.2f} s  {verdict(median(r.wall_s for r in runs['help']), 1.0)}")


if __name__ == "__main__":
    main()
