"""``POST /v1/calls/import``: one recorded call in, indexed as a finished call of the tenant, through the
same engine as a live one: turns, features, emotion, words, recording.

The body is the recording: one file soundfile reads, one channel (the caller) or two (caller, then agent,
as Twilio's dual-channel recordings are; ``swap=1`` if the agent comes first). 8 kHz mu-law WAVs are kept
byte for byte; anything else is mixed per channel, resampled to 8 kHz and mu-law encoded, as the phone
network would have delivered it. Query: ``call_sid`` (default: one derived from the audio, so the same
recording imports once), ``from``, ``to``, ``direction``, ``started_at`` (ISO 8601 UTC).

The analysis runs as a Ray task (``actors/importer.py``) wherever the cluster has a free CPU; its events
take the live path from there (``EventRouter``: stored, indexed, sent, clips to the transcriber), the
recording is written like a live one's, and the call is marked ended with ``end_reason: "imported"``
last. So an import cut short (a crash, a kill) is redone by the next upload of the same call, and one
that finished answers 409: re-running an import never duplicates a call.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from typing import Any

import ray
from ray import ObjectRef
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.importer import analyse_recording
from api.auth import KeyRing, key_from_request
from api.calls import error_response
from api.erasure import Erasure
from api.events import EventRouter
from api.leases import Leases
from api.metrics import Metrics
from api.recorder import Recorder
from api.simulate import to_ulaw, ulaw_wav_channels
from api.transcripts import Transcriber
from engine.call import CallMeta
from engine.events import TURN_ENDED, iso_utc
from engine.pipeline import AnalysisOptions
from engine.store.base import CallStore, StatusCallback
from models.scoring import EmotionScoring

log = logging.getLogger("mise.import")

IMPORTED = "imported"  # the end_reason of an imported call, written last


class BadRecording(ValueError):
    pass


def ulaw_tracks(data: bytes, *, swap: bool = False) -> tuple[bytes, bytes | None]:
    """A recording's tracks as 8 kHz mu-law: (caller, agent or None)."""
    channels = ulaw_wav_channels(data)
    if channels is None:
        import soundfile

        try:
            audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises its own error types (and RuntimeError) for what it cannot read
            raise BadRecording(f"not a recording soundfile can read: {exc}") from None
        if audio.shape[1] > 2:
            raise BadRecording(f"{audio.shape[1]} channels: give one (the caller) or two (caller, agent)")
        channels = [to_ulaw(audio[:, k], int(rate)) for k in range(audio.shape[1])]
    if not channels or not channels[0]:
        raise BadRecording("the recording holds no audio")
    if swap and len(channels) == 2:
        channels.reverse()
    return channels[0], channels[1] if len(channels) > 1 else None


