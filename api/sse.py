"""Server-Sent Events: ``GET /v1/events`` (every call of the tenant) and ``GET /v1/calls/{sid}/events``.

One ``EventFeed`` per API process publishes the process's events to the cluster's ``EventHub``
(actors/hub.py), long-polls it for everyone else's, and fans each event out to this process's
subscribers, each with a bounded queue. A publish's reply brings the process's own events back (with any
others since the feed's cursor), and the poll only wakes for other processes' events. A subscriber whose queue fills
(a client that stopped reading) is dropped, told so in a final comment, and counted; nobody else
waits for it: not the feed, not other subscribers, never the call hosts.

Wire format per event: ``id: {hub epoch}-{hub offset}``, ``event: {type}``, ``data: {JSON}``; the
stream opens with ``retry:`` and sends a ``: heartbeat`` comment when idle for ``heartbeat_s``.
``Last-Event-ID`` (header, or ``?last_event_id=``) resumes after that event: what the hub still
holds is replayed first, then live events, with no repeats (the feed and the replay are merged by
offset). A new subscriber to one call first gets that call's events so far (the hub keeps them).
Filters: ``types=turn.ended,interruption``; ``speaker=caller|agent`` keeps that speaker's events
(``speaker`` or, for an interruption, ``by``) and the events that belong to no speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from ray.actor import ActorHandle
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from actors import channel as local
from actors import runtime
from actors.host import Published
from actors.hub import Logged
from api.auth import KeyRing, key_from_request
from api.metrics import Metrics
from engine.store.base import CallStore

log = logging.getLogger("mise.sse")

RETRY_MS = 3000
CONNECT_TIMEOUT_S = 10.0
QUEUE_SIZE = 2000
CLOSING: tuple[int, bytes] = (-1, b"")  # put in every queue when the server stops: streams end, clients reconnect
SPEAKERS = ("caller", "agent")


# What a subscriber's queue holds: (hub offset, the event as SSE bytes).
Wire = tuple[int, bytes]


@dataclass(eq=False)
class Subscriber:
    tenant: str
    call_sid: str | None
    types: frozenset[str] | None
    speaker: str | None
    queue: asyncio.Queue[Wire] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, tenant: str, event: dict[str, Any]) -> bool:
        if tenant != self.tenant or (self.call_sid is not None and event.get("call_sid") != self.call_sid):
            return False
        if self.types is not None and event.get("type") not in self.types:
            return False
        if self.speaker is not None:
            who = event.get("speaker", event.get("by"))
            return who is None or who == self.speaker
        return True


class EventFeed:
    """This process's one subscription to the hub, shared by all its SSE clients."""

    def __init__(
        self, *, hub: ActorHandle[Any], namespace: str, metrics: Metrics, poll_s: float = 10.0, channels: bool = True
    ) -> None:
        self._hub = hub
        self._namespace = namespace
        self._metrics = metrics
        self._poll_s = poll_s
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self.epoch = ""
        self._after = -1  # the offset of the last event fanned out
        self.publisher = secrets.token_hex(6)  # this process, to the hub
        # Publishes go over the hub's local socket when it runs on this node (actors/channel.py), else through Ray.
        # In order either way: the transport changes only with nothing in flight on the other one.
        self._local = channels  # may use the hub's local socket
        self._channel: local.HostChannel | None = None
        self._on_channel = 0  # publishes awaiting their reply over the channel
        self._on_ray = 0  # and through Ray
        self._lost: list[Published] = []  # batches in flight when the channel closed, to go again through Ray
        self._held: list[Published] = []  # published meanwhile: they go after those

    @property
    def hub(self) -> ActorHandle[Any]:
        return self._hub

    async def start(self) -> None:
        info = await self._hub.info.remote()
        self.epoch, self._after = info["epoch"], info["next"] - 1
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mise-event-feed")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            self._channel.close()

    async def _connect(self) -> None:
        """Open the hub's local socket if the hub runs on this node; else (or until then) publish through Ray."""
        if not self._local:
            return
        try:
            address: local.Address | None = await asyncio.wait_for(self._hub.channel.remote(), CONNECT_TIMEOUT_S)
            if address is not None and address.node == runtime.node_id():
                self._channel = await asyncio.wait_for(local.connect(address), CONNECT_TIMEOUT_S)
        except Exception as exc:  # an older hub, a refused socket: Ray it is
            log.warning("no local channel to the event hub (%s: %s); events go through Ray", type(exc).__name__, exc)

    def publish(self, events: list[Published]) -> None:
        """Hand this process's events to the hub, in order; the reply, fanned out here as it comes, holds them and
        any other events since this feed's cursor. (In order: one socket answers in order, Ray runs one caller's
        calls to an actor in order, and the transport changes only with nothing in flight on the other.)"""
        channel = self._channel
        if channel is not None and channel.closed:
            channel = self._channel = None
            log.warning("the event hub's local channel closed; events go through Ray")
        if channel is None and self._on_channel:
            self._held += events  # behind the lost channel's batches, which go again through Ray first
            return
        if channel is not None and not self._on_ray:
            self._on_channel += 1
            request = channel.request(pickle.dumps((events, self.publisher, self._after), pickle.HIGHEST_PROTOCOL))
            request.add_done_callback(lambda reply: self._over_channel(reply, events))
            return
        try:
            reply: Any = self._hub.publish.remote(events, self.publisher, self._after)
        except Exception:
            self._metrics.event_errors.inc()
            log.exception("could not hand %d events to the event hub", len(events))
            return
        self._on_ray += 1
        asyncio.wrap_future(reply.future()).add_done_callback(self._over_ray)

    def _over_channel(self, reply: asyncio.Future[bytes], events: list[Published]) -> None:
        self._on_channel -= 1
        error = None if reply.cancelled() else reply.exception()
        if isinstance(error, local.ChannelClosed):
            # Taken or not, the batch goes again through Ray: the hub drops what it has already (by sequence).
            # The batches in flight fail together, in the order they were sent; they go again in that order.
            self._channel = None
            self._lost += events
        elif reply.cancelled() or error is not None:
            self._failed(error)
        else:
            self._published(pickle.loads(reply.result()))  # from our own hub, found through Ray
        if not self._on_channel and (self._lost or self._held):
            log.warning("the event hub's local channel closed; %d events go again through Ray", len(self._lost))
            again, self._lost, self._held = self._lost + self._held, [], []
            self.publish(again)

    def _over_ray(self, reply: asyncio.Future[Any]) -> None:
        self._on_ray -= 1
        error = None if reply.cancelled() else reply.exception()
        if reply.cancelled() or error is not None:
            self._failed(error)
            return
        self._published(reply.result())

    def _failed(self, error: BaseException | None) -> None:
        self._metrics.event_errors.inc()
        log.error("the event hub did not take a batch of events: %s", error or "cancelled")

    def _published(self, result: tuple[str, int, list[Logged], bool]) -> None:
        epoch, _, events, gap = result
        if not self._take(epoch, events, gap) and self._task is not None:
            self._task.cancel()  # the poll waiting on the old hub's offsets starts again, from the new one's first
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mise-event-feed")

    def _take(self, epoch: str, events: list[Logged], gap: bool) -> bool:
        """Fan out what a poll or a publish brought that is newer than the cursor; False if the hub is a new one
        (its offsets start again: the cursor goes back to its first)."""
        if epoch != self.epoch:
            log.warning("the event hub restarted (epoch %s -> %s)", self.epoch, epoch)
            self.epoch, self._after = epoch, -1
            return False
        if gap:
            self._metrics.sse_feed_gaps.inc()
            log.error("this process fell behind the event hub: some events were not delivered here")
        for item in events:
            if item[0] > self._after:  # else fanned out already, from a publish's reply or a poll
                self._fan_out(item)
                self._after = item[0]
        return True

    def subscribe(self, sub: Subscriber) -> None:
        self._subscribers.add(sub)
        self._metrics.sse_subscribers.set(len(self._subscribers))

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        self._metrics.sse_subscribers.set(len(self._subscribers))

    def close_all(self) -> None:
        """End every stream (the server is stopping): each client reconnects, with its Last-Event-ID."""
        for sub in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):  # a full queue's client is being dropped anyway
                sub.queue.put_nowait(CLOSING)

    async def _run(self) -> None:
        while True:
            try:
                epoch, _, events, gap = await self._hub.poll.remote(self._after, self._poll_s, self.publisher)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("polling the event hub failed; finding it again in 1 s")
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    self._hub = runtime.hub(namespace=self._namespace)
                if self._channel is None or self._channel.closed:
                    await self._connect()
                continue
            self._take(epoch, events, gap)

    def _fan_out(self, item: Logged) -> None:
        _, tenant, event = item
        wire: bytes | None = None  # formatted once, for every subscriber that wants it
        for sub in list(self._subscribers):
            if sub.dropped.is_set() or not sub.wants(tenant, event):
                continue
            if wire is None:
                wire = format_event(self.epoch, item)
            try:
                sub.queue.put_nowait((item[0], wire))
            except asyncio.QueueFull:
                sub.dropped.set()  # its stream ends with a comment saying why
                self._metrics.sse_dropped.inc()
                self.unsubscribe(sub)


