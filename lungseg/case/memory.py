"""A bounded in-memory cache of immutable opened cases, shared by every user of a server."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from lungseg.case.cache import digest, file_identity, source_identity
from lungseg.case.result import Case
from lungseg.case.sources import CaseSource
from lungseg.dicomweb import is_dicomweb_url


class CaseMemory:
    """Least recently used opened cases, bounded by a memory budget (``LUNGSEG_CACHE_MB``, default 4 GB).

    Cases are immutable, so one opened case can be handed to every user; per-user choices live in each
    user's session, never on the case.
    """

    def __init__(self, budget_mb: float | None = None):
        env = os.environ.get("LUNGSEG_CACHE_MB")
        self.budget = int((budget_mb if budget_mb is not None else float(env) if env else 4096) * 1024**2)
        self._items: "OrderedDict[str, Case]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key_of(source: CaseSource, version: str | None = None) -> str:
        # a PACS series is keyed by its URL here; what it holds is checked when it is (re)opened
        files = [source.ct if source.is_demo or is_dicomweb_url(source.ct) else source_identity(source.ct)]
        for p in (source.manual.path if source.manual else None, source.automatic.path):
            files.append(file_identity(p))
        return digest([source.as_dict(), files, version])

    def get(self, key: str) -> Case | None:
        with self._lock:
            case = self._items.get(key)
            if case is not None:
                self._items.move_to_end(key)
            return case

    def put(self, key: str, case: Case) -> None:
        with self._lock:
            self._items[key] = case
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.used_bytes() > self.budget:
                self._items.popitem(last=False)

    def used_bytes(self) -> int:
        return sum(c.nbytes() for c in self._items.values())

    def __len__(self) -> int:
        return len(self._items)
