"""What one Ray actor call costs in CPU here, caller and actor, for the two kinds of actor Mise runs.

    .venv/bin/python bench/ray_calls.py              # ~30 s on 2 cores
    .venv/bin/python bench/ray_calls.py --calls 5000

An async actor (as the event hub is) and a threaded one (as the call hosts are), each called ``--calls`` times
in a row with a small argument (two events' worth) and the reply awaited; CPU is read from /proc for the actor's
process and for this one (the caller) over the calls, after a warm-up. This is why Mise batches its Ray calls
per host per tick, and why a batch of events costs one call to the hub rather than two (docs/density.md).

Its ``--scorer`` option (up to d85f9c3) measured the emotion scorer actor per turn: ~9 ms of CPU against ~2 ms
for the model alone, which is why call hosts now score their own turns (docs/density.md; bench/model.py).

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

import ray

from actors import runtime
from bench.cpu import proc_cpu_s as cpu_s

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3000)
    args = p.parse_args()
    with runtime.private_cluster("mise-bench-ray-calls"):
        print(f"ray {ray.__version__}, {os.cpu_count()} cores; {args.calls} calls each, one at a time")
        for name, cls in (("async actor", AsyncActor), ("threaded actor", ThreadedActor)):
            actor_us, caller_us, wall_us = measure(cls.remote(), args.calls)  # type: ignore[attr-defined]
            print(
                f"{name:15s} CPU per call: actor {actor_us:5.0f} us + caller {caller_us:5.0f} us = "
                f"{actor_us + caller_us:5.0f} us; wall {wall_us:5.0f} us"
            )


if __name__ == "__main__":
    main()
