"""AudioPump: batches media from every socket of this API process into one push per host per tick.

The WebSocket handler only appends to an in-memory list (microseconds, never blocks the socket).
Every ``interval`` the pump sends each host's pending frames in one ``CallHost.push``. At most one
push per host is in flight; while it is, frames accumulate into the next batch, so a slow host gets
bigger batches rather than more pushes. A call's ``finish`` waits for ``flush``, so its frames always
land before it.

A push is a Ray call, or, to a host on this process's node (with ``channels``), a request over the host's
local socket (``actors/channel.py``): no Ray call per tick. The first pushes of a new lane go through Ray while
the channel connects. A push the channel loses (its connection closed before the reply) is sent again through
Ray, which tells a live host from a dead one; the lane then stays on Ray. Pushes of one lane never overtake
each other: the lane changes transport only when none is in flight.

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

from actors import channel as local
from actors.host import Published, PushAck, PushItem, Spoken

log = logging.getLogger("mise.pump")

CONNECT_TIMEOUT_S = 10.0


@dataclass
class _Lane:
    name: str
    handle: ActorHandle[Any]
    pending: list[PushItem] = field(default_factory=list)
    inflight: list[asyncio.Future[PushAck]] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)  # calls whose measured turns the host still owes us
    channel: local.HostChannel | None = None  # the host's local socket, once connected (None: Ray)
    on_channel: bool = False  # whether the pushes in flight went over the channel
    retried: dict[asyncio.Future[PushAck], asyncio.Future[PushAck]] = field(default_factory=dict)  # lost -> Ray


@dataclass
class PumpCounters:
    pushes: int = 0
    frames_pushed: int = 0
    push_errors: int = 0
    frames_orphaned: int = 0
    frames_dropped: int = 0
    pushes_local: int = 0  # of ``pushes``, those over a host's local socket
    channels_lost: int = 0  # channels found closed (their lanes push through Ray; a push in flight goes again)


class AudioPump:
    def __init__(
        self,
        *,
        interval_s: float,
        max_pending: int = 500_000,  # ~10 s of 250 calls x 2 tracks; ~100 MB at worst
        on_push: Callable[[int, bool], None] = lambda frames, local: None,
        on_error: Callable[[], None] = lambda: None,
        on_events: Callable[[list[Published], list[Spoken]], None] = lambda events, clips: None,
        on_host_failed: Callable[[str, list[PushItem]], None] | None = None,
        on_channel_lost: Callable[[], None] = lambda: None,
        channels_on: str | None = None,  # this process's Ray node: push over the local socket of hosts on it
    ) -> None:
        self._interval = interval_s
        self._node = channels_on
        self._on_channel_lost = on_channel_lost
        self._max_pending = max_pending
        self._lanes: dict[str, _Lane] = {}
        self._task: asyncio.Task[None] | None = None
        self._on_push = on_push
        self._on_error = on_error
        self._on_events = on_events
        self.on_host_failed = on_host_failed  # set by the ingest, which knows where each call lives
        self.before_tick: Callable[[], None] = lambda: None  # the ingest reads its polled sockets here
        self.counters = PumpCounters()
        self._connecting: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mise-audio-pump")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for name in list(self._lanes):
            await self.flush(name)
        for task in list(self._connecting):
            task.cancel()
        for lane in self._lanes.values():
            if lane.channel is not None:
                lane.channel.close()

    def enqueue(self, host_name: str, handle: ActorHandle[Any], *items: PushItem) -> None:
        if not items:
            return
        lane = self._lanes.get(host_name)
        if lane is None:
            lane = self._lanes[host_name] = _Lane(host_name, handle)
            if self._node is not None:
                task = asyncio.get_running_loop().create_task(self._connect(lane))
                self._connecting.add(task)
                task.add_done_callback(self._connecting.discard)
        lane.pending += items
        if len(lane.pending) > self._max_pending:
            drop = len(lane.pending) - self._max_pending
            del lane.pending[:drop]
            self.counters.frames_dropped += drop
            log.error("host %s is not keeping up: dropped %d queued frames", host_name, drop)

    async def _connect(self, lane: _Lane) -> None:
        """Open the lane's channel if its host listens on this node; until then (or else) pushes go through Ray."""
        try:
            address: local.Address | None = await asyncio.wait_for(lane.handle.channel.remote(), CONNECT_TIMEOUT_S)
            if address is None or address.node != self._node:
                return
            lane.channel = await asyncio.wait_for(local.connect(address), CONNECT_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an older host, a dead one, a refused socket: Ray it is
            log.warning("call host %s: no local push channel (%s: %s); pushes go through Ray", lane.name,
                        type(exc).__name__, exc)  # fmt: skip
            return
        if self._lanes.get(lane.name) is not lane:  # the lane went (its host failed, or it was flushed empty)
            lane.channel.close()
            lane.channel = None

    async def flush(self, host_name: str) -> None:
        """Send what is pending for ``host_name`` now and wait until every push to it has landed
        (and its reply, events included, has been handled)."""
        lane = self._lanes.get(host_name)
        if lane is None:
            return
        for _ in range(2):  # a second pass for a push held back behind a lost channel's (``_send``)
            self._send(lane)
            waiting = list(lane.inflight)
            while waiting:
                await asyncio.gather(*waiting, return_exceptions=True)
                waiting = [lane.retried.pop(f) for f in waiting if f in lane.retried]  # sent again through Ray
            if not lane.pending:
                break
        # Only forget this very lane, and only if nothing new arrived meanwhile: another call's
        # flush may have replaced it, and the replacement may hold frames nobody has sent yet.
        if self._lanes.get(host_name) is lane and not (lane.pending or lane.inflight or lane.awaiting):
            del self._lanes[host_name]
            if lane.channel is not None:
                lane.channel.close()

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
        channel = lane.channel
        if channel is not None and channel.closed:
            self._lost_channel(lane, "closed")
            channel = None
        if lane.on_channel and lane.inflight and channel is None:
            return  # pushes the channel lost go again through Ray first: this one waits for them (no overtaking)
        batch, lane.pending = lane.pending, []
        poll, lane.awaiting = lane.awaiting, []
        local_push = channel is not None and (lane.on_channel or not lane.inflight)
        if channel is not None and local_push:
            future = self._over_channel(channel, batch, poll)
        else:
            future = self._over_ray(lane, batch, poll)
        lane.on_channel = local_push
        lane.inflight.append(future)
        # Registered before anyone can await it, so it runs before ``flush`` returns.
        future.add_done_callback(lambda f: self._landed(lane, f, batch, poll))
        self.counters.pushes += 1
        self.counters.pushes_local += local_push
        self.counters.frames_pushed += len(batch)
        self._on_push(len(batch), local_push)

    @staticmethod
    def _over_ray(lane: _Lane, batch: list[PushItem], poll: list[str]) -> asyncio.Future[PushAck]:
        # Pickled here, once: Ray's own serialiser is several times slower over a list of small tuples.
        packed = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            return asyncio.wrap_future(lane.handle.push.remote(packed, poll).future())
        except Exception as exc:  # not even submitted: a failed push (its frames are handed on, never dropped)
            failed: asyncio.Future[PushAck] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    @staticmethod
    def _over_channel(channel: local.HostChannel, batch: list[PushItem], poll: list[str]) -> asyncio.Future[PushAck]:
        reply = channel.request(pickle.dumps((batch, poll), protocol=pickle.HIGHEST_PROTOCOL))
        ack: asyncio.Future[PushAck] = asyncio.get_running_loop().create_future()

        def unpack(f: asyncio.Future[bytes]) -> None:
            if f.cancelled():
                ack.cancel()
            elif (exc := f.exception()) is not None:
                ack.set_exception(exc)
            else:
                try:
                    ack.set_result(pickle.loads(f.result()))  # from our own host, found through Ray
                except Exception as bad:
                    ack.set_exception(bad)

        reply.add_done_callback(unpack)
        return ack

    def _lost_channel(self, lane: _Lane, why: str) -> None:
        """The lane's channel closed (its host died, or the socket failed): the lane pushes through Ray from now."""
        if lane.channel is None:
            return
        lane.channel = None
        self.counters.channels_lost += 1
        self._on_channel_lost()
        log.warning("call host %s: its push channel closed (%s); pushing through Ray", lane.name, why)

    def _landed(self, lane: _Lane, future: asyncio.Future[PushAck], batch: list[PushItem], poll: list[str]) -> None:
        """A push's reply is back (on the event loop): count it and hand its events on at once."""
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, local.ChannelClosed):
            # Whether the host applied it is unknown: ask Ray, which tells a dead host (the calls move, below)
            # from a live one. The push stays in flight meanwhile, so nothing overtakes it; the lane stays on Ray.
            self._lost_channel(lane, str(exc))
            retry = self._over_ray(lane, batch, poll)
            lane.inflight[lane.inflight.index(future)] = lane.retried[future] = retry  # ``flush`` waits for it

            def retried(f: asyncio.Future[PushAck]) -> None:
                lane.retried.pop(future, None)
                self._landed(lane, f, batch, poll)

            retry.add_done_callback(retried)
            return
        with contextlib.suppress(ValueError):
            lane.inflight.remove(future)
        if future.cancelled() or exc is not None:
            self.counters.push_errors += 1
            self._on_error()
            log.error("push to call host %s failed: %s", lane.name, exc or "cancelled")
            if self.on_host_failed is not None:
                # The host is gone: its calls move (the handler re-sends these frames to their new hosts).
                frames, lane.pending = batch + lane.pending, []
                if self._lanes.get(lane.name) is lane:
                    del self._lanes[lane.name]
                if lane.channel is not None:
                    lane.channel.close()
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
