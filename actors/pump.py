"""AudioPump: batches media from every socket of this API process into one Ray call per host per tick.

The WebSocket handler only appends to an in-memory list (microseconds, never blocks the socket).
Every ``interval`` the pump sends each host's pending frames in one ``CallHost.push``. At most one
push per host is in flight; while it is, frames accumulate into the next batch, so a slow host gets
bigger batches rather than more Ray calls. Ray runs a caller's tasks on an actor in submission order,
so a call's frames always land before its ``finish``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.actor import ActorHandle

from actors.host import PushAck, PushItem

log = logging.getLogger("mise.pump")


@dataclass
class _Lane:
    handle: ActorHandle[Any]
    pending: list[PushItem] = field(default_factory=list)
    inflight: list[concurrent.futures.Future[PushAck]] = field(default_factory=list)


@dataclass
class PumpCounters:
    pushes: int = 0
    frames_pushed: int = 0
    push_errors: int = 0
    frames_orphaned: int = 0


class AudioPump:
    def __init__(
        self,
        *,
        interval_s: float,
        on_push: Callable[[int], None] = lambda frames: None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._interval = interval_s
        self._lanes: dict[str, _Lane] = {}
        self._task: asyncio.Task[None] | None = None
        self._on_push = on_push
        self._on_error = on_error
        self.counters = PumpCounters()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mise-audio-pump")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for name in list(self._lanes):
            await self.flush(name)

    def enqueue(self, host_name: str, handle: ActorHandle[Any], item: PushItem) -> None:
        lane = self._lanes.get(host_name)
        if lane is None:
            lane = self._lanes[host_name] = _Lane(handle)
        lane.pending.append(item)

    async def flush(self, host_name: str) -> None:
        """Send what is pending for ``host_name`` now and wait until every push to it has landed."""
        lane = self._lanes.get(host_name)
        if lane is None:
            return
        self._send(host_name, lane)
        waiting = [asyncio.wrap_future(f) for f in lane.inflight]
        await asyncio.gather(*waiting, return_exceptions=True)
        self._reap(lane)
        if not lane.pending and not lane.inflight:
            self._lanes.pop(host_name, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for name, lane in list(self._lanes.items()):
                self._reap(lane)
                if lane.pending and not lane.inflight:
                    self._send(name, lane)

    def _send(self, host_name: str, lane: _Lane) -> None:
        if not lane.pending:
            return
        batch, lane.pending = lane.pending, []
        future: concurrent.futures.Future[PushAck] = lane.handle.push.remote(batch).future()
        lane.inflight.append(future)
        self.counters.pushes += 1
        self.counters.frames_pushed += len(batch)
        self._on_push(len(batch))

    def _reap(self, lane: _Lane) -> None:
        still: list[concurrent.futures.Future[PushAck]] = []
        for future in lane.inflight:
            if not future.done():
                still.append(future)
                continue
            exc = future.exception()
            if exc is not None:
                self.counters.push_errors += 1
                self._on_error()
                log.error("push to a call host failed: %s", exc)
            else:
                ack = future.result()
                self.counters.frames_orphaned += ack.orphaned
        lane.inflight = still