class Importer:
    def __init__(
        self,
        *,
        keys: KeyRing,
        store: CallStore,
        events: EventRouter,
        recorder: Recorder,
        transcriber: Transcriber | None,
        erasure: Erasure,
        leases: Leases,
        metrics: Metrics,
        options: AnalysisOptions,
        emotion: EmotionScoring | None,
    ) -> None:
        self._keys = keys
        self._store = store
        self._events = events
        self._recorder = recorder
        self._transcriber = transcriber
        self._erasure = erasure
        self._leases = leases
        self._metrics = metrics
        self._options = options
        # The emotion model (numpy, ~1 MB) put in Ray's object store once: each import's task reads it from there.
        self._emotion: ObjectRef[EmotionScoring | None] | None = ray.put(emotion) if emotion is not None else None
        self._busy: set[tuple[str, str]] = set()

    async def __call__(self, request: Request) -> Response:
        response = await self._import(request)
        self._metrics.imports.labels(str(response.status_code)).inc()
        return response

    async def _import(self, request: Request) -> Response:
        tenant = self._keys.tenant_for(key_from_request(request))
        if tenant is None:
            return error_response(401, "missing or unknown API key")
        q = request.query_params
        body = await request.body()
        try:
            inbound, outbound = await run_in_threadpool(ulaw_tracks, body, swap=q.get("swap") in ("1", "true"))
        except BadRecording as exc:
            return error_response(400, str(exc))
        call_sid = q.get("call_sid") or "CA" + hashlib.sha256(body).hexdigest()[:32]
        if not 1 <= len(call_sid) <= 64 or not call_sid.isprintable():
            return error_response(400, "call_sid must be 1-64 printable characters")
        given = q.get("started_at")
        started_at = _utc(given) if given else iso_utc(time.time())
        if started_at is None:
            return error_response(400, "started_at must be ISO 8601, e.g. 2026-11-02T09:30:00Z")
        key = (tenant, call_sid)
        if key in self._busy:
            return error_response(409, "this call is being imported now")
        self._busy.add(key)
        try:
            existing = await run_in_threadpool(self._store.get, tenant, call_sid)
            if existing is not None:
                if existing["end_reason"] == IMPORTED:
                    return JSONResponse({"error": "already imported", "call_sid": call_sid}, status_code=409)
                if not existing["custom_parameters"].get("imported") or existing["live"]:
                    return error_response(409, "a call with this call_sid exists (not an import)")
                # An import cut short: what it left is erased, and the call imported again.
                await self._erasure.erase(tenant, call_sid, reason="reimport")
            result = await self._run(tenant, call_sid, inbound, outbound, started_at, q)
        finally:
            self._busy.discard(key)
        return JSONResponse(result, status_code=201)

    async def _run(
        self, tenant: str, call_sid: str, inbound: bytes, outbound: bytes | None, started_at: str, q: Any
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        stream_sid = "MZ" + hashlib.sha256(f"{tenant}:{call_sid}".encode()).hexdigest()[:32]
        meta = CallMeta(
            tenant=tenant,
            call_sid=call_sid,
            stream_sid=stream_sid,
            account_sid="",
            tracks=("inbound", "outbound") if outbound is not None else ("inbound",),
            custom_parameters={"imported": "true"},
            started_at=started_at,
        )
        fields = {
            k: v for k, v in (("From", q.get("from")), ("To", q.get("to")), ("Direction", q.get("direction"))) if v
        }
        if fields:
            callback = StatusCallback(call_sid, "", "completed", started_at, 0, "import", fields)
            await run_in_threadpool(self._store.status_callback, tenant, callback)
        await run_in_threadpool(
            lambda: self._store.stream_started(meta, owner=self._leases.owner, lease_until=self._leases.until())
        )
        analysed = await analyse_recording.remote(inbound, outbound, self._options, self._emotion)
        if self._transcriber is not None:
            await self._transcriber.until_idle()  # an import's turns queue behind nothing: none is skipped for lag
        at = iso_utc(time.time())
        published = [(tenant, event.to_json(call_sid, stream_sid, at)) for event in analysed["events"]]
        clips = [
            (call_sid, int(e.data["turn_id"]), e.clip[0], e.clip[1].tobytes())
            for e in analysed["events"]
            if e.type == TURN_ENDED and e.clip is not None
        ]
        self._events.dispatch(published, clips)
        await self._events.drain(call_sid)
        self._events.forget(call_sid)
        tracks = {"inbound": inbound} | ({"outbound": outbound} if outbound is not None else {})
        if self._recorder.records(tenant):
            await self._recorder.save(tenant, call_sid, stream_sid, tracks)
        final = {k: analysed[k] for k in ("tracks", "duration_ms", "summary")}
        await run_in_threadpool(
            lambda: self._store.stream_ended(tenant, call_sid, ended_at=at, end_reason=IMPORTED, final=final)
        )
        turns = sum(1 for e in analysed["events"] if e.type == TURN_ENDED)
        seconds = time.perf_counter() - t0
        log.info(
            "call %s imported for tenant %s: %.1f s of audio, %d turns, in %.1f s",
            call_sid,
            tenant,
            analysed["duration_ms"] / 1000,
            turns,
            seconds,
        )
        return {
            "call_sid": call_sid,
            "turns": turns,
            "duration_ms": analysed["duration_ms"],
            "seconds": round(seconds, 2),
        }


def _utc(text: str) -> str | None:
    """An ISO 8601 time as the ``*_at`` fields write it (UTC, milliseconds, ``Z``); a time without a zone is
    UTC. None if it is no time."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return iso_utc((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
