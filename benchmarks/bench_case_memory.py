"""Memory of a server that opens many cases: ten different CTs opened in turn through the shared case LRU.

The app keeps opened cases in one :class:`lungseg.case.CaseMemory` per server process, bounded by
``LUNGSEG_CACHE_MB`` (default 4096).  This script opens ten distinct cases (the three LUNG1 zips, the
TotalSegmentator example, and variants of the LUNG1 CTs written as NIfTI: cropped, flipped, shifted in HU —
each a new content hash, so nothing is shared), with the shipped model, and prints the process RSS after
each case and the peak.  Goal: RSS stays under the budget + 1.5 GB.

    python benchmarks/bench_case_memory.py [--budget-mb 4096] [--cases 10]
"""

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, shared_data


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def variants(tmp: Path, data: Path, n: int) -> list[Path]:
    import SimpleITK as sitk

    from lungseg.imaging.io import load_ct

    out = [data / "LUNG1-001.zip", data / "LUNG1-002.zip", data / "LUNG1-003.zip",
           data / "totalsegmentator-example" / "example_ct.nii.gz"]
    recipes = [("crop", lambda a: a[10:-10]), ("flip-z", lambda a: a[::-1].copy()), ("plus1", lambda a: a + 1),
               ("crop-xy", lambda a: a[:, 16:-16, 16:-16]), ("minus1", lambda a: a - 1), ("crop-top", lambda a: a[:-20])]
    i = 0
    while len(out) < n:
        name = ["LUNG1-001", "LUNG1-002", "LUNG1-003"][i % 3]
        tag, fn = recipes[i % len(recipes)]
        ct = load_ct(data / f"{name}.zip")
        v = ct.volume
        arr = fn(v.array)
        img = sitk.GetImageFromArray(arr.astype(np.int16))
        img.SetSpacing(v.spacing)
        img.SetOrigin(v.origin)
        p = tmp / f"{name}-{tag}.nii.gz"
        sitk.WriteImage(img, str(p))
        out.append(p)
        i += 1
        del ct, arr, img
        gc.collect()
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-mb", type=float, default=4096)
    ap.add_argument("--cases", type=int, default=10)
    args = ap.parse_args()
    from lungseg.case import AutomaticSource, CaseMemory, CaseSource, ResultCache, default_predictor, open_case

    data = shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = variants(tmp, data, args.cases)
        gc.collect()
        memory = CaseMemory(args.budget_mb)
        cache = ResultCache(tmp / "results")
        predictor = default_predictor()
        base = rss_mb()
        print(f"budget {args.budget_mb:.0f} MB; RSS before opening {base:.0f} MB")
        worst = 0.0
        for p in paths:
            t = time.perf_counter()
            source = CaseSource(str(p), AutomaticSource("model"))
            case = open_case(source, predictor, cache=cache)
            memory.put(CaseMemory.key_of(source, predictor.version), case)
            del case
            gc.collect()
            now = rss_mb()
            worst = max(worst, now)
            print(f"{p.name:36s} {time.perf_counter() - t:6.1f} s  cases held {len(memory):2d} "
                  f"({memory.used_bytes() / 1024**2:6.0f} MB)  RSS {now:6.0f} MB")
        limit = args.budget_mb + 1536
        print(f"peak RSS {peak_rss_mb():.0f} MB (max after a case {worst:.0f} MB); limit budget + 1.5 GB = {limit:.0f} MB: "
              f"{'ok' if peak_rss_mb() <= limit else 'OVER'}")


if __name__ == "__main__":
    main()
