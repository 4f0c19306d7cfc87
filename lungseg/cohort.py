"""Cohorts: every case of a list of sources through the same pipeline, one Dask task per case.

The same code runs on a laptop and on a cluster: :func:`run_cohort` starts a Dask ``LocalCluster`` (one
single-threaded worker process per core asked for) or connects to an existing scheduler's address.  The
tumour model is loaded once per worker (:class:`ModelPlugin`), never once per case.  Each case writes its
masks and a ``result.json`` into ``OUT/CASE/`` atomically (a temporary folder renamed into place), so a
killed worker or client loses only the case it was working on.  A case already done with the same CT
content hash, model version and settings is skipped: first cheaply, by the source file's identity (path,
size, modification time), then, if the file changed on disk, by its content hash.  A case that fails is
recorded with its one-line reason and the others go on.  ``OUT/summary.csv`` has one row per case.

Sources are files (zip, NIfTI, NRRD, MHA), DICOM folders, folders of those, DICOMweb series URLs, or the
series a PACS search finds (:class:`~lungseg.dicomweb.SearchQuery`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lungseg.errors import InputError, LungsegError

RESULT = "result.json"
SUMMARY = "summary.csv"
RUNNING = ".running"
CASE_SUFFIXES = (".zip", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SUMMARY_FIELDS = ("case", "status", "reason", "lung_left_ml", "lung_right_ml", "lung_region_ml", "lesion_count",
                  "lesion_total_ml", "lesion_volumes_ml", "seconds", "resumed", "model_version", "content_hash",
                  "source")


@dataclass(frozen=True)
class CohortCase:
    """One case of a cohort: its name (its folder under OUT) and its CT (a path or a DICOMweb series URL)."""

    name: str
    ct: str


@dataclass(frozen=True)
class BatchConfig:
    """``workers`` local worker processes (0: a plain loop in this process, no Dask), or the Dask scheduler
    at ``scheduler``; ``model``: tumour model weights (the shipped model when None)."""

    out: Path
    model: str | None = None
    workers: int = 2
    scheduler: str | None = None
    threads_per_worker: int = 1
    progress: bool = True

    def __post_init__(self):
        if self.workers < 0:
            raise InputError("--workers must be 0 (no Dask) or more")
        if self.threads_per_worker < 1:
            raise InputError("threads per worker must be at least 1")


# --------------------------------------------------------------------------------------------
# sources → cases


def _is_dicom_file(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:] == b"DICM"
    except OSError:
        return False


def _holds_dicom(folder: Path, recursive: bool, limit: int = 400) -> bool:
    files = folder.rglob("*") if recursive else folder.iterdir()
    for n, f in enumerate(files):
        if n >= limit:
            break
        if f.is_file() and (f.suffix.lower() == ".dcm" or _is_dicom_file(f)):
            return True
    return False


def _case_name(text: str) -> str:
    name = Path(text.rstrip("/")).name
    for s in (".nii.gz",) + CASE_SUFFIXES:
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def cases_from_sources(sources: Sequence[str], pacs_query=None, pacs_url: str | None = None) -> list[CohortCase]:
    """The cases of ``sources`` (and of a PACS search), with unique folder names.

    A file is one case; a folder holding DICOM files is one case; any other folder contributes each case
    file and each DICOM sub-folder inside it.  A path that does not exist is kept as a case, so that it is
    reported as failed with its reason rather than stopping the whole run.
    """
    from lungseg.dicomweb import is_dicomweb_url, parse_series_url, series_label

    found: list[tuple[str, str]] = []
    for text in sources:
        if is_dicomweb_url(text):
            found.append((series_label(parse_series_url(text)), text.strip()))
            continue
        p = Path(text).expanduser()
        if p.is_dir() and not _holds_dicom(p, recursive=False):
            children = []
            for c in sorted(p.iterdir(), key=lambda c: c.name.lower()):
                if c.name.startswith("."):
                    continue
                if (c.is_file() and c.name.lower().endswith(CASE_SUFFIXES)) or \
                        (c.is_dir() and _holds_dicom(c, recursive=True)):
                    children.append((_case_name(c.name), str(c.resolve())))
            if not children:
                raise InputError(f"{p}: no cases in this folder (zips, DICOM folders, NIfTI, NRRD, MHA)")
            found += children
        else:
            found.append((_case_name(str(p)), str(p.resolve()) if p.exists() else str(p)))
    if pacs_query is not None:
        from lungseg.dicomweb import Pacs

        series = Pacs.from_env(pacs_url).search(pacs_query)
        if not series:
            raise InputError("the PACS search found no series")
        found += [(series_label(parse_series_url(s.url)), s.url) for s in series]
    if not found:
        raise InputError("no cases: give files, folders or series URLs, or a PACS search")
    cases, seen, names = [], set(), {}
    for name, ct in found:
        if ct in seen:
            continue
        seen.add(ct)
        n = names.get(name, 0) + 1
        names[name] = n
        cases.append(CohortCase(name if n == 1 else f"{name}-{n}", ct))
    return cases


# --------------------------------------------------------------------------------------------
# one case (runs on a worker)

_worker_predictors: dict = {}
_worker_lock = threading.Lock()


def worker_predictor(model: str | None):
    """The tumour model of this process, loaded on first use (once per worker)."""
    from lungseg.case import default_predictor

    key = str(Path(model).resolve()) if model else None
    with _worker_lock:
        if key not in _worker_predictors:
            _worker_predictors[key] = default_predictor(model)
        return _worker_predictors[key]


def worker_model_loads() -> int:
    return len(_worker_predictors)


def settings_digest() -> str:
    """What besides the CT and the model decides a result: the lung and post-processing parameters."""
    from lungseg.case.cache import CACHE_FORMAT, digest, params_dict
    from lungseg.lungs import LungParams
    from lungseg.tumour.segment import PostProcess

    return digest([params_dict(LungParams()), params_dict(PostProcess()), CACHE_FORMAT])


def source_key(ct: str) -> str | None:
    """A cheap identity of a local source (path, size, modification time); None for a URL or a missing path."""
    from lungseg.case.cache import source_identity
    from lungseg.dicomweb import is_dicomweb_url

    if is_dicomweb_url(ct) or not Path(ct).exists():
        return None
    return source_identity(ct)


def read_result(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") == "ok" else None


def is_done(previous: dict | None, model_version: str, settings: str, content_hash: str | None = None,
            source: str | None = None) -> bool:
    """Whether ``previous`` (a result.json) is this case's result for the same model and settings, judged by
    its content hash when given, else by the source's identity."""
    if not previous or previous.get("model_version") != model_version or previous.get("settings") != settings:
        return False
    if content_hash is not None:
        return previous.get("content_hash") == content_hash
    return source is not None and previous.get("source_identity") == source


