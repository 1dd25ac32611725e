"""actors/allocator.py: a call host's pitch steps stop page-faulting their temporaries in and out.

Each check runs in a fresh interpreter: the thresholds are process-wide and glibc reads its environment once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# 50 pitch steps of 100 frames each (what the measuring thread does per track): minor page faults per step.
STEPS = """
import json, resource, sys
import numpy as np
from actors import allocator
from engine import pitch
tuned = allocator.tune() if sys.argv[1] == "tune" else None
s = pitch._setup(8000, *pitch.TURN_PITCH)
buf = np.random.default_rng(0).standard_normal(8000 * 30) * 0.1
for _ in range(5):
    pitch._candidates(s, buf, s.lead, 100)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(50):
    pitch._candidates(s, buf, s.lead + step * 80, 100)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
print(json.dumps({"tuned": tuned, "faults": faults}))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")


def _steps(mode: str, **env: str) -> dict[str, float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], cwd=REPO, env=environ, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def test_tuned_pitch_steps_reuse_their_memory() -> None:
    default, tuned = _steps("default"), _steps("tune")
    assert tuned["tuned"] is True
    # glibc's defaults map and fault a step's temporaries in every time (~800 faults a step measured here);
    # raised thresholds keep them in the heap: a step faults nothing once warm.
    assert tuned["faults"] < 5, (default, tuned)
    assert default["faults"] > 20 * max(tuned["faults"], 1.0), (default, tuned)


def test_operator_thresholds_are_left_alone() -> None:
    result = _steps("tune", MALLOC_MMAP_THRESHOLD_="131072")
    assert result["tuned"] is False
