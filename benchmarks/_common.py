"""Shared helpers for benchmark scripts: data location, peak memory, whole-process timing and the
1 mm test scan."""

import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_data() -> Path:
    return Path(os.environ.get("LUNGSEG_DATA", REPO.parent / "shared" / "data"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------
# whole processes, as a user runs them


@dataclass
class ProcessRun:
    wall_s: float  # from fork to exit, start-up and imports included
    cpu_s: float  # user + system CPU of the process (less sensitive to other load than wall time)
    peak_rss_mb: float
    output: str

    def seconds(self, name: str) -> float | None:
        """A figure the command printed itself, e.g. ``isolation 0.91 s`` → 0.91."""
        m = re.search(rf"{re.escape(name)} ([0-9.]+) s", self.output)
        return float(m.group(1)) if m else None


def run_process(args: list[str], env: dict | None = None) -> ProcessRun:
    """Run ``args`` to completion; its wall time, CPU time and peak RSS (from wait4's rusage)."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, **(env or {})})
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{out[-2000:]}")
    return ProcessRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, out)


def lungseg_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "lungseg", *map(str, args)]


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def load_note() -> str:
    """The machine's load beside the figures: timings on a shared machine depend on it."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def verdict(value: float, limit: float) -> str:
    return f"{'PASS' if value <= limit else 'FAIL'} (≤ {limit:g})"


# --------------------------------------------------------------------------------------------
# test data


def extracted_case(name: str = "LUNG1-001") -> Path:
    """The DICOM folder of a shared LUNG1 zip, extracted once into lungseg's cache."""
    from lungseg.imaging.io import extract_zip

    root = extract_zip(shared_data() / f"{name}.zip")
    return next(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def one_mm_scan(out_dir: Path = Path("/tmp/lungseg-bench/LUNG1-001-1mm"), slices: int = 300) -> Path:
    """LUNG1-001 resampled to 1 mm slices (linear in z), 512×512×``slices`` centred on the lungs,
    written as a DICOM series (the CT slices only) under /tmp; reused when already there."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    done = out_dir / ".complete"
    if done.exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = []
    for p in sorted(extracted_case("LUNG1-001").rglob("*")):
        if p.is_file():
            ds = pydicom.dcmread(p)
            if ds.get("Modality") == "CT":
                headers.append(ds)
    headers.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in headers])
    raw = np.stack([ds.pixel_array.astype(np.float32) for ds in headers])
    centre = (z[0] + z[-1]) / 2 + 30.0  # the lungs sit in the upper part of this scan
    new_z = centre - slices / 2 + np.arange(slices, dtype=float)
    new_z = new_z[(new_z >= z[0]) & (new_z <= z[-1])]
    series_uid = generate_uid(entropy_srcs=["lungseg-bench-1mm", str(slices)])
    for k, zk in enumerate(new_z):
        j = int(np.clip(np.searchsorted(z, zk) - 1, 0, len(z) - 2))
        w = (zk - z[j]) / (z[j + 1] - z[j])
        pixels = np.rint((1 - w) * raw[j] + w * raw[j + 1]).astype(headers[0].pixel_array.dtype)
        ds = headers[j].copy()
        ds.PixelData = pixels.tobytes()
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], f"{zk:.2f}"]
        ds.SliceLocation = f"{zk:.2f}"
        ds.SliceThickness = "1"
        ds.InstanceNumber = k + 1
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["lungseg-bench-1mm", str(slices), str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out_dir / f"slice{k:04d}.dcm", enforce_file_format=True)
    done.touch()
    return out_dir


def lung1_gtv1_centre(data: Path) -> tuple[int, int, int] | None:
    """(slice, row, column) of the centre of LUNG1-001's GTV-1 on the slice where it is largest (from the
    reference mask; None, said in a line, when the data folder lacks LUNG1-001)."""
    if not (data / "LUNG1-001.zip").exists():
        print(f"LUNG1-001.zip not found in {data}")
        return None
    import numpy as np
    import SimpleITK as sitk

    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
    k = int(np.argmax(gtv.sum(axis=(1, 2))))
    jj, ii = (int(v) for v in np.argwhere(gtv[k]).mean(axis=0).round())
    return k, jj, ii
