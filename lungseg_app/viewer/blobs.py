"""The case's voxels as compressed binary files the browser fetches once and caches.

Component arguments are re-sent by Streamlit on every rerun, so the CT and masks never travel as
arguments: they are written here as gzip files (the server sends them as ``application/gzip``, which
its gzip layer leaves alone, and the browser inflates them with ``DecompressionStream``) and only their
URLs travel.  Files live in one folder per case under a name derived from a secret kept outside the
served folder, so a URL cannot be guessed from the case; Streamlit's component route serves files but
never lists a folder.  Only the ``MAX_CASES`` most recently used case folders are kept.

CT: int16 HU in slabs of ``SLAB`` axial slices, each slab's low bytes then its high bytes (a byte
shuffle: the high bytes are nearly constant and compress well), gzip level 1.
Masks: ``numpy.packbits`` of the [z, y, x] bool array (first voxel in the most significant bit), gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when the file layout changes
SLAB = 16  # axial slices per CT file
MAX_CASES = 8
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="viewer-blobs")  # zlib releases the GIL
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Folder:
    """Where a case's files are written (``path``) and its name in URLs (``token``)."""

    root: Path
    token: str

    @property
    def path(self) -> Path:
        return self.root / self.token


def _secret(secret_file: Path) -> bytes:
    with _LOCK:
        if not secret_file.exists():
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = secret_file.with_name(secret_file.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(secrets.token_bytes(32))
            os.chmod(tmp, 0o600)
            tmp.replace(secret_file)
        return secret_file.read_bytes()


def case_folder(root: Path, secret_file: Path, case_id: str) -> Folder:
    """The case's folder: 128 bits derived from a server secret, so not guessable from ``case_id``."""
    token = hmac.new(_secret(secret_file), f"{case_id}|{FORMAT}".encode(), hashlib.sha256).hexdigest()[:32]
    folder = Folder(Path(root), token)
    folder.path.mkdir(parents=True, exist_ok=True)
    os.utime(folder.path)  # most recently used
    return folder


def prune(root: Path, keep: int = MAX_CASES, protect: tuple[str, ...] = ()) -> list[str]:
    """Remove all but the ``keep`` most recently used case folders; return the removed tokens."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    removed = []
    for d in dirs[keep:]:
        if d.name in protect:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    return removed


def shuffle_int16(array: np.ndarray) -> bytes:
    """int16 voxels as all low bytes, then all high bytes."""
    b = np.ascontiguousarray(array, dtype="<i2").view(np.uint8).reshape(-1, 2)
    return b[:, 0].tobytes() + b[:, 1].tobytes()


def unshuffle_int16(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    n = raw.size // 2
    return (raw[:n].astype(np.uint16) | (raw[n:].astype(np.uint16) << 8)).view(np.int16).reshape(shape)


def as_int16(array: np.ndarray) -> np.ndarray:
    """HU as int16 (integer CTs unchanged; float CTs rounded)."""
    if array.dtype == np.int16:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, -32768, 32767).astype(np.int16)
    return np.clip(np.rint(array), -32768, 32767).astype(np.int16)


def _write(path: Path, payload: bytes, level: int) -> None:
    if path.exists():
        return
    tmp = path.with_name(path.name + f".{threading.get_ident()}.tmp")
    tmp.write_bytes(gzip.compress(payload, compresslevel=level, mtime=0))
    tmp.replace(path)


def slab_order(nz: int, start: int, slab: int = SLAB) -> list[int]:
    """Slab indices, the one holding ``start`` first, then outwards."""
    n = (nz + slab - 1) // slab
    first = min(max(int(start), 0), nz - 1) // slab
    return sorted(range(n), key=lambda s: (abs(s - first), s))


def ct_file(s: int) -> str:
    return f"ct-{s:03d}.gz"


def write_ct(folder: Folder, array: np.ndarray, start: int, on_slab=None, slab: int = SLAB) -> list[str]:
    """Write every CT slab (the one holding ``start`` first); ``on_slab(s)`` after each is on disk."""
    arr = as_int16(array)
    nz = arr.shape[0]
    order = slab_order(nz, start, slab)

    def one(s: int) -> int:
        _write(folder.path / ct_file(s), shuffle_int16(arr[s * slab:(s + 1) * slab]), 1)
        return s

    one(order[0])
    if on_slab:
        on_slab(order[0])
    for s in _POOL.map(one, order[1:]):
        if on_slab:
            on_slab(s)
    return [ct_file(s) for s in range((nz + slab - 1) // slab)]


def write_mask(folder: Folder, layer: str, mask: np.ndarray) -> str:
    """Write a bool mask; the file name holds a digest of its content (a changed mask gets a new URL)."""
    packed = np.packbits(np.ascontiguousarray(mask, dtype=bool).ravel())
    digest = hashlib.sha1(packed.tobytes()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() else "-" for c in layer.lower())
    name = f"mask-{slug}-{digest}.gz"
    _write(folder.path / name, packed.tobytes(), 6)
    return name


def folder_bytes(folder: Folder) -> int:
    return sum(f.stat().st_size for f in folder.path.glob("*.gz"))


def touch(folder: Folder) -> None:
    try:
        os.utime(folder.path, (time.time(), time.time()))
    except OSError:
        pass
