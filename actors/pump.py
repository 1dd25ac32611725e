"""AudioPump: batches media from every socket of this API process into one Ray call per host per tick.

The WebSocket handler only appends to an in-memory list (microseconds, never blocks the socket).
Every ``interval`` the pump sends each host's pending frames in one ``CallHost.push``. At most one
push per host is in flight; while it is, frames accumulate into the next batch, so a slow host gets
bigger batches rather than more Ray calls. Ray runs a caller's tasks on an actor in submission order,
so a call's frames always land before its ``finish``.

Bounded: a host that stops answering accumulates at most ``max_pending`` frames here; beyond that
the oldest are dropped and counted (``frames_dropped``), never silently. A push that fails (the host
died) does not drop its frames: they and the lane's pending ones go to ``on_host_failed``, which moves
the host's calls elsewhere (``api/ingest.py``) and sends them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.actor import ActorHandle

from actors.host import Published, PushAck, PushItem, Spoken

log = logging.getLogger("mise.pump")


@dataclass
class _Lane:
    name: str
    handle: ActorHandle[Any]
    pending: list[PushItem] = field(default_factory=list)
    inflight: list[asyncio.Future[PushAck]] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)  # calls whose measured turns the host still owes us


@dataclass
class PumpCounters:
    pushes: int = 0
    frames_pushed: int = 0
    push_errors: int = 0
    frames_orphaned: int = 0
    frames_dropped: int = 0


class AudioPump:
    def __init__(
        self,
        *,
        interval_s: float,
        max_pending: int = 500_000,  # ~10 s of 250 calls x 2 tracks; ~100 MB at worst
        on_push: Callable[[int], None] = lambda frames: None,
        on_error: Callable[[], None] = lambda: None,
        on_events: Callable[[list[Published], list[Spoken]], None] = lambda events, clips: None,
        on_host_failed: Callable[[str, list[PushItem]], None] | None = None,
    ) -> None:
        self._interval = interval_s
        self._max_pending = max_pending
        self._lanes: dict[str, _Lane] = {}
        self._task: asyncio.Task[None] | None = None
        self._on_push = on_push
        self._on_error = on_error
        self._on_events = on_events
        self.on_host_failed = on_host_failed  # set by the ingest, which knows where each call lives
        self.before_tick: Callable[[], None] = lambda: None  # the ingest reads its polled sockets here
        self.counters = PumpCounters()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mise-audio-pump")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for name in list(self._lanes):
            await self.flush(name)

    def enqueue(self, host_name: str, handle: ActorHandle[Any], *items: PushItem) -> None:
        if not items:
            return
        lane = self._lanes.get(host_name)
        if lane is None:
            lane = self._lanes[host_name] = _Lane(host_name, handle)
        lane.pending += items
        if len(lane.pending) > self._max_pending:
            drop = len(lane.pending) - self._max_pending
            del lane.pending[:drop]
            self.counters.frames_dropped += drop
            log.error("host %s is not keeping up: dropped %d queued frames", host_name, drop)

    async def flush(self, host_name: str) -> None:
        """Send what is pending for ``host_name`` now and wait until every push to it has landed
        (and its reply, events included, has been handled)."""
        lane = self._lanes.get(host_name)
        if lane is None:
            return
        self._send(lane)
        await asyncio.gather(*lane.inflight, return_exceptions=True)
        # Only forget this very lane, and only if nothing new arrived meanwhile: another call's
        # flush may have replaced it, and the replacement may hold frames nobody has sent yet.
        if self._lanes.get(host_name) is lane and not (lane.pending or lane.inflight or lane.awaiting):
            del self._lanes[host_name]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            # At a fixed rate, not a fixed pause after each tick's work: audio waits one interval at most.
            due = max(due + self._interval, loop.time() - self._interval)  # behind by more: no burst of ticks
            await asyncio.sleep(due - loop.time())
            try:
                self.before_tick()
            except Exception:
                log.exception("reading the sockets before a push failed")
            for lane in list(self._lanes.values()):
                try:
                    if (lane.pending or lane.awaiting) and not lane.inflight:
                        self._send(lane)
                except Exception:  # never let one bad host stop audio for every other call
                    log.exception("pushing audio to a call host failed; will retry next tick")

    def _send(self, lane: _Lane) -> None:
        if not (lane.pending or lane.awaiting):
            return
        batch, lane.pending = lane.pending, []
        poll, lane.awaiting = lane.awaiting, []
        # Pickled here, once: Ray's own serialiser is several times slower over a list of small tuples.
        packed = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        future: asyncio.Future[PushAck] = asyncio.wrap_future(lane.handle.push.remote(packed, poll).future())
        lane.inflight.append(future)
        # Registered before anyone can await it, so it runs before ``flush`` returns.
        future.add_done_callback(lambda f: self._landed(lane, f, batch))
        self.counters.pushes += 1
        self.counters.frames_pushed += len(batch)
        self._on_push(len(batch))

    def _landed(self, lane: _Lane, future: asyncio.Future[PushAck], batch: list[PushItem]) -> None:
        """A push's reply is back (on the event loop): count it and hand its events on at once."""
        with contextlib.suppress(ValueError):
            lane.inflight.remove(future)
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            self.counters.push_errors += 1
            self._on_error()
            log.error("push to call host %s failed: %s", lane.name, exc or "cancelled")
            if self.on_host_failed is not None:
                # The host is gone: its calls move (the handler re-sends these frames to their new hosts).
                frames, lane.pending = batch + lane.pending, []
                if self._lanes.get(lane.name) is lane:
                    del self._lanes[lane.name]
                self.on_host_failed(lane.name, frames)
            return
        ack = future.result()
        self.counters.frames_orphaned += ack.orphaned
        lane.awaiting = sorted(set(lane.awaiting) | set(ack.awaiting))
        if ack.events:
            try:
                self._on_events(ack.events, ack.clips)
            except Exception:
                log.exception("handling %d events from a call host failed", len(ack.events))
