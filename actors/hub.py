"""EventHub: the one named actor through which call events reach every API process.

API processes publish the events their call hosts send back (``publish``, in each call's event order);
every API process runs one long poll (``poll``) and fans the events out to its own SSE subscribers. So a
WebSocket streaming into one uvicorn process is watched from another, and a slow subscriber only ever
costs its own process a dropped queue, never a host or the hub. A publisher that names itself and its
feed's cursor gets back what a poll would have (its own events with the others since that cursor), and
its own poll is not woken for them: one Ray call per batch of events instead of two, each of which costs
a millisecond or more of CPU (docs/density.md).

An API process on the hub's node publishes over the hub's local socket (``channel``, ``actors/channel.py``)
rather than a Ray call: the same ``publish``, answered on the hub's event loop in the order sent.

Every event gets a hub offset, a cursor that only grows: SSE ``id:`` is ``{epoch}-{offset}``, and
``Last-Event-ID`` resumes from it. ``epoch`` changes when the hub restarts (a new Ray instance), so a
cursor from an older hub is recognised instead of being misread.

Bounded: the global log keeps the last ``log_size`` events (what a lagging API process can catch up
on); per call, the last ``per_call`` events are kept for late subscribers and resumes, for the
``calls_kept`` most recently active calls.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import secrets
from collections import OrderedDict, deque
from typing import Any

import ray

from actors import tuning
from actors.channel import Address, LoopServer
from actors.channel import available as channel_available
from engine.events import seq_of

log = logging.getLogger("mise.hub")

HUB_NAME = "mise-hub"

# One logged event: (offset, tenant, event JSON).
Logged = tuple[int, str, dict[str, Any]]


class EventHub:
    def __init__(self, *, log_size: int = 100_000, per_call: int = 5_000, calls_kept: int = 2_000) -> None:
        self.epoch = secrets.token_hex(4)
        self._log: deque[Logged] = deque(maxlen=log_size)
        self._next = 0
        self._per_call = per_call
        self._calls_kept = calls_kept
        self._calls: OrderedDict[tuple[str, str], deque[Logged]] = OrderedDict()  # (tenant, call_sid)
        self._last_seq: dict[tuple[str, str, str], int] = {}  # (tenant, call_sid, stream_sid) -> last sequence
        self._waiting: list[tuple[str, asyncio.Event]] = []  # (publisher, its wake-up): the pollers waiting
        self.duplicates = 0
        self._channel: LoopServer | None = None
        tuning.settle_heap()

    async def info(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next": self._next, "calls": len(self._calls), "duplicates": self.duplicates}

    async def channel(self) -> Address | None:
        """Where API processes on this node can publish without a Ray call (``actors/channel.py``)."""
        if self._channel is None and channel_available():
            server = LoopServer(self._channel_publish, node=ray.get_runtime_context().get_node_id(), name="mise-hub")
            await server.start()
            self._channel = server
        return None if self._channel is None else self._channel.address

    def _channel_publish(self, request: bytes) -> bytes:
        batch, publisher, after = pickle.loads(request)  # from an API process that had the token from Ray
        return pickle.dumps(self._publish(batch, publisher, after), protocol=pickle.HIGHEST_PROTOCOL)

    async def publish(
        self, batch: list[tuple[str, dict[str, Any]]], publisher: str = "", after: int | None = None
    ) -> int | tuple[str, int, list[Logged], bool]:
        """Log ``batch`` ((tenant, event) pairs) and wake the pollers but ``publisher``'s; returns the next offset,
        or with ``after`` (the publisher's cursor) what ``poll(after)`` would return at once."""
        return self._publish(batch, publisher, after)

    def _publish(
        self, batch: list[tuple[str, dict[str, Any]]], publisher: str, after: int | None
    ) -> int | tuple[str, int, list[Logged], bool]:
        for tenant, event in batch:
            call_sid = event.get("call_sid")
            seq = seq_of(event)
            if call_sid is not None and seq is not None:
                # A stream's events carry a sequence: a repeat (a retried publish) is dropped, never sent twice.
                # Per tenant and stream: a call's next stream starts again at 0 (its ids differ by stream),
                # and another tenant's call that happens to use the same SIDs is another call.
                stream = (tenant, call_sid, str(event.get("stream_sid", "")))
                if seq <= self._last_seq.get(stream, -1):
                    self.duplicates += 1
                    continue
                self._last_seq[stream] = seq
            item = (self._next, tenant, event)
            self._next += 1
            self._log.append(item)
            if call_sid is not None:
                self._remember((tenant, call_sid), item)
        woken = [entry for entry in self._waiting if entry[0] != publisher or not publisher]
        for entry in woken:
            entry[1].set()
            self._waiting.remove(entry)
        if after is None:
            return self._next
        return self.epoch, self._next, *self._since(after)

    def _remember(self, call: tuple[str, str], item: Logged) -> None:
        kept = self._calls.get(call)
        if kept is None:
            kept = self._calls[call] = deque(maxlen=self._per_call)
            while len(self._calls) > self._calls_kept:
                (tenant, call_sid), _ = self._calls.popitem(last=False)
                for stream in [k for k in self._last_seq if k[:2] == (tenant, call_sid)]:
                    del self._last_seq[stream]
        else:
            self._calls.move_to_end(call)
        kept.append(item)

    async def erase(self, tenant: str, call_sid: str) -> int:
        """Forget a call's events (its buffer, its streams' sequences, its entries in the global log): an
        erased call is replayed to nobody. How many events were dropped."""
        kept = self._calls.pop((tenant, call_sid), None)
        for stream in [k for k in self._last_seq if k[:2] == (tenant, call_sid)]:
            del self._last_seq[stream]
        # Tombstones in place, not removal: offsets stay contiguous, which is how ``_since`` finds a cursor.
        hits = [i for i, item in enumerate(self._log) if item[1] == tenant and item[2].get("call_sid") == call_sid]
        for i in hits:
            self._log[i] = (self._log[i][0], "", {})
        return max(len(hits), len(kept or ()))

    async def poll(
        self, after: int, timeout_s: float = 10.0, publisher: str = ""
    ) -> tuple[str, int, list[Logged], bool]:
        """Events with offset > ``after``, waiting up to ``timeout_s`` for one (published by another than
        ``publisher``, whose own come back to it from ``publish``). Returns (epoch, next offset, events, gap);
        ``gap`` is True when some were already gone from the log (the poller lagged)."""
        if self._next <= after + 1:
            entry = (publisher, asyncio.Event())
            self._waiting.append(entry)
            try:
                await asyncio.wait_for(entry[1].wait(), timeout_s)
            except TimeoutError:
                return self.epoch, self._next, [], False
            finally:
                if entry in self._waiting:
                    self._waiting.remove(entry)
        return self.epoch, self._next, *self._since(after)

    def _since(self, after: int) -> tuple[list[Logged], bool]:
        if not self._log:
            return [], False
        first = self._log[0][0]
        skip = max(0, after + 1 - first)
        return [self._log[i] for i in range(skip, len(self._log)) if self._log[i][1]], after + 1 < first

    async def replay(self, tenant: str, call_sid: str | None, after: int) -> tuple[str, int, list[Logged], bool]:
        """What a (re)subscriber missed: the tenant's events with offset > ``after`` (all calls, from the log),
        or one call's kept events (``after`` = -1: all of them, for a late subscriber). Returns (epoch,
        next offset, events, gap)."""
        if call_sid is None:
            events, gap = self._since(after)
        else:
            kept = list(self._calls.get((tenant, call_sid), ()))
            # Older events of the call may have been let go only if its buffer is full.
            gap = len(kept) == self._per_call and after + 1 < kept[0][0]
            events = [item for item in kept if item[0] > after]
        return self.epoch, self._next, [item for item in events if item[1] == tenant], gap