def one_line(exc: BaseException) -> str:
    if isinstance(exc, LungsegError):
        return str(exc)
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _write_atomically(out: Path, name: str, write: Callable[[Path], None]) -> Path:
    """``write`` into a temporary folder, then rename it to ``out/name`` (replacing an older one)."""
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp, old, final = out / f".{name}.{tag}.tmp", out / f".{name}.{tag}.old", out / name
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def process_case(case: CohortCase, out: str, model: str | None = None) -> dict:
    """Open one case (CT, lungs, tumour), write its masks and result into ``out/CASE/``; the summary row.

    Never raises for a bad case: a failure is a row with status ``failed`` and its one-line reason.
    """
    from lungseg.case import AutomaticSource, CaseSource, ResultCache, model_version, open_case_progressively
    from lungseg.imaging.io import write_mask

    t0 = time.perf_counter()
    out_dir = Path(out)
    marker = out_dir / RUNNING / f"{case.name}.json"
    row = {"case": case.name, "source": case.ct}
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
        predictor = worker_predictor(model)
        version, settings = model_version(predictor), settings_digest()
        src_key = source_key(case.ct)
        source = CaseSource(case.ct, AutomaticSource("model", model=model), None, label=case.name)
        stages = open_case_progressively(source, predictor, cache=ResultCache())
        opened = next(stages)
        previous = read_result(out_dir / case.name)
        if is_done(previous, version, settings, content_hash=opened.key):
            stages.close()
            if src_key is not None and previous.get("source_identity") != src_key:
                _write_atomically(out_dir, case.name, lambda tmp: _copy_with(out_dir / case.name, tmp,
                                                                             source_identity=src_key))
            return dict(summary_row(previous), resumed="yes")
        for opened in stages:
            pass
        result = case_result(case, opened, version, settings, src_key, time.perf_counter() - t0)

        def write(tmp: Path) -> None:
            write_mask(opened.ct, opened.lungs.lungs, tmp / "lungs.nii.gz")
            write_mask(opened.ct, opened.automatic.mask, tmp / "tumour.nii.gz")
            with open(tmp / "lesions.csv", "w", newline="") as f:
                rows = [{k: v for k, v in r.items() if k != "seed_voxel"} for r in opened.automatic.lesions]
                if rows:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
            (tmp / RESULT).write_text(json.dumps(result, indent=1, default=float))

        _write_atomically(out_dir, case.name, write)
        return dict(summary_row(result), resumed="no")
    except Exception as exc:  # noqa: BLE001 - a failed case is a row, and the run goes on
        return dict(row, status="failed", reason=one_line(exc), seconds=round(time.perf_counter() - t0, 2),
                    resumed="no")
    finally:
        marker.unlink(missing_ok=True)


