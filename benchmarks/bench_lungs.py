"""Time CT loading and lung isolation on LUNG1-001 and on a 512×512×300 volume.

Prints seconds (best of N runs) and peak memory.  Goals on 2 cores: ≤ 1.5 s isolation for
LUNG1-001, ≤ 3 s for 300 slices, peak memory ≤ 2 GB.
    python benchmarks/bench_lungs.py [--repeat 3]
"""

import argparse
import time

import numpy as np
from _common import peak_rss_mb, shared_data

from lungseg.imaging.io import load_ct
from lungseg.lungs import isolate
from lungseg.imaging.phantom import PhantomSpec, synthetic_chest_ct
from lungseg.imaging.volume import Volume


def best_of(n, fn):
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    case = shared_data() / "LUNG1-001.zip"
    load_ct(case)  # first call extracts the zip into the cache
    t_load, ct = best_of(args.repeat, lambda: load_ct(case))
    t_iso, res = best_of(args.repeat, lambda: isolate(ct.volume))
    print(f"LUNG1-001 {ct.volume.shape}: load {t_load:.2f} s (zip cached), lung isolation {t_iso:.2f} s; {res.summary()}")
    print("  steps: " + ", ".join(f"{k} {v:.2f}" for k, v in res.seconds.items()))
    print(f"  peak RSS so far {peak_rss_mb():.0f} MB")

    # 300 slices of 512×512: LUNG1-001 stacked with its mirror image in z (realistic anatomy)
    arr = ct.volume.array
    big = np.concatenate([arr, arr[::-1], arr[:32]], axis=0)[:300]
    vol = Volume(np.ascontiguousarray(big), (ct.volume.spacing[0], ct.volume.spacing[1], 1.5), ct.volume.origin)
    t_big, res_big = best_of(max(1, args.repeat - 1), lambda: isolate(vol))
    print(f"512x512x300 volume: lung isolation {t_big:.2f} s; {res_big.summary()}")
    ph = synthetic_chest_ct(PhantomSpec())
    t_ph, _ = best_of(args.repeat, lambda: isolate(ph.ct))
    print(f"demo phantom {ph.ct.shape}: lung isolation {t_ph:.2f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
