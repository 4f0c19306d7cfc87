"""Patient data on disk: where it lives, who may read it, and how long it stays.

Every folder that holds patient data is listed by :func:`patient_data_folders`: the result cache
(``$LUNGSEG_RESULT_CACHE`` or ``$LUNGSEG_CACHE/results``, with the PACS series retrieved into its ``dicomweb/``),
the unzipped DICOM series (``$LUNGSEG_CACHE/unzipped``), scratch folders of ``--no-cache`` runs
(``$LUNGSEG_CACHE/scratch``) and the app's uploads, results and viewer files (``$LUNGSEG_APP_CACHE``, default
``$LUNGSEG_CACHE/app``).
One :class:`RetentionPolicy` covers them all: entries (a file of the result cache, a series folder, an
upload, a case's viewer folder) not used for ``LUNGSEG_RETENTION_DAYS`` days (default 7) are removed, and
least recently used entries go until the whole is within ``LUNGSEG_DISK_CACHE_MB`` (default 5120).
Partial folders (``.part``) left by a killed process are removed too.  Folders are created 0700, files
0600 (:func:`private_dir`, :func:`private_file`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BUDGET_MB = 5 * 1024
DEFAULT_RETENTION_DAYS = 7.0
STALE_PART_S = 24 * 3600  # a partial folder whose writer cannot be told dead is removed after a day
MAX_HELD = 8  # entries of this process protected from eviction (the cases it has open)
STALE_TMP_S = 3600  # a temporary file of the result cache (written in seconds)
_PART = re.compile(r"^\.part-(\d+)-")  # partial folders: ".part-PID-…" (see part_folder)

_held: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def cache_root() -> Path:
    """``$LUNGSEG_CACHE`` (default ``~/.cache/lungseg``): unzipped series, scratch, and the default result cache."""
    return Path(os.environ.get("LUNGSEG_CACHE") or Path.home() / ".cache" / "lungseg")


def result_cache_root() -> Path:
    return Path(os.environ.get("LUNGSEG_RESULT_CACHE") or cache_root() / "results")


def app_cache_root() -> Path:
    """The app's folder (``$LUNGSEG_APP_CACHE``, default ``$LUNGSEG_CACHE/app``): outside the checkout or the
    installed package, beside the rest of the patient data."""
    return Path(os.environ.get("LUNGSEG_APP_CACHE") or cache_root() / "app")


# --------------------------------------------------------------------------------------------
# permissions


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` (and missing parents) created readable by the owner only (0700)."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        if q.parent == q:
            break
        q = q.parent
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in missing + [p]:
        try:
            os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
        except OSError:
            pass
    return p


def private_file(path: str | os.PathLike) -> Path:
    """Make an existing file readable by its owner only (0600)."""
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
    return Path(path)


def write_private(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a new file created 0600 (never readable by others, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return private_file(path)


def make_tree_private(path: str | os.PathLike) -> None:
    """Folders 0700 and files 0600 under ``path`` (for trees written by other libraries)."""
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o700)
        for f in files:
            private_file(Path(root) / f)


def part_folder(parent: str | os.PathLike) -> Path:
    """A new partial folder ``.part-PID-…`` under ``parent`` (0700); rename it into place when complete."""
    return Path(tempfile.mkdtemp(prefix=f".part-{os.getpid()}-", dir=private_dir(parent)))


# --------------------------------------------------------------------------------------------
# what this process has open


def hold(path: str | os.PathLike) -> None:
    """Protect ``path`` (an entry this process reads from) from eviction; the last ``MAX_HELD`` are kept."""
    with _lock:
        key = str(Path(path).resolve())
        _held[key] = None
        _held.move_to_end(key)
        while len(_held) > MAX_HELD:
            _held.popitem(last=False)


def _is_held(path: Path) -> bool:
    with _lock:
        return str(path.resolve()) in _held


# --------------------------------------------------------------------------------------------
# the policy


@dataclass(frozen=True)
class RetentionPolicy:
    """At most ``budget_bytes`` of patient data in all folders together; nothing unused for ``max_age_s``."""

    budget_bytes: int
    max_age_s: float

    @classmethod
    def from_env(cls) -> "RetentionPolicy":
        from lungseg.errors import InputError

        try:
            mb = float(os.environ.get("LUNGSEG_DISK_CACHE_MB") or DEFAULT_BUDGET_MB)
            days = float(os.environ.get("LUNGSEG_RETENTION_DAYS") or DEFAULT_RETENTION_DAYS)
        except ValueError:
            raise InputError("LUNGSEG_DISK_CACHE_MB and LUNGSEG_RETENTION_DAYS must be numbers") from None
        return cls(int(max(0.0, mb) * 1024**2), max(0.0, days) * 86400)


@dataclass(frozen=True)
class DataFolder:
    """A folder of patient data and what one entry is in it: each ``file`` or each sub-``folder``."""

    name: str
    path: Path
    entries: str  # "files" or "folders"


def patient_data_folders(extra: tuple[DataFolder, ...] = ()) -> list[DataFolder]:
    """Every folder that holds patient data (those that exist), the CLI's and the app's."""
    results, base, app = result_cache_root(), cache_root(), app_cache_root()
    found = [
        DataFolder("results", results, "files"),
        DataFolder("PACS series", results / "dicomweb", "folders"),
        DataFolder("unzipped series", base / "unzipped", "folders"),
        DataFolder("scratch (--no-cache)", base / "scratch", "folders"),
        DataFolder("app results", app / "results", "files"),
        DataFolder("app PACS series", app / "results" / "dicomweb", "folders"),
        DataFolder("uploads", app / "uploads", "folders"),
        DataFolder("viewer files", app / "viewer-files", "folders"),
    ] + list(extra)
    seen, out = set(), []
    for f in found:
        key = str(f.path.resolve())
        if key not in seen and f.path.is_dir():
            seen.add(key)
            out.append(f)
    return out


@dataclass(frozen=True)
class Entry:
    path: Path
    size: int
    used: float  # last use (modification time; entries are touched when read)
    partial: bool  # still being written, or left by a writer that was killed
    pid: int | None = None  # the writer of a partial folder


def _tree_size(p: Path) -> int:
    total = 0
    for root, _, files in os.walk(p):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def entries(folder: DataFolder) -> list[Entry]:
    """The entries of ``folder``: its files (temporary dot-files are partial) or its sub-folders
    (``.part-PID-…`` ones are partial)."""
    out = []
    try:
        children = list(os.scandir(folder.path))
    except OSError:
        return out
    for c in children:
        try:
            st = c.stat(follow_symlinks=False)
            is_dir = c.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if folder.entries == "files" and not is_dir:
            out.append(Entry(Path(c.path), st.st_size, st.st_mtime, c.name.startswith(".")))
        elif folder.entries == "folders" and is_dir:
            m = _PART.match(c.name)
            out.append(Entry(Path(c.path), _tree_size(Path(c.path)), st.st_mtime, m is not None,
                             int(m.group(1)) if m else None))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_partial(e: Entry, now: float) -> bool:
    """A partial entry whose writer no longer runs, or older than any write takes."""
    if e.pid is not None:
        return (e.pid != os.getpid() and not _pid_alive(e.pid)) or now - e.used > STALE_PART_S
    return now - e.used > STALE_TMP_S


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@dataclass(frozen=True)
class Usage:
    folder: DataFolder
    entries: int
    bytes: int


def usage(extra: tuple[DataFolder, ...] = ()) -> list[Usage]:
    return [Usage(f, len(es), sum(e.size for e in es)) for f in patient_data_folders(extra) for es in [entries(f)]]


def enforce(policy: RetentionPolicy | None = None, extra: tuple[DataFolder, ...] = ()) -> list[Path]:
    """Apply the retention policy to every patient-data folder; returns what was removed.

    Removes partial folders of dead writers, entries unused for longer than the policy's age, then least
    recently used entries until the total is within the budget.  Entries this process holds
    (:func:`hold`) and partial entries still being written stay.
    """
    policy = policy or RetentionPolicy.from_env()
    now = time.time()
    removed: list[Path] = []
    live: list[Entry] = []
    for folder in patient_data_folders(extra):
        for e in entries(folder):
            if e.partial:
                if _stale_partial(e, now):
                    _remove(e.path)
                    removed.append(e.path)
                continue
            if now - e.used > policy.max_age_s and not _is_held(e.path):
                _remove(e.path)
                removed.append(e.path)
                continue
            live.append(e)
    total = sum(e.size for e in live)
    for e in sorted(live, key=lambda e: e.used):
        if total <= policy.budget_bytes:
            break
        if _is_held(e.path):
            continue
        _remove(e.path)
        removed.append(e.path)
        total -= e.size
    return removed


def clear(extra: tuple[DataFolder, ...] = ()) -> tuple[int, int]:
    """Remove every entry of every patient-data folder: (entries, bytes) removed."""
    n = size = 0
    for folder in patient_data_folders(extra):
        for e in entries(folder):
            _remove(e.path)
            n += 1
            size += e.size
    return n, size


def scratch_dir() -> Path:
    """A private folder for one ``--no-cache`` run, removed by its caller (and, if the run is killed,
    by the next :func:`enforce`)."""
    return part_folder(cache_root() / "scratch")
