"""Cohort throughput: ``batch`` on a 2-worker local Dask cluster against a plain sequential loop, on 2 cores.

Each measurement is the whole command from the shell (``python -m lungseg batch CASES --out DIR``, with
``--workers 2`` for Dask and ``--workers 0`` for the plain loop in one process), pinned to two CPUs, with a
fresh result cache and output folder, so nothing is reused between runs.  Runs alternate between the two
modes; the script prints cases per minute for each run and the median of ``--repeats`` runs (>= 3).

    python benchmarks/bench_batch.py [--repeats 3] [--model PATH] [CASE ...]

The default cohort is five small real CTs: the TotalSegmentator example
(full and its first 30 slices, and its DICOM series) and the IBSI phantom (NIfTI and DICOM), all with the
shipped U-Net.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, shared_data


def default_cases(data: Path) -> list[Path]:
    ts, ibsi = data / "totalsegmentator-example", data / "ibsi-ct-phantom"
    return [ts / "example_ct.nii.gz", ts / "example_ct_sm.nii.gz", ts / "example_ct_dicom",
            ibsi / "nifti" / "image" / "phantom.nii.gz", ibsi / "dicom" / "image"]


def pin_two_cpus() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)


def run_once(cases: list[Path], workers: int, model: str | None, tmp: Path) -> tuple[float, str]:
    out = tmp / f"out-{workers}-{time.monotonic_ns()}"
    env = dict(os.environ, LUNGSEG_CACHE=str(tmp / f"cache-{time.monotonic_ns()}"), PYTHONPATH=str(REPO))
    env.pop("LUNGSEG_RESULT_CACHE", None)
    argv = [sys.executable, "-m", "lungseg", "batch", *map(str, cases), "--out", str(out), "--workers", str(workers),
            "--quiet"] + (["--model", model] if model else [])
    t0 = time.perf_counter()
    run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=pin_two_cpus)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"batch failed ({run.returncode}): {run.stderr.strip().splitlines()[-1:]}")
    return seconds, run.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", help="CT files or folders (default: five small real CTs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", help="tumour model (default: the shipped one)")
    args = ap.parse_args()
    cases = [Path(c) for c in args.cases] or default_cases(shared_data())
    missing = [str(c) for c in cases if not c.exists()]
    if missing:
        raise SystemExit(f"missing cases: {', '.join(missing)} (set LUNGSEG_DATA)")
    print(f"{len(cases)} cases, 2 CPUs ({os.cpu_count()} on this machine), {args.repeats} runs per mode; "
          f"load average {os.getloadavg()[0]:.1f}")
    modes = {"dask (2 workers)": 2, "sequential loop": 0}
    per_minute: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        for r in range(args.repeats):
            for mode, workers in modes.items():
                seconds, said = run_once(cases, workers, args.model, Path(tmp))
                per_minute[mode].append(len(cases) / seconds * 60)
                print(f"  run {r + 1} {mode:17s}: {seconds:6.1f} s, {per_minute[mode][-1]:5.2f} cases/min ({said})",
                      flush=True)
    medians = {m: statistics.median(v) for m, v in per_minute.items()}
    for m, v in medians.items():
        print(f"median {m:17s}: {v:5.2f} cases/min")
    print(f"dask / sequential: {medians['dask (2 workers)'] / medians['sequential loop']:.2f}x "
          f"(load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
