"""Progressive opening: a case opens on a background thread and shows stage by stage.

Stages are those of :func:`lungseg.case.open_case_progressively`: CT (shown as soon as it is loaded)
→ lung region and manual contour → automatic contour.  After each stage, and after each CT slab the
browser can fetch, the job writes ``status.json`` in the case's folder; the browser polls that small
file, so Python does not rerun while a case opens.  The thread never touches Streamlit.  Jobs are
shared by source (a second session opening the same case reuses the running or finished job) and
bounded; a job nobody watches any more stops at its next stage, so leaving the page or opening
another case mid-way is safe and does not keep the two cores busy for nothing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import lungseg.imaging.io  # noqa: F401 - DICOM reading (pydicom: ~0.25 s) loads with the page, not in the first open
import lungseg.lungs  # noqa: F401 - as does lung isolation (OpenCV, SimpleITK)
from lungseg.case import CaseMemory, CaseSource, ResultCache, open_case_progressively
from lungseg.errors import LungsegError

from .. import cases
from . import publish
from .layers import ViewerCase, viewer_layers

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
    source: CaseSource
    predictor: object = None
    label: str = ""
    cache: ResultCache | None = None
    folder_id: str = ""
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._status_lock = threading.RLock()
        self.folder = publish.folder_for(self.folder_id)
        self._watchers: set[str] = set()
        self._cancel = threading.Event()
        self._message, self._fraction = "Queued", 0.0
        self._vc: ViewerCase | None = None
        self._done = False
        self._error: str | None = None
        self._timeline: dict[str, float] = {}
        self.case = None  # the complete lungseg.case.Case, when done
        self._thread = threading.Thread(target=self._run, name=f"open-{self.label}", daemon=True)

    # --- watching -------------------------------------------------------------------------------
    def start(self) -> "OpenJob":
        self.write_status()
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

    def write_status(self) -> None:
        """The browser's view of the job (``status.json`` in the case folder): what exists so far."""
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
        for case in open_case_progressively(self.source, self.predictor, self._progress, cache=self.cache):
            if self._cancel.is_set():
                raise Cancelled()
            if case.stage == "ct":
                publish.alias(case.key, self.folder_id)
                # the browser can start fetching at once; each slab on disk updates the status file
                publish.start_ct(self.folder, case.volume.array, case.volume.shape[0] // 2, on_slab=self.write_status)
            vc = viewer_layers(case)
            with self._lock:
                self._vc = vc
                self._timeline[case.stage] = time.perf_counter() - self.started
                if case.stage == "done":
                    self.case = case
                    self._message, self._fraction = "Done", 1.0
            self.write_status()


# --- the registry of jobs (shared by sessions, bounded) ----------------------------------------
_JOBS: OrderedDict[str, OpenJob] = OrderedDict()
_JOBS_LOCK = threading.Lock()


def _forget(job: OpenJob) -> None:
    with _JOBS_LOCK:
        for k, v in list(_JOBS.items()):
            if v is job:
                del _JOBS[k]


def open_job(source: CaseSource, predictor, version: str | None, who: str, label: str,
             cache: ResultCache | None = None) -> OpenJob:
    """The job opening ``source``: a running or finished one if there is one."""
    key = CaseMemory.key_of(source, version)
    with _JOBS_LOCK:
        job = _JOBS.get(key)
        if job is not None and not job.cancelled:
            _JOBS.move_to_end(key)
            job.watch(who)
            return job
        job = OpenJob(source, predictor, label, cache, folder_id=f"source:{key}")
        job.watch(who)
        _JOBS[key] = job
        while len(_JOBS) > MAX_JOBS:
            _JOBS.popitem(last=False)
    return job.start()
