"""Progressive opening: a case opens on a background thread and shows stage by stage.

Stages: CT (shown as soon as it is loaded) → lung region → manual contour → automatic tumour.  The
page polls :meth:`OpenJob.snapshot`; the thread never touches Streamlit.  Jobs are shared by source
(a second session opening the same file reuses the running or finished job) and bounded; a job nobody
watches any more stops at its next stage boundary, so leaving the page or opening another case
mid-way is safe and does not keep the two cores busy for nothing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from lungseg.errors import LungsegError
from lungseg.imaging.io import find_structure_set, load_rtstruct
from lungseg.lungs import isolate
from lungseg.pipeline import CaseResult, content_hash
from lungseg.tumour.lesions import lesion_table

from .. import cases
from .layers import ViewerCase

MAX_JOBS = 3


class Cancelled(Exception):
    pass


@dataclass
class Snapshot:
    case: ViewerCase | None  # None until the CT is loaded
    message: str
    fraction: float
    done: bool
    error: str | None
    timeline: dict[str, float]  # stage → seconds since the job started


@dataclass
class OpenJob:
    source: str  # a path, or "demo"
    predictor: object = None
    label: str = ""
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        from . import publish  # noqa: PLC0415 - avoids an import cycle

        self._lock = threading.Lock()
        self._status_lock = threading.RLock()
        self.folder = publish.folder_for("source:" + _source_id(self.source))
        self._watchers: set[str] = set()
        self._cancel = threading.Event()
        self._message, self._fraction = "Queued", 0.0
        self._vc: ViewerCase | None = None
        self._done = False
        self._error: str | None = None
        self._timeline: dict[str, float] = {}
        self.case: cases.Case | None = None  # the complete app case, when done
        self._thread = threading.Thread(target=self._run, name=f"open-{self.label}", daemon=True)

    # --- watching -------------------------------------------------------------------------------
    def start(self) -> "OpenJob":
        self._thread.start()
        return self

    def watch(self, who: str) -> None:
        with self._lock:
            self._watchers.add(who)

    def release(self, who: str) -> None:
        with self._lock:
            self._watchers.discard(who)
            if not self._watchers and not self._done:
                self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._vc, self._message, self._fraction, self._done, self._error, dict(self._timeline))

    # --- the thread -----------------------------------------------------------------------------
    def _progress(self, message: str, fraction: float) -> None:
        with self._lock:
            self._message, self._fraction = message, float(fraction)
        self.write_status()

    def _publish(self, stage: str, **changes) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        with self._lock:
            self._vc = changes.pop("vc") if "vc" in changes else _replace(self._vc, **changes)
            self._timeline[stage] = time.perf_counter() - self.started
        self.write_status()

    def write_status(self) -> None:
        """The browser's view of the job (``status.json`` in the case folder): what exists so far."""
        from . import publish  # noqa: PLC0415

        snap = self.snapshot()
        with self._status_lock:
            if snap.case is not None:
                status = publish.component_args(snap.case, snap.case.volume.shape[0] // 2, folder=self.folder)
            else:
                status = {"case": self.folder.token, "label": self.label}
            status["progress"] = {"text": snap.message, "fraction": snap.fraction, "done": snap.done}
            status["done"], status["error"] = snap.done, snap.error
            try:
                publish.write_status(self.folder, status)
            except OSError:
                pass

    def _run(self) -> None:
        try:
            self._open()
        except Cancelled:
            with self._lock:
                self._error, self._message = "cancelled", "Cancelled"
            _forget(self)
        except LungsegError as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad case must never take the app down
            self._fail(f"{self.label}: {type(exc).__name__}: {cases.one_line(exc)}")
        finally:
            with self._lock:
                self._done = True
            self.write_status()

    def _fail(self, message: str) -> None:
        with self._lock:
            self._error, self._message = message, "Could not open"
        _forget(self)

    def _open(self) -> None:
        t0 = time.perf_counter()
        from . import publish  # noqa: PLC0415 - avoids an import cycle

        if self.source == "demo":
            self._progress("Building the demo case", 0.02)
            loaded, truth = cases.demo_loaded()
            ct_hit, manual = True, {"phantom truth": truth}
        else:
            path = Path(self.source)
            if not path.exists():
                raise LungsegError(f"{path}: no such file or folder")
            loaded, ct_hit = cases.load_ct_cached(path, self._progress)
            manual = {}
        key = content_hash(loaded)
        vol = loaded.volume
        publish.alias(key, "source:" + _source_id(self.source))
        # the browser can start fetching at once; each slab on disk updates the status file
        publish.start_ct(self.folder, vol.array, vol.shape[0] // 2, on_slab=self.write_status)
        self._publish("ct", vc=ViewerCase(key=key, label=loaded.label, volume=vol,
                                          layers={"lung region": None, **({"automatic tumour": None} if self.predictor else {}),
                                                  "manual contour": None},
                                          notes=tuple(loaded.warnings)))
        version = cases.model_version(self.predictor)
        result = cases.load_result(key, version, loaded)
        res_hit = result is not None
        if result is None:
            self._progress("Isolating the lung region", 0.15)
            t = time.perf_counter()
            lungs = isolate(vol)
            result = CaseResult(lungs=lungs, seconds={"lungs": time.perf_counter() - t})
            if lungs.skipped:
                result.notes.append("Lung isolation skipped: " + "; ".join(f"{k} ({v})" for k, v in lungs.skipped.items()))
        self._publish("lung region", layers={**self._vc.layers, "lung region": result.lungs.lung_region})

        manual_name = next(iter(manual), None)
        if not manual:
            ss = find_structure_set(loaded)
            manual_name = cases.default_roi(ss.roi_names) if ss else None
            if ss is not None and manual_name:
                self._progress(f"Reading the manual contour {manual_name}", 0.3)
                try:
                    manual[manual_name] = load_rtstruct(ss.path, loaded, manual_name)
                except Exception as exc:  # noqa: BLE001 - a broken structure set must not stop the CT
                    result.notes.append(f"Manual contour {manual_name} could not be read ({cases.one_line(exc)}).")
                    manual_name = None
            else:
                manual_name = None
        layers = dict(self._vc.layers)
        if manual_name:
            layers["manual contour"] = manual[manual_name]
        else:
            layers.pop("manual contour", None)
        self._publish("manual contour", layers=layers, manual_name=manual_name)

        if not res_hit:
            if self.predictor is None:
                result.notes.append("No tumour model loaded: showing the lung region only.")
            else:
                self._progress("Segmenting the tumour", 0.45)
                t = time.perf_counter()
                try:
                    pred = self.predictor.predict(vol, result.lungs)
                    result.tumour, result.probability = pred.mask, pred.probability
                    result.lesions = lesion_table(pred.mask, vol, result.lungs.spine_x)
                    result.model_version = getattr(self.predictor, "version", None)
                except Exception as exc:  # noqa: BLE001 - a model failure leaves the lung region on screen
                    result.notes.append(f"Tumour model failed on this case ({cases.one_line(exc)}): showing the lung region only.")
                result.seconds["tumour"] = time.perf_counter() - t
            try:
                cases.save_result(key, version, result)
            except OSError:
                pass
        layers = dict(self._vc.layers)
        if result.tumour is not None:
            layers["automatic tumour"] = result.tumour
        else:
            layers.pop("automatic tumour", None)
        case = cases.Case(key, loaded.label, loaded, result, manual, manual_name, ct_hit and res_hit)
        case.seconds["open"] = time.perf_counter() - t0
        what, rows = case.lesions()
        self.case = case
        self._progress("Done", 1.0)
        self._publish("automatic tumour", layers=layers, lesions=rows, lesion_source=what,
                      notes=tuple(result.notes) + tuple(loaded.warnings))


def _replace(vc: ViewerCase, **changes) -> ViewerCase:
    from dataclasses import replace  # noqa: PLC0415

    return replace(vc, **changes)


# --- the registry of jobs (shared by sessions, bounded) ----------------------------------------
_JOBS: OrderedDict[tuple, OpenJob] = OrderedDict()
_JOBS_LOCK = threading.Lock()


def _source_id(source: str) -> str:
    if source == "demo":
        return "demo"
    p = Path(source)
    return cases.source_key(p) if p.exists() else str(p)


def _forget(job: OpenJob) -> None:
    with _JOBS_LOCK:
        for k, v in list(_JOBS.items()):
            if v is job:
                del _JOBS[k]


def open_job(source: str, predictor, who: str) -> OpenJob:
    """The job opening ``source`` (a path or "demo"): a running or finished one if there is one."""
    rkey = (_source_id(source), cases.model_version(predictor))
    with _JOBS_LOCK:
        job = _JOBS.get(rkey)
        if job is not None and not job.cancelled:
            _JOBS.move_to_end(rkey)
            job.watch(who)
            return job
        label = "the demo case" if source == "demo" else Path(source).name
        job = OpenJob(source, predictor, label)
        job.watch(who)
        _JOBS[rkey] = job
        while len(_JOBS) > MAX_JOBS:
            _JOBS.popitem(last=False)
    job.write_status()
    return job.start()