def format_event(epoch: str, item: Logged) -> bytes:
    offset, _, event = item
    return b"id: %s-%d\nevent: %s\ndata: %s\n\n" % (
        epoch.encode(),
        offset,
        str(event.get("type", "message")).encode(),
        orjson.dumps(event),
    )


def parse_cursor(raw: str | None) -> tuple[str, int] | None:
    """``{epoch}-{offset}`` -> (epoch, offset); None if absent or malformed."""
    if not raw:
        return None
    epoch, _, offset = raw.strip().rpartition("-")
    return (epoch, int(offset)) if epoch and offset.isdigit() else None


class EventStreams:
    def __init__(
        self,
        *,
        keys: KeyRing,
        store: CallStore,
        feed: EventFeed,
        metrics: Metrics,
        heartbeat_s: float = 15.0,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._queue_size = queue_size
        self._keys = keys
        self._store = store
        self._feed = feed
        self._metrics = metrics
        self._heartbeat_s = heartbeat_s

    async def __call__(self, request: Request) -> Response:
        tenant = self._keys.tenant_for(key_from_request(request))
        if tenant is None:
            return JSONResponse({"error": "missing or unknown API key"}, status_code=401)
        call_sid = request.path_params.get("call_sid")
        if call_sid is not None and await run_in_threadpool(self._store.get, tenant, call_sid) is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        q = request.query_params
        types = frozenset(t for t in q.get("types", "").split(",") if t) or None
        speaker = q.get("speaker") or None
        if speaker is not None and speaker not in SPEAKERS:
            return JSONResponse({"error": f"speaker must be one of {', '.join(SPEAKERS)}"}, status_code=400)
        cursor = parse_cursor(request.headers.get("last-event-id") or q.get("last_event_id"))
        sub = Subscriber(tenant, call_sid, types, speaker, asyncio.Queue(self._queue_size))
        self._feed.subscribe(sub)  # first: nothing published from now on is missed
        try:
            replay = await self._replay(sub, cursor)
        except Exception:
            self._feed.unsubscribe(sub)
            log.exception("replaying events from the hub failed")
            return JSONResponse({"error": "event hub unavailable"}, status_code=503)
        return StreamingResponse(
            self._stream(sub, replay),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _replay(self, sub: Subscriber, cursor: tuple[str, int] | None) -> tuple[list[bytes], int]:
        """What to send before live events, and the offset it reaches (live events up to it are repeats)."""
        notes: list[bytes] = []
        if cursor is not None and cursor[0] != self._feed.epoch:
            notes.append(b": the event hub restarted since that id; resuming from what it holds\n\n")
            cursor = None
        if cursor is None and sub.call_sid is None:
            return notes, -1  # the tenant stream starts live
        after = cursor[1] if cursor is not None else -1
        epoch, _, events, gap = await self._feed.hub.replay.remote(sub.tenant, sub.call_sid, after)
        if gap:
            notes.append(b": some events after that id are no longer held\n\n")
        wanted = [item for item in events if sub.wants(item[1], item[2])]
        notes += [format_event(epoch, item) for item in wanted]
        return notes, max((item[0] for item in events), default=after)

    async def _stream(self, sub: Subscriber, replay: tuple[list[bytes], int]) -> AsyncIterator[bytes]:
        chunks, last = replay
        self._metrics.sse_connections.inc()
        try:
            yield b"retry: %d\n\n" % RETRY_MS + b"".join(chunks)
            while True:
                if sub.dropped.is_set() and sub.queue.empty():
                    yield b": dropped: this client fell too far behind; reconnect with Last-Event-ID\n\n"
                    return
                try:
                    items = [await asyncio.wait_for(sub.queue.get(), self._heartbeat_s)]
                except TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                while not sub.queue.empty():  # whatever else is waiting goes in the same write
                    items.append(sub.queue.get_nowait())
                chunk: list[bytes] = []
                for offset, wire in items:
                    if offset == CLOSING[0]:
                        chunk.append(b": the server is restarting; reconnect with Last-Event-ID\n\n")
                        yield b"".join(chunk)
                        return
                    if offset > last:  # else already sent by the replay
                        last = offset
                        chunk.append(wire)
                if chunk:
                    self._metrics.sse_events.inc(len(chunk))
                    yield b"".join(chunk)
        finally:
            self._feed.unsubscribe(sub)
