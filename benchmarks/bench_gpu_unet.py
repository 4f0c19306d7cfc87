"""The automatic model's U-Net on one scan's prepared slices, on the GPU (where SimpleITK, and so DICOM
reading and lung isolation, may be missing): model time and the whole process.

    python benchmarks/bench_gpu_unet.py --prepare STACK.npz [--case LUNG1-001]    # here: the slices segment feeds the U-Net
    python benchmarks/bench_gpu_unet.py STACK.npz [--repeat 3] [--device cuda]   # there: median of 3 whole processes

The slices are exactly :func:`lungseg.tumour.segment.prepare_slices`'s; the batching is
:class:`~lungseg.tumour.segment.TumourPredictor`'s on a GPU (16 slices, bf16 autocast, channels-last,
the slice and its neighbours as channels).  Loading the CT and isolating the lungs are not in these
figures (CPU: ``bench_segment.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(out: Path, case: str) -> None:
    import numpy as np

    from lungseg.imaging.io import load_ct
    from lungseg.lungs import isolate
    from lungseg.tumour.segment import load_default_predictor, prepare_slices

    data = Path(__import__("os").environ.get("LUNGSEG_DATA", REPO.parent / "shared" / "data"))
    ct = load_ct(data / f"{case}.zip").volume
    predictor = load_default_predictor("cpu")
    stack = prepare_slices(ct, isolate(ct), in_plane_mm=predictor.in_plane_mm)
    np.savez_compressed(out, images=stack.images.astype(np.float16), case=case)
    print(f"{case}: {stack.images.shape} slices on the model grid -> {out}")


def load_net(model: Path, device: str):
    import torch

    from lungseg.tumour.unet import model_from_payload

    dev = torch.device(device)
    net, meta = model_from_payload(torch.load(model, map_location="cpu", weights_only=True), dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    return net, meta, dev


def probability(net, meta, dev, images):
    """TumourPredictor's batching: 16 slices, the slice and its neighbours as channels, bf16 on a GPU."""
    import numpy as np
    import torch

    from lungseg.tumour.unet import crop_to_size, pad_to_multiple

    cuda = dev.type == "cuda"
    context, multiple = int(meta.get("context_slices", 0)), 2 ** int(meta["architecture"].get("depth", 4))
    out = np.zeros(images.shape, np.float32)
    n = len(images)
    with torch.inference_mode():
        for start in range(0, n, 16):
            rows = np.arange(start, min(start + 16, n))[:, None] + np.arange(-context, context + 1)
            batch = torch.from_numpy(images[np.clip(rows, 0, n - 1)]).to(dev)
            batch, size = pad_to_multiple(batch, multiple, 0.0)
            if cuda:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                logits = net(batch)
            out[start:start + len(batch)] = torch.sigmoid(crop_to_size(logits.float(), size))[:, 0].cpu().numpy()
    return out


def pack_dice(pack: Path, run: Path, device: str) -> None:
    """Each fold model (RUN/loo-P/model.pt) on its held-out patient's slices in the pack: Dice of the
    thresholded probability against the tumour on the model grid (no post-processing, no filter)."""
    import numpy as np

    from lungseg.training.pack import load

    hosts, _, _ = load(pack)
    for name, host in hosts.items():
        model = run / f"loo-{name}" / "model.pt"
        if not model.exists():
            continue
        net, meta, dev = load_net(model, device)
        mask = probability(net, meta, dev, host.image.astype(np.float32) / 255.0) >= 0.5
        inter = (mask & host.gtv).sum()
        print(f"fold model without {name}, on {name}'s slices (model grid, no post-processing): "
              f"Dice {2 * inter / max(mask.sum() + host.gtv.sum(), 1):.3f}", flush=True)


def run_once(stack: Path, model: Path, device: str) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import torch

    images = np.load(stack)["images"].astype(np.float32)
    net, meta, dev = load_net(model, device)
    cuda = dev.type == "cuda"
    t1 = time.perf_counter()
    times = []
    for _ in range(3):  # the first pass pays CUDA's and cuDNN's first-call costs, as segment's single pass does
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = probability(net, meta, dev, images)
        times.append(time.perf_counter() - t)
    return {"slices": len(images), "load_s": t1 - t0, "unet_first_s": times[0], "unet_warm_s": statistics.median(times[1:]),
            "in_process_s": time.perf_counter() - t0, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "positive_pixels": int((out >= 0.5).sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stack", nargs="?")
    ap.add_argument("--prepare", help="write the prepared slices of --case here (needs the shared data)")
    ap.add_argument("--case", default="LUNG1-001")
    ap.add_argument("--model", default=str(REPO / "models" / "lungseg_unet.pt"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--once", action="store_true", help="one run in this process, as JSON")
    ap.add_argument("--pack-dice", nargs=2, metavar=("PACK", "RUN"), help="Dice of a train run's fold models on the pack")
    args = ap.parse_args()
    if args.pack_dice:
        pack_dice(Path(args.pack_dice[0]), Path(args.pack_dice[1]), args.device)
        return
    if args.prepare:
        prepare(Path(args.prepare), args.case)
        return
    if args.once:
        print(json.dumps(run_once(Path(args.stack), Path(args.model), args.device)))
        return
    runs = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, args.stack, "--once", "--model", args.model, "--device", args.device],
                             capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]) | {"whole_process_s": time.perf_counter() - t})
    for r in runs:
        print(json.dumps(r))
    print(f"median of {len(runs)}: whole process {statistics.median(r['whole_process_s'] for r in runs):.2f} s, "
          f"U-Net first pass {statistics.median(r['unet_first_s'] for r in runs):.3f} s, warm "
          f"{statistics.median(r['unet_warm_s'] for r in runs):.3f} s ({runs[0]['slices']} slices, {runs[0]['device']})")


if __name__ == "__main__":
    main()
