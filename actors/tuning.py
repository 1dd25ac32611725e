"""Garbage collection tuned for processes that handle thousands of small messages a second.

CPython collects its youngest generation every 700 new container objects, and every so often walks
every object of the process (Ray's, numpy's, the modules'): in the API process that was ~17% of its
active CPU under 50 live calls (py-spy --native, bench/ingest.py). Once a process has started,
``settle_heap`` moves what it has built so far out of the collector's sight (``gc.freeze``: those
objects live as long as the process anyway) and collects the young generation less often. Cyclic
garbage is still collected, only in bigger batches (a few MB at most).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # container allocations between young collections (CPython's default: 700)


def settle_heap() -> None:
    """Call once a process has loaded what it needs (idempotent: later calls freeze what was added)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
