"""``WS /v1/stream/twilio``: Twilio Media Streams in, audio batched to the call's host actor.

Per message the socket does only pure work (decode, check against the stream, append to the pump's
batch): nothing here waits on Ray while a call is streaming, so nothing adds latency to the call.
A stream is refused before any work (close 1008) without a valid handshake signature (when a Twilio
auth token is configured) or without a valid API key; an open call is always finalized, whether its
stream ended with ``stop`` or the socket just closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ray.actor import ActorHandle
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from uvicorn.protocols.utils import ClientDisconnected

from actors.host import PushItem
from actors.pump import AudioPump
from api.auth import KeyRing, TwilioSignature, key_from_request
from api.events import EventRouter
from api.guard import RateLimits, key_id, who
from api.leases import Leases
from api.metrics import Metrics
from api.recorder import Recorder, Recording
from api.wsprotocol import DIRECT, MediaTuple, SocketPoller
from engine import codec
from engine.call import CallMeta
from engine.events import iso_utc
from engine.frames import TRACKS, Frame, Media, Rejected, Start, Stop, redact_parameters
from engine.session import StreamSession
from engine.store.base import CallStore

log = logging.getLogger("mise.ingest")

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012  # uvicorn closes sockets with it when the server stops
RAY_TIMEOUT_S = 30.0  # a host that takes longer than this to answer is treated as failed
MOVE_ATTEMPTS = 8  # hosts tried in turn for a call whose host died, 0.5 s apart, doubling up to 8 s (~35 s):
# a lost node takes Ray a few seconds to declare dead, and until then new hosts may be started on it
LOGGED_PER_REASON = 3  # per stream: the first few refusals of each kind are logged, all are counted


def utc_now() -> str:
    return iso_utc(time.time())


def _end_reason(close_code: int) -> str:
    return "server_shutdown" if close_code == SERVICE_RESTART else "disconnect"


@dataclass(frozen=True, slots=True)
class _Closed:
    code: int


@dataclass
class _Placement:
    meta: CallMeta
    host_name: str
    host: ActorHandle[Any]
    moving: asyncio.Task[None] | None = None  # its host died: being re-opened on another (frames held)
    held: list[PushItem] = field(default_factory=list)  # frames that came meanwhile, sent once it is moved
    failovers: list[int] = field(default_factory=list)  # stream times (ms) at which it moved
    lost: str | None = None  # it could not be moved: why (its later frames are refused, counted)
    first_turn: int = 0  # this stream numbers its turns from here (after the call's earlier streams')
    recording: Recording | None = None  # None: its tenant's calls are not recorded


class Ingest:
    def __init__(
        self,
        *,
        keys: KeyRing,
        signature: TwilioSignature | None,
        metrics: Metrics,
        directory: ActorHandle[Any],
        pump: AudioPump,
        store: CallStore,
        events: EventRouter,
        leases: Leases,
        limits: RateLimits,
        start_timeout_s: float,
        max_message_bytes: int,
        recorder: Recorder,
    ) -> None:
        self._keys = keys
        self._signature = signature
        self._metrics = metrics
        self._directory = directory
        self._pump = pump
        self._store = store
        self._events = events
        self._leases = leases
        self._limits = limits
        self._recorder = recorder
        self._live: dict[str, _Placement] = {}  # this process's live calls
        self._dropped_seen = 0
        pump.on_host_failed = self._host_failed
        # Media sockets are read on the pump's ticks, just before it pushes (api/wsprotocol.py, polled reads).
        self._poller = SocketPoller()
        pump.before_tick = self._poller.read_all
        self._start_timeout = start_timeout_s
        self._max_bytes = max_message_bytes
        # Per message only plain integers are counted; /metrics adds them up when scraped (a Prometheus
        # counter's inc takes a lock: two per message were ~7% of this process's CPU).
        self._tally = {"messages": 0, **dict.fromkeys(TRACKS, 0)}
        metrics.on_scrape(self._flush_tally)

    async def __call__(self, ws: WebSocket) -> None:
        if self._signature and not self._signature.valid(ws, {}, ws.headers.get("x-twilio-signature")):
            return await self._refuse(ws, "bad_signature", accepted=False)
        tenant: str | None = None
        if (early_key := key_from_request(ws)) is not None:
            tenant = self._keys.tenant_for(early_key)
            if tenant is None:
                return await self._refuse(ws, "bad_key", accepted=False)
            if (wait := self._limits.take("streams", who(ws, self._keys))) > 0:
                return await self._refuse_rate(ws, wait, accepted=False)
        await ws.accept()
        session = StreamSession()
        refusals: Counter[str] = Counter()
        try:
            start = await asyncio.wait_for(self._await_start(ws, session, refusals), self._start_timeout)
        except TimeoutError:
            return await self._refuse(ws, "no_start")
        if start is None:  # closed before start: nothing was opened
            return self._log_refusals(None, refusals)
        received_at = time.perf_counter()
        if tenant is None:
            tenant = self._keys.tenant_for(start.custom_parameters.get("api_key"))
            if tenant is None:
                reason = "bad_key" if start.custom_parameters.get("api_key") else "missing_key"
                return await self._refuse(ws, reason)
            key = str(start.custom_parameters.get("api_key"))
            if (wait := self._limits.take("streams", key_id(key))) > 0:
                return await self._refuse_rate(ws, wait)
        try:
            placement = await self._open(tenant, start)
        except Exception:
            log.exception("call %s: could not be placed on a call host", start.call_sid)
            self._metrics.connections_rejected.labels("internal_error").inc()
            return await _close(ws, 1011, "internal_error")
        if placement is None:
            return await self._refuse(ws, "call_already_live")
        self._metrics.call_setup.observe(time.perf_counter() - received_at)
        end_reason = "disconnect"
        try:
            end_reason = await self._stream(ws, session, placement, refusals)
        finally:
            await asyncio.shield(self._finalize(placement, end_reason))
            self._log_refusals(placement.meta.call_sid, refusals)
        if end_reason == "stop":
            await _close(ws, 1000)

    async def _await_start(self, ws: WebSocket, session: StreamSession, refusals: Counter[str]) -> Start | None:
        while True:
            data = await self._receive(ws)
            if isinstance(data, _Closed):
                return None
            frame = self._check(session, data, refusals, None)
            if isinstance(frame, Start):
                return frame

    async def _stream(
        self, ws: WebSocket, session: StreamSession, placement: _Placement, refusals: Counter[str]
    ) -> str:
        """Pump media until ``stop`` ("stop"), the socket closes ("disconnect"), or this server stops
        ("server_shutdown")."""
        deliver = ws.scope.get("extensions", {}).get(DIRECT, {}).get("deliver")
        if deliver is not None:  # each message handled as it is parsed (api/wsprotocol.py)
            stopped: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def on_message(data: str | bytes) -> None:
                if not stopped.done():
                    self._tally["messages"] += 1
                    if self._take(session, placement, refusals, data):
                        stopped.set_result("stop")

            def on_media(batch: list[MediaTuple]) -> None:
                if not stopped.done():
                    self._take_media(session, placement, refusals, batch)

            closed: asyncio.Future[int] = deliver(on_message, on_media, self._max_bytes, self._poller)
            await asyncio.wait((stopped, closed), return_when=asyncio.FIRST_COMPLETED)
            return "stop" if stopped.done() else _end_reason(closed.result())
        while True:  # under a server without the direct lane
            data = await self._receive(ws)
            if isinstance(data, _Closed):
                return _end_reason(data.code)
            if self._take(session, placement, refusals, data):
                return "stop"

    def _take(self, session: StreamSession, placement: _Placement, refusals: Counter[str], data: str | bytes) -> bool:
        """One message of a placed call: media is recorded and goes on to the call's host. True at ``stop``."""
        frame = self._check(session, data, refusals, placement.meta.call_sid)
        if not isinstance(frame, Media):
            return isinstance(frame, Stop)
        self._tally[frame.track] += 1
        if placement.recording is not None:
            placement.recording.add(frame.track, frame.timestamp_ms, frame.payload)
        item = (placement.meta.call_sid, frame.track, frame.timestamp_ms, frame.payload, self._arrived())
        if placement.moving is None and placement.lost is None:
            self._pump.enqueue(placement.host_name, placement.host, item)
        else:
            self._hold(placement, item)
        return False

    def _take_media(
        self, session: StreamSession, placement: _Placement, refusals: Counter[str], batch: list[MediaTuple]
    ) -> None:
        """``_take`` for media messages the socket decoded already (api/wsprotocol.py's media sink): one read's."""
        tally, call_sid, recording = self._tally, placement.meta.call_sid, placement.recording
        tally["messages"] += len(batch)
        arrived = self._arrived()
        items: list[PushItem] = []
        try:
            for _, stream_sid, track, chunk, timestamp_ms, payload in batch:
                refused = session.refuse_media(stream_sid, track, chunk)
                if refused is not None:
                    self._refused(refused, refusals, call_sid)
                    continue
                tally[track] += 1
                if recording is not None:
                    recording.add(track, timestamp_ms, payload)
                items.append((call_sid, track, timestamp_ms, payload, arrived))
        finally:  # even if a bug stops the loop: what it accepted goes on
            if placement.moving is None and placement.lost is None:
                self._pump.enqueue(placement.host_name, placement.host, *items)
            else:
                for item in items:
                    self._hold(placement, item)

    def _arrived(self) -> float:
        """When the message being handled arrived: now, or for a polled read when it may have (its earliest)."""
        return self._poller.since if self._poller.reading else time.time()

    async def _receive(self, ws: WebSocket) -> str | bytes | _Closed:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return _Closed(int(message.get("code") or 1005))
        self._tally["messages"] += 1
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    def _flush_tally(self) -> None:
        dropped = self._pump.counters.frames_dropped
        self._metrics.frames_dropped.inc(dropped - self._dropped_seen)
        self._dropped_seen = dropped
        tally, self._tally = self._tally, dict.fromkeys(self._tally, 0)
        self._metrics.messages_received.inc(tally.pop("messages"))
        for track, count in tally.items():
            self._metrics.frames_received.labels(track).inc(count)

    def _check(
        self, session: StreamSession, data: str | bytes, refusals: Counter[str], call_sid: str | None
    ) -> Frame | None:
        frame = codec.decode(data, max_message_bytes=self._max_bytes)
        if not isinstance(frame, Rejected):
            frame = session.accept(frame)
        if isinstance(frame, Rejected):
            self._refused(frame, refusals, call_sid)
            return None
        return frame

    def _refused(self, refused: Rejected, refusals: Counter[str], call_sid: str | None) -> None:
        self._metrics.frames_rejected.labels(refused.reason.value).inc()
        refusals[refused.reason.value] += 1
        if refusals[refused.reason.value] <= LOGGED_PER_REASON:
            log.warning("call %s: refused a message: %s (%s)", call_sid or "-", refused.reason.value, refused.detail)

    async def _open(self, tenant: str, start: Start) -> _Placement | None:
        meta = CallMeta(
            tenant=tenant,
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            tracks=start.tracks,
            custom_parameters=redact_parameters(start.custom_parameters),
            started_at=utc_now(),
        )
        placed = await self._directory.assign.remote(start.call_sid, tenant)
        if placed is None:
            return None
        host_name, host = placed
        try:
            # A call's later stream numbers its turns on from its earlier streams' (one id per turn and call).
            first_turn = await run_in_threadpool(
                functools.partial(
                    self._store.stream_started, meta, owner=self._leases.owner, lease_until=self._leases.until()
                )
            )
        except BaseException:
            await self._directory.release.remote(start.call_sid)
            raise
        try:
            await asyncio.wait_for(host.open.remote(meta, (0, first_turn)), RAY_TIMEOUT_S)
        except BaseException:
            await self._directory.release.remote(start.call_sid, host_failed=True)
            await run_in_threadpool(
                functools.partial(
                    self._store.stream_ended,
                    meta.tenant,
                    meta.call_sid,
                    ended_at=utc_now(),
                    end_reason="error",
                    final={"error": "no call host could take the call"},
                )
            )
            raise
        self._metrics.live_calls.inc()
        log.info("call %s: stream %s started on %s (tenant %s)", meta.call_sid, meta.stream_sid, host_name, tenant)
        placement = self._live[meta.call_sid] = _Placement(meta, host_name, host, first_turn=first_turn)
        placement.recording = self._recorder.open(tenant, meta.call_sid, meta.stream_sid)
        return placement

    # --- failover: a call host died; its calls go on elsewhere ----------------------------------------------------
    def _host_failed(self, host_name: str, frames: list[PushItem]) -> None:
        """The pump could not push to ``host_name`` (it died): every call of this process on it is re-opened
        on another host, and these frames, like those arriving meanwhile, go there (on the event loop)."""
        for placement in self._live.values():
            if placement.host_name == host_name and placement.moving is None and placement.lost is None:
                placement.moving = asyncio.get_running_loop().create_task(self._move(placement, host_name))
        for item in frames:
            held = self._live.get(item[0])
            if held is not None:
                self._hold(held, item)
            else:
                self._pump.counters.frames_dropped += 1  # its call ended meanwhile: counted, never silent

    def _hold(self, placement: _Placement, item: PushItem) -> None:
        if placement.lost is not None:
            self._pump.counters.frames_dropped += 1
            self._metrics.frames_rejected.labels("call_host_lost").inc()
            return
        placement.held.append(item)

    async def _move(self, placement: _Placement, dead: str) -> None:
        meta = placement.meta
        at_ms = min((item[2] for item in placement.held), default=0)
        try:
            # A node lost takes several hosts with it, and the directory may not know yet (it notices within a
            # second): a host that fails to open the call is taken out too, and the next one tried.
            for attempt in range(MOVE_ATTEMPTS):
                await asyncio.wait_for(self._directory.release.remote(meta.call_sid, host_failed=True), RAY_TIMEOUT_S)
                placed = await asyncio.wait_for(
                    self._directory.assign.remote(meta.call_sid, meta.tenant), RAY_TIMEOUT_S
                )
                if placed is None:
                    raise RuntimeError("the directory still lists the call as live")
                host_name: str = placed[0]
                host: ActorHandle[Any] = placed[1]
                try:
                    seq, turn = self._events.next_numbers(meta.call_sid)
                    numbers = (seq, max(turn, placement.first_turn))
                    await asyncio.wait_for(host.open.remote(meta, numbers, moved=True), RAY_TIMEOUT_S)
                    break
                except Exception:
                    if attempt == MOVE_ATTEMPTS - 1:
                        raise
                    log.warning("call %s: host %s could not take it either; trying another", meta.call_sid, host_name)
                    await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        except Exception as exc:
            log.exception(
                "call %s: could not be moved off dead host %s; its later audio is refused", meta.call_sid, dead
            )
            placement.lost = f"its call host died and no other could take the call: {type(exc).__name__}: {exc}"
            self._pump.counters.frames_dropped += len(placement.held)
            placement.held = []
            return
        finally:
            placement.moving = None
        placement.host_name, placement.host = host_name, host
        placement.failovers.append(at_ms)
        self._metrics.failovers.inc()
        log.warning("call %s: host %s died; the call goes on on %s from %d ms", meta.call_sid, dead, host_name, at_ms)
        held, placement.held = placement.held, []
        for item in held:
            self._pump.enqueue(host_name, host, item)

    async def _finalize(self, placement: _Placement, end_reason: str) -> None:
        meta = placement.meta
        final: dict[str, Any] = {}
        host_failed = False
        try:
            # The last frames first. A flush can find the host dead and start the call's move: then the
            # frames go to the new host, which is flushed in turn before it finishes the call.
            for _ in range(MOVE_ATTEMPTS):
                if placement.moving is not None:
                    with contextlib.suppress(Exception):
                        await placement.moving
                if placement.lost is not None:
                    raise RuntimeError(placement.lost)
                await asyncio.wait_for(self._pump.flush(placement.host_name), RAY_TIMEOUT_S)
                if placement.moving is None:
                    break
            finish: Any = placement.host.finish.remote(meta.call_sid, end_reason)
            final = await asyncio.wait_for(finish, RAY_TIMEOUT_S) or {}
        except Exception:
            log.exception("call %s: its host failed while finalizing; recording what is known", meta.call_sid)
            final = {"error": "call host unavailable at finalization"}
            host_failed = True
        if placement.failovers and "error" not in final:
            final["error"] = (
                f"its call host died; the call went on on another host from stream time {placement.failovers[0]} ms: "
                "the audio the dead host held is missing from these figures (turns already stored are kept)"
            )
        if placement.lost is not None:
            final["error"] = placement.lost
        await self._recorder.close(placement.recording)
        # The last turns come with ``finish``; the turns store before the call is marked ended.
        self._events.dispatch(final.pop("events", []), final.pop("clips", []))
        await self._events.drain(meta.call_sid)
        self._events.forget(meta.call_sid)
        self._live.pop(meta.call_sid, None)
        try:
            await self._directory.release.remote(meta.call_sid, host_failed=host_failed)
        except Exception:
            log.exception("call %s: could not release it from the directory", meta.call_sid)
        try:
            await run_in_threadpool(
                self._store.stream_ended,
                meta.tenant,
                meta.call_sid,
                ended_at=utc_now(),
                end_reason=end_reason,
                final=final,
            )
        except Exception:
            log.exception("call %s: could not store how its stream ended", meta.call_sid)
        self._metrics.live_calls.dec()
        self._metrics.streams.labels(end_reason).inc()
        log.info("call %s: stream ended (%s), %.0f ms", meta.call_sid, end_reason, final.get("duration_ms", 0))

    async def _refuse(self, ws: WebSocket, reason: str, *, accepted: bool = True) -> None:
        """Close 1008 before any work; before ``accept`` this is an HTTP 403 to the handshake."""
        self._metrics.connections_rejected.labels(reason).inc()
        log.warning("refused a stream from %s: %s", ws.client.host if ws.client else "?", reason)
        await _close(ws, POLICY_VIOLATION, reason, accepted=accepted)

    async def _refuse_rate(self, ws: WebSocket, wait_s: float, *, accepted: bool = True) -> None:
        """Too many new streams for this key: HTTP 429 with ``Retry-After`` to the handshake, or close 1013
        (try again later) once the key came with ``start``."""
        self._metrics.connections_rejected.labels("rate_limited").inc()
        log.warning("refused a stream from %s: rate_limited", ws.client.host if ws.client else "?")
        if not accepted:
            retry = str(max(1, math.ceil(wait_s)))
            response = JSONResponse({"error": "too many new streams"}, status_code=429, headers={"Retry-After": retry})
            with contextlib.suppress(RuntimeError):  # a server without the denial-response extension: 403
                return await ws.send_denial_response(response)
            return await _close(ws, POLICY_VIOLATION, "rate_limited", accepted=False)
        await _close(ws, TRY_AGAIN_LATER, "rate_limited")

    def _log_refusals(self, call_sid: str | None, refusals: Counter[str]) -> None:
        if sum(refusals.values()) > LOGGED_PER_REASON:
            log.warning(
                "call %s: %d messages refused in all: %s",
                call_sid or "-",
                sum(refusals.values()),
                dict(refusals),
            )


async def _close(ws: WebSocket, code: int, reason: str = "", *, accepted: bool = True) -> None:
    """Close from our side unless the client already has (then there is nothing left to tell it)."""
    if accepted and ws.client_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(ClientDisconnected, WebSocketDisconnect, RuntimeError):
        await ws.close(code, reason=reason)
