"""CPU time spent per stage of the analysis, for the benchmarks and ``/metrics``.

``with costs.stage("pitch"): ...`` adds the calling thread's CPU time (``time.thread_time``, so waiting
and other threads never count) to that stage. Each thread sums into its own table, so two threads
never race on one counter; ``spent()`` adds the tables up. A stage costs ~1 us to time: time whole
steps (a push, a turn), never single frames.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from types import TracebackType

_local = threading.local()
_tables: list[defaultdict[str, float]] = []
_tables_lock = threading.Lock()


def _table() -> defaultdict[str, float]:
    table: defaultdict[str, float] | None = getattr(_local, "table", None)
    if table is None:
        table = _local.table = defaultdict(float)
        with _tables_lock:
            _tables.append(table)
    return table


class stage:  # lower case: read as a function, `with costs.stage("pitch"):`
    __slots__ = ("_name", "_start")

    def __init__(self, name: str) -> None:
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.thread_time()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        _table()[self._name] += time.thread_time() - self._start


def spent() -> dict[str, float]:
    """CPU seconds per stage since the process started, over all threads."""
    out: defaultdict[str, float] = defaultdict(float)
    with _tables_lock:
        for table in _tables:
            for name, seconds in list(table.items()):
                out[name] += seconds
    return dict(out)
