"""Click-to-segment speed: `segment-lesion` as a whole process, and warm clicks with the model loaded.

    python benchmarks/bench_lesion.py [--repeat 3] [--threads 2] [--clicks 20]

1. whole process: ``python -m lungseg segment-lesion`` from the shell on one validation LIDC crop and on
   LUNG1-001 (click at GTV-1's centre of mass), median of ``--repeat`` runs (goal ≤ 5 s);
2. warm: one predictor, ``--clicks`` validation crops (the evaluation click) and the GTV-1 click on the
   loaded LUNG1-001, median seconds per click (goal ≤ 0.3 s on 2 cores).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from _common import REPO, peak_rss_mb, shared_data

from lungseg.imaging.io import load_ct
from lungseg.lesion.lidc import load_crop, nodules_in, read_nodules
from lungseg.lesion.segment import LesionPredictor, click_inside
from lungseg.metrics import dice


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def whole_process(args: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + system: what an idle machine's wall time would be, single-threaded)."""
    times, cpu = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            c = child_cpu_seconds()
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "lungseg", "segment-lesion", *args, "--out", str(Path(d) / "m.nii.gz"),
                                "--threads", str(torch.get_num_threads())],
                               cwd=REPO, capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            cpu.append(child_cpu_seconds() - c)
            if r.returncode:
                raise SystemExit(r.stderr)
    print(f"    {r.stdout.strip()}")
    return times, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, here and in the CLI runs")
    ap.add_argument("--clicks", type=int, default=20)
    args = ap.parse_args()
    data = shared_data()
    torch.set_num_threads(args.threads)

    nodules = nodules_in(read_nodules(data / "lidc-nodules"), "validation")
    crop = nodules[4]
    volume, reference = load_crop(crop)
    crop_point = volume.index_to_physical(np.asarray(click_inside(reference, volume.spacing_zyx), float))[0]
    gtv = sitk.ReadImage(str(data / "reference" / "LUNG1-001_GTV-1.nii.gz"))
    gtv_point = gtv.TransformContinuousIndexToPhysicalPoint((np.argwhere(sitk.GetArrayFromImage(gtv) > 0).mean(axis=0)[::-1]).tolist())
    load_ct(data / "LUNG1-001.zip")  # unzip once into the cache, as any second use would find it

    print(f"whole process `segment-lesion` (median of {args.repeat}, torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
    for name, cli_args in ((f"crop {crop.crop}", [str(crop.image_path), "--at=" + ",".join(f"{v:.2f}" for v in crop_point)]),
                           ("LUNG1-001 GTV-1", [str(data / "LUNG1-001.zip"), "--at=" + ",".join(f"{v:.2f}" for v in gtv_point)])):
        times, cpu = whole_process(cli_args, args.repeat)
        print(f"  {name}: median {statistics.median(times):.2f} s wall (runs {', '.join(f'{t:.2f}' for t in times)}), "
              f"median {statistics.median(cpu):.2f} s CPU")

    t = time.perf_counter()
    predictor = LesionPredictor()
    print(f"model load {time.perf_counter() - t:.2f} s")
    per_click = []
    for n in nodules[: args.clicks]:
        v, m = load_crop(n)
        p = v.index_to_physical(np.asarray(click_inside(m, v.spacing_zyx), float))[0]
        predictor.segment(v, p)  # first click on this volume warms the caches
        r = predictor.segment(v, p)
        per_click.append(r.seconds)
    print(f"warm click on {len(per_click)} validation crops: median {statistics.median(per_click):.3f} s, max {max(per_click):.3f} s")
    ct = load_ct(data / "LUNG1-001.zip")
    predictor.segment(ct.volume, gtv_point)
    gtv_times = []
    for _ in range(args.repeat):
        r = predictor.segment(ct.volume, gtv_point)
        gtv_times.append(r.seconds)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
    written = sitk.GetArrayFromImage(ct.mask_to_source(r.mask)) > 0
    print(f"warm click on LUNG1-001 GTV-1: median {statistics.median(gtv_times):.3f} s; {r.summary()}; "
          f"Dice vs GTV-1 {dice(written, ref):.3f}")
    print(f"peak memory {peak_rss_mb():.0f} MB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
