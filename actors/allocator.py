"""The C allocator's thresholds for the processes that run numpy and torch work live.

glibc serves an allocation above its mmap threshold with a fresh ``mmap`` and gives freed memory at the top of
a heap back to the kernel past its trim threshold. Its defaults (128 KiB, adapting upwards as big blocks are
freed) lose in a call host: a pitch step's temporaries (100 frames x 540 samples, a few hundred KiB each) are
mapped, page-faulted in and handed back on every step, ~800 page faults per step against none once the
thresholds are raised. ``bench/ingest.py --compare`` against the commit before this module shows it in the
pitch column; docs/density.md has the figures.

The cost is memory held, not used: a process keeps up to ``TRIM_THRESHOLD`` of freed heap for its next step.
A threshold set in the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``: glibc's own
tunables) is the operator's and is left as it is. Anything but glibc on Linux: nothing to do.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Final

log = logging.getLogger("mise.allocator")

MMAP_THRESHOLD: Final = 4 << 20  # a pitch step at 100 frames allocates < 1 MiB at a time; a long turn's blocks more
TRIM_THRESHOLD: Final = 16 << 20
_M_TRIM_THRESHOLD: Final = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD: Final = -3
_ENV: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc tunables an operator may have set
_done = False


def tune() -> bool:
    """Raise this process's mmap and trim thresholds, once. True when they are (or already were) raised."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc (musl has no mallopt)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting either one stops glibc's own adjusting of both.
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.warning("mallopt refused the allocator thresholds; numpy temporaries are page-faulted per step")
        return False
    _done = True
    return True
