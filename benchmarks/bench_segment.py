"""`segment` as whole processes: start-up and imports, DICOM reading, lung isolation, U-Net on the
CPU, writing the mask.  LUNG1-001 (134 × 512², 3 mm) and LUNG1-001 resampled to 1 mm slices
(300 × 512², a DICOM series written once under /tmp).  Medians of ``--repeat`` runs (default 3),
interleaved; wall time, CPU time (user + system), peak RSS, and the stage times `segment` prints.
Issue 13's goals (2 cores): LUNG1-001 ≤ 8 s, the 1 mm scan ≤ 15 s, peak RSS ≤ 2.5 GB.
    python benchmarks/bench_segment.py [--repeat 3] [--device cpu]
"""

import argparse
import tempfile
from pathlib import Path

from _common import extracted_case, load_note, lungseg_cmd, median, one_mm_scan, run_process, verdict

STAGES = ("load", "lungs", "U-Net", "write")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    inputs = {"LUNG1-001": extracted_case("LUNG1-001"), "1 mm 300-slice": one_mm_scan()}
    out = Path(tempfile.mkdtemp(prefix="lungseg-bench-"))
    print(f"before: {load_note()}")
    runs = {name: [] for name in inputs}
    for i in range(args.repeat):
        for name, path in inputs.items():
            runs[name].append(run_process(lungseg_cmd("segment", path, "--no-cache", "--out", out / "tumour.nii.gz", "--device", args.device)))
    print(f"after:  {load_note()}")
    print(f"\nmedians of {args.repeat} whole-process runs on {args.device}: wall s | CPU s | peak RSS MB | stages (as printed)")
    for name, rs in runs.items():
        stages = ", ".join(f"{s} {median(r.seconds(s) for r in rs):.2f}" for s in STAGES)
        print(f"  {name:15s} {median(r.wall_s for r in rs):6.2f} | {median(r.cpu_s for r in rs):6.2f} | "
              f"{max(r.peak_rss_mb for r in rs):6.0f} | {stages}   (wall: {', '.join(f'{r.wall_s:.2f}' for r in rs)})")
        print("    " + rs[-1].output.strip().splitlines()[0])
    print("\ngoals:")
    for name, limit in (("LUNG1-001", 8.0), ("1 mm 300-slice", 15.0)):
        wall = median(r.wall_s for r in runs[name])
        print(f"  segment {name}: {wall:.2f} s  {verdict(wall, limit)}")
    rss = max(r.peak_rss_mb for rs in runs.values() for r in rs)
    print(f"  peak RSS {rss:.0f} MB  {verdict(rss, 2560)}")


if __name__ == "__main__":
    main()