def _copy_with(src: Path, dst: Path, **changes) -> None:
    for f in src.iterdir():
        if f.is_file() and f.name != RESULT:
            shutil.copy2(f, dst / f.name)
    data = json.loads((src / RESULT).read_text())
    data.update(changes)
    (dst / RESULT).write_text(json.dumps(data, indent=1))


def case_result(case: CohortCase, opened, version: str, settings: str, src_key: str | None, seconds: float) -> dict:
    left, right = opened.lungs.lung_volume_ml
    lesions = opened.automatic.lesions
    return {
        "case": case.name, "status": "ok", "reason": "", "source": case.ct, "source_identity": src_key,
        "content_hash": opened.key, "model_version": version, "settings": settings,
        "lung_left_ml": round(left, 1), "lung_right_ml": round(right, 1),
        "lung_region_ml": round(opened.lungs.region_volume_ml, 1),
        "lesion_count": len(lesions), "lesion_total_ml": round(sum(r["volume_ml"] for r in lesions), 2),
        "lesion_volumes_ml": [r["volume_ml"] for r in lesions], "seconds": round(seconds, 2),
        "skipped_steps": dict(opened.lungs.skipped), "worker_pid": os.getpid(),
        "model_loads_in_worker": worker_model_loads(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": ["lungs.nii.gz", "tumour.nii.gz", "lesions.csv"],
    }


def summary_row(result: dict) -> dict:
    row = {k: result.get(k, "") for k in SUMMARY_FIELDS}
    vols = result.get("lesion_volumes_ml")
    if isinstance(vols, list):
        row["lesion_volumes_ml"] = ";".join(f"{v:g}" for v in vols)
    return row


# --------------------------------------------------------------------------------------------
# the run


try:
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # Dask is only needed when a cohort runs on it
    _WorkerPlugin = object


class ModelPlugin(_WorkerPlugin):
    """A Dask worker plugin: every worker (also one restarted after a crash) loads the model once at start,
    with ``threads`` torch threads, before it takes its first case."""

    name = "lungseg-model"

    def __init__(self, model: str | None, threads: int = 1):
        self.model, self.threads = model, threads

    def setup(self, worker=None):
        import torch

        torch.set_num_threads(self.threads)
        worker_predictor(self.model)

    def teardown(self, worker=None):
        pass


@dataclass
class CohortRun:
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def resumed(self) -> int:
        return sum(1 for r in self.rows if r.get("resumed") == "yes")


def write_summary(out: Path, rows: Iterable[dict]) -> Path:
    path = out / SUMMARY
    tmp = out / f".{SUMMARY}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SUMMARY_FIELDS), extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["case"]):
            w.writerow(r)
    tmp.replace(path)
    return path


def _precheck(cases: Sequence[CohortCase], out: Path, model: str | None) -> tuple[dict[str, dict], list[CohortCase]]:
    """Cases whose result is already there for the same source file, model and settings (no task needed),
    and the others."""
    from lungseg.case import model_version

    previous_results = {c.name: read_result(out / c.name) for c in cases}
    if not any(previous_results.values()):
        return {}, list(cases)  # a fresh run: no need to load the model here only to learn its version
    version, settings = model_version(worker_predictor(model)), settings_digest()
    done, todo = {}, []
    for c in cases:
        previous = previous_results[c.name]
        key = source_key(c.ct) if previous else None
        if is_done(previous, version, settings, source=key):
            done[c.name] = dict(summary_row(previous), resumed="yes")
        else:
            todo.append(c)
    return done, todo


def run_cohort(cases: Sequence[CohortCase], config: BatchConfig, on_row: Callable[[dict], None] | None = None) -> CohortRun:
    """Run every case (skipping those already done) and write ``OUT/summary.csv``; returns the rows."""
    t0 = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_by_case, todo = _precheck(cases, out, config.model)
    bar = _progress_bar(len(cases), config.progress)
    for row in rows_by_case.values():
        _note(bar, row, on_row)

    def finished(row: dict) -> None:
        rows_by_case[row["case"]] = row
        _note(bar, row, on_row)
        write_summary(out, rows_by_case.values())  # a killed run still leaves the rows it has

    if todo:
        if config.workers == 0 and not config.scheduler:
            for c in todo:
                finished(process_case(c, str(out), config.model))
        else:
            _run_on_dask(todo, config, out, finished)
    if bar is not None:
        bar.close()
    write_summary(out, rows_by_case.values())
    shutil.rmtree(out / RUNNING, ignore_errors=True)
    return CohortRun([rows_by_case[c.name] for c in cases if c.name in rows_by_case], time.perf_counter() - t0)


def _run_on_dask(todo: Sequence[CohortCase], config: BatchConfig, out: Path, finished: Callable[[dict], None]) -> None:
    import logging

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if config.scheduler:
            client = Client(config.scheduler, timeout="30s")
        else:
            cluster = LocalCluster(n_workers=min(config.workers, len(todo)), threads_per_worker=config.threads_per_worker,
                                   processes=True, host="127.0.0.1", dashboard_address=":0",
                                   silence_logs=logging.CRITICAL)  # a failed case is reported as its row
            client = Client(cluster)
    except (OSError, TimeoutError) as exc:
        raise LungsegError(f"cannot start or reach the Dask scheduler ({one_line(exc)})") from None
    try:
        try:
            client.register_plugin(ModelPlugin(config.model, config.threads_per_worker), name=ModelPlugin.name)
        except Exception as exc:  # noqa: BLE001 - the model cannot load on the workers: nothing can run
            raise LungsegError(f"the workers cannot load the model: {one_line(exc)}") from None
        futures = {client.submit(process_case, c, str(out), config.model, key=f"lungseg-case-{c.name}-"
                                 f"{uuid.uuid4().hex[:8]}", pure=False): c for c in todo}
        for future in as_completed(futures):
            c = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the case failed, the run goes on
                reason = one_line(exc)
                if type(exc).__name__ == "KilledWorker":
                    reason = "the workers running this case died repeatedly (out of memory?)"
                row = {"case": c.name, "source": c.ct, "status": "failed", "reason": reason, "resumed": "no"}
            finished(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="case", desc="cases", file=sys.stderr, dynamic_ncols=True)


def _note(bar, row: dict, on_row) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix_str(f"{row['case']}: {'skipped' if row.get('resumed') == 'yes' else row['status']}")
    if on_row is not None:
        on_row(row)


