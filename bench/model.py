"""CPU cost of the emotion model on one thread: per second of audio at batch 1, and throughput batched.

    .venv/bin/python bench/model.py [--weights W.pt] [--seconds 20]

Both forms of the same weights: the numpy one servers run (``models.live``, in each call host) and the torch one
training and evaluation run (``models.emotion``). Per turn scored alone, back to back and 20 ms apart (as a host
scores them live, between other work: caches and branch predictors cold), and torch's batched throughput.
Targets: <= 2 ms of CPU per second of audio at batch 1; >= 500x real time batched on one core.
The front end (log-mel and periodicity channels) alone is measured in the same run as the reference floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One BLAS thread, as in the processes that score live: Ray gives its workers OMP_NUM_THREADS=1 (their num_cpus
# or 1), which OpenBLAS obeys. Two threads here cost ~2x the CPU per turn for the numpy model's small products.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.audio import SAMPLE_RATE


def speechlike(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Noise bursts shaped like syllables (4 per second) at about -20 dBFS, int16; cost does not depend on content."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    voice = np.sin(2 * np.pi * 140 * t) + 0.3 * rng.standard_normal(n)
    return np.clip(voice * envelope * 3000, -32768, 32767).astype(np.int16)


def cpu_per_call(fn: Callable[[], object], budget_s: float) -> float:
    """Mean CPU seconds of ``fn()`` over as many calls as fit in ``budget_s`` of CPU (after one warm-up)."""
    fn()
    calls, t0 = 0, time.process_time()
    while time.process_time() - t0 < budget_s or calls < 3:
        fn()
        calls += 1
    return (time.process_time() - t0) / calls


def apart(fn: Callable[[np.ndarray], object], turns: list[np.ndarray], gap_s: float) -> float:
    """Mean CPU seconds of ``fn(turn)`` over ``turns``, one at a time ``gap_s`` apart (after 5 to warm up)."""
    for turn in turns[:5]:
        fn(turn)
    spent = 0.0
    for turn in turns:
        started = time.process_time()
        fn(turn)
        spent += time.process_time() - started
        time.sleep(gap_s)
    return spent / len(turns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=4.0, help="CPU budget per measurement")
    args = ap.parse_args(argv)

    import torch

    import models
    from actors import allocator
    from models import emotion

    allocator.tune()  # as every call host does: numpy's temporaries stay mapped between calls

    model = emotion.load(args.weights)
    live = models.load_emotion_model(args.weights)
    n_params = sum(p.numel() for p in model.net.parameters())
    print(
        f"emotion model: {model.n_parameters:,} parameters ({n_params:,} with batch norms folded), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, OpenBLAS threads "
        f"{os.environ['OPENBLAS_NUM_THREADS']} (machine: {os.cpu_count()} cores); "
        "CPU time from time.process_time"
    )
    rng = np.random.default_rng(0)
    front = model.net.front  # log-mel and periodicity channels
    print(f"{'input':<44}{'CPU ms/call':>12}{'ms per s audio':>16}{'x real time':>13}")

    def row(name: str, cost: float, audio_s: float) -> None:
        print(f"{name:<44}{cost * 1e3:>12.2f}{cost / audio_s * 1e3:>16.3f}{audio_s / cost:>13.0f}")

    for seconds in (1.0, 3.0, 6.0):
        turn = speechlike(seconds, rng)
        row(f"numpy, {seconds:.0f} s turn", cpu_per_call(lambda t=turn: live.score([t]), args.seconds), seconds)
        row(f"torch, {seconds:.0f} s turn", cpu_per_call(lambda t=turn: model.score([t]), args.seconds), seconds)
    turns = [speechlike(float(s), rng) for s in rng.uniform(0.5, 4.0, 200)]
    total = sum(len(t) for t in turns) / SAMPLE_RATE
    for name, scorer in (("numpy", live), ("torch", model)):
        cost = apart(lambda t, m=scorer: m.score([t]), turns, 0.02)
        row(f"{name}, 200 turns of 0.5-4 s, 20 ms apart", cost, total / len(turns))
    wave = torch.from_numpy(speechlike(3.0, rng).astype(np.float32) / 32768)[None, :]
    with torch.inference_mode():
        row("reference: front end alone, 3 s", cpu_per_call(lambda: front(wave), args.seconds), 3.0)
    for batch in (16, 64):
        turns = [speechlike(3.0, rng) for _ in range(batch)]
        row(f"batch {batch}, 3 s turns", cpu_per_call(lambda ts=turns: model.score(ts), args.seconds), 3.0 * batch)
    turns = [speechlike(float(s), rng) for s in rng.uniform(0.5, 8.0, 64)]
    total = sum(len(t) for t in turns) / SAMPLE_RATE
    row("batch 64, turns of 0.5-8 s", cpu_per_call(lambda: model.score(turns), args.seconds), total)
    print("targets: <= 2 ms per s of audio at batch 1; >= 500x real time batched (one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
