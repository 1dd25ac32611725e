"""What one Ray actor call costs in CPU here, caller and actor, for the two kinds of actor Mise runs.

    .venv/bin/python bench/ray_calls.py              # ~30 s on 2 cores
    .venv/bin/python bench/ray_calls.py --calls 5000
    .venv/bin/python bench/ray_calls.py --scorer     # and the emotion scorer per turn (~1 minute more)

An async actor (as the event hub is) and a threaded one (as the call hosts and the emotion scorer are), each
called ``--calls`` times in a row with a small argument (two events' worth) and the reply awaited; CPU is read
from /proc for the actor's process and for this one (the caller) over the calls, after a warm-up. This is why
Mise batches its Ray calls per host per tick, and why a batch of events costs one call to the hub rather than
two (docs/density.md).

With ``--scorer``, the emotion scorer as the server starts it (``actors.runtime.scorer``): its process's CPU
per turn over 200 turns of 0.5-4 s sent one at a time 20 ms apart (as hosts send them live), and the model
alone in this process on the same turns, back to back and 20 ms apart.

Figures are for this machine in its present state: compare runs made one after the other here, never another
machine's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt
import ray

from actors import runtime
from bench.cpu import proc_cpu_s as cpu_s
from bench.model import speechlike

EVENTS = [("acme", {"type": "turn.ended", "call_sid": f"CA{i}", "features": dict.fromkeys(map(str, range(30)), 1.0)})
          for i in range(2)]  # fmt: skip


@ray.remote
class AsyncActor:
    async def call(self, batch: Any) -> int:
        return len(batch)

    def pid(self) -> int:
        return os.getpid()


@ray.remote(max_concurrency=2)
class ThreadedActor:
    def call(self, batch: Any) -> int:
        return len(batch)

    def pid(self) -> int:
        return os.getpid()


def measure(actor: Any, calls: int) -> tuple[float, float, float]:
    """(actor CPU, caller CPU, wall) per call, in microseconds."""
    pid = ray.get(actor.pid.remote())
    for _ in range(200):
        ray.get(actor.call.remote(EVENTS))
    actor0, me0, t0 = cpu_s(pid), cpu_s(os.getpid()), time.perf_counter()
    for _ in range(calls):
        ray.get(actor.call.remote(EVENTS))
    wall = time.perf_counter() - t0
    return ((cpu_s(pid) - actor0) / calls * 1e6, (cpu_s(os.getpid()) - me0) / calls * 1e6, wall / calls * 1e6)


def scorer_per_turn(namespace: str, turns: list[npt.NDArray[np.int16]], gap_s: float) -> tuple[float, float]:
    """(scorer process CPU, this process's CPU) per turn, in ms, each turn scored alone ``gap_s`` apart."""
    scorer = runtime.scorer(namespace=namespace)
    ray.get(scorer.ready.remote())
    pid = ray.get(scorer.stats.remote())["pid"]
    for turn in turns[:20]:
        ray.get(scorer.score.remote([turn]))
    actor0, me0 = cpu_s(pid), cpu_s(os.getpid())
    for turn in turns:
        ray.get(scorer.score.remote([turn]))
        time.sleep(gap_s)
    return (cpu_s(pid) - actor0) / len(turns) * 1e3, (cpu_s(os.getpid()) - me0) / len(turns) * 1e3


def model_per_turn(turns: list[npt.NDArray[np.int16]], gap_s: float) -> float:
    """This process's CPU per turn, in ms, for the model alone (loaded as the scorer loads it)."""
    from models import load_emotion_model

    model = load_emotion_model(None, threads=1)
    model.score_with_logits(turns[:5])
    spent = 0.0
    for turn in turns:
        started = time.process_time()
        model.score_with_logits([turn])
        spent += time.process_time() - started
        time.sleep(gap_s)
    return spent / len(turns) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--scorer", action="store_true", help="also the emotion scorer's CPU per turn")
    args = p.parse_args()
    with runtime.private_cluster("mise-bench-ray-calls"):
        print(f"ray {ray.__version__}, {os.cpu_count()} cores; {args.calls} calls each, one at a time")
        for name, cls in (("async actor", AsyncActor), ("threaded actor", ThreadedActor)):
            actor_us, caller_us, wall_us = measure(cls.remote(), args.calls)  # type: ignore[attr-defined]
            print(
                f"{name:15s} CPU per call: actor {actor_us:5.0f} us + caller {caller_us:5.0f} us = "
                f"{actor_us + caller_us:5.0f} us; wall {wall_us:5.0f} us"
            )
        if args.scorer:
            rng = np.random.default_rng(1)
            turns = [speechlike(s, rng) for s in rng.uniform(0.5, 4.0, 200)]
            actor_ms, caller_ms = scorer_per_turn("mise-bench-ray-calls", turns, 0.02)
            print(f"emotion scorer, 200 turns of 0.5-4 s one at a time 20 ms apart, CPU per turn: scorer process "
                  f"{actor_ms:.2f} ms, caller {caller_ms:.2f} ms")  # fmt: skip
    if args.scorer:
        back, apart = model_per_turn(turns, 0.0), model_per_turn(turns, 0.02)
        print(f"the model alone, same turns, CPU per turn: back to back {back:.2f} ms, 20 ms apart {apart:.2f} ms")


if __name__ == "__main__":
    main()
