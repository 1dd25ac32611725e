"""AudioPump against a real CallHost actor on real Ray."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import ray

from actors.host import CallHost
from actors.pump import AudioPump
from engine.call import CallMeta

pytestmark = pytest.mark.integration


def meta(sid: str) -> CallMeta:
    return CallMeta("acme", sid, "MZ", "AC", ("inbound",), {}, "")


@ray.remote(num_cpus=0)
class SlowHost(CallHost):
    """A real host whose pushes take ``delay`` seconds: a host under load."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self._delay = delay

    def push(self, items: list[Any], poll: list[str] | None = None) -> Any:
        time.sleep(self._delay)
        return super().push(items, poll)


def test_concurrent_flushes_never_drop_another_calls_frames(ray_address: str) -> None:
    """Calls B and D flush while one push is in flight. B wakes first and forgets the lane; call C
    then enqueues into a new lane; only then D wakes. An earlier version had D forget C's new lane,
    losing C's frames. Ray's thread is held between the two wake-ups to force that order."""
    host: Any = SlowHost.remote(0.3)
    for sid in "BCD":
        ray.get(host.open.remote(meta(sid)))

    async def scenario() -> None:
        pump = AudioPump(interval_s=60)  # no background ticks: only flushes send
        pump.enqueue("h", host, ("B", "inbound", 0, b"\xff" * 160, 0.0))
        b = asyncio.create_task(pump.flush("h"))
        await asyncio.sleep(0)  # B sent the push and waits on it
        pump._lanes["h"].inflight[0].add_done_callback(lambda _: time.sleep(0.2))
        d = asyncio.create_task(pump.flush("h"))
        await asyncio.sleep(0)  # D waits on the same push
        await b
        pump.enqueue("h", host, ("C", "inbound", 0, b"\xff" * 160, 0.0))
        await d
        await pump.flush("h")  # C's own finalization

    asyncio.run(scenario())
    assert ray.get(host.finish.remote("B"))["tracks"]["inbound"]["frames"] == 1
    assert ray.get(host.finish.remote("C"))["tracks"]["inbound"]["frames"] == 1
    ray.kill(host)


def test_a_host_that_stops_answering_costs_bounded_memory_and_is_counted(ray_address: str) -> None:
    host: Any = SlowHost.remote(3.0)
    ray.get(host.open.remote(meta("X")))

    async def scenario() -> AudioPump:
        pump = AudioPump(interval_s=0.01, max_pending=100)
        pump.start()
        for k in range(20):
            pump.enqueue("h", host, ("X", "inbound", k * 20, b"\xff" * 160, 0.0))
        await asyncio.sleep(0.1)  # the first push is in flight and stuck
        for k in range(20, 520):
            pump.enqueue("h", host, ("X", "inbound", k * 20, b"\xff" * 160, 0.0))
        await pump.stop()
        return pump

    pump = asyncio.run(scenario())
    assert pump.counters.frames_dropped == 400
    assert ray.get(host.finish.remote("X"))["tracks"]["inbound"]["frames"] == 120
    ray.kill(host)
