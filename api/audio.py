"""``GET /v1/calls/{call_sid}/audio``: a call's recording as WAV, a clip of it, or any byte range of either.

``track``: ``inbound`` (the caller), ``outbound`` (the agent) or ``both`` (default: stereo, caller left).
``start_ms`` / ``end_ms``: a clip, on the stream's clock (the turns' ``start_ms`` and ``end_ms``).
``stream_sid``: which stream of a call streamed more than once (default: its latest). A live call's
recording plays up to what has been written (at most ``flush_s`` behind).

The WAV (16-bit PCM at 8 kHz, decoded from the stored mu-law) is never built whole: its size follows
from the recording's, and a ``Range`` request decodes just the samples its bytes cover, so a player
seeks in an hour-long call by reading a few kilobytes.

Redaction: a span a turn's transcript redacted (a card number read out) is silence in what is served,
whether or not the stored file has been muted yet; with redaction on, a turn whose words are still
``pending`` is silent too, until they are known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.auth import KeyRing
from api.calls import error_response, owned_call
from api.metrics import Metrics
from api.recorder import Recorder
from engine.g711 import SAMPLES_PER_MS
from engine.recording import WAV_HEADER_BYTES, ByteRange, parse_range, pcm_frames, sample_span, wav_header
from engine.store.base import CallStore

log = logging.getLogger("mise.audio")

TRACKS = {"inbound": ["inbound"], "outbound": ["outbound"], "both": ["inbound", "outbound"]}
CHUNK_FRAMES = 80_000  # 10 s decoded per step of a long response
Mutes = dict[str, list[tuple[int, int]]]  # track -> [start, end) sample spans to silence


def mutes_of(turns: list[dict[str, Any]], stream_sid: str, *, pending_too: bool) -> Mutes:
    """The spans to silence on each track: every redaction of the stream's turns, and (``pending_too``)
    every turn whose words are not known yet."""
    out: Mutes = {}
    for turn in turns:
        if (turn.get("stream_sid") or stream_sid) != stream_sid:
            continue
        spans = out.setdefault(str(turn.get("track")), [])
        for r in turn.get("redactions") or []:
            spans.append((int(r["start_ms"]) * SAMPLES_PER_MS, int(r["end_ms"]) * SAMPLES_PER_MS))
        if pending_too and turn.get("transcript") == "pending":
            spans.append((int(turn["start_ms"]) * SAMPLES_PER_MS, int(turn["end_ms"]) * SAMPLES_PER_MS))
    return {track: spans for track, spans in out.items() if spans}


class CallAudio:
    def __init__(self, *, keys: KeyRing, store: CallStore, recorder: Recorder, metrics: Metrics, redact: bool) -> None:
        self._keys = keys
        self._store = store
        self._recorder = recorder
        self._metrics = metrics
        self._redact = redact

    async def __call__(self, request: Request) -> Response:
        response = await self._get(request)
        self._metrics.audio_requests.labels(str(response.status_code)).inc()
        return response

    async def _get(self, request: Request) -> Response:
        found = await owned_call(request, self._keys, self._store)
        if isinstance(found, Response):
            return found
        tenant, call_sid, call = found
        q = request.query_params
        wanted = TRACKS.get(q.get("track", "both"))
        if wanted is None:
            return error_response(400, "track must be inbound, outbound or both")
        try:
            start_ms = _ms(q, "start_ms")
            end_ms = _ms(q, "end_ms")
        except ValueError as exc:
            return error_response(400, str(exc))
        stream_sid = q.get("stream_sid") or call.get("stream_sid")
        keys = await run_in_threadpool(self._recorder.tracks, tenant, call_sid, stream_sid or "") if stream_sid else {}
        if not any(track in keys for track in wanted):
            return error_response(404, "no recording of this call (not recorded for its tenant, or erased)")
        sizes = await run_in_threadpool(lambda: [self._recorder.size(keys[t]) or 0 if t in keys else 0 for t in wanted])
        total = max(sizes)
        start = min(total, (start_ms or 0) * SAMPLES_PER_MS)
        end = total if end_ms is None else min(total, end_ms * SAMPLES_PER_MS)
        if end_ms is not None and start_ms is not None and end_ms <= start_ms:
            return error_response(400, "end_ms must be after start_ms")
        frames = max(0, end - start)
        channels = len(wanted)
        size = WAV_HEADER_BYTES + frames * channels * 2
        try:
            byte_range = parse_range(request.headers.get("range"), size)
        except ValueError as exc:
            return Response(
                str(exc), status_code=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
            )
        turns = await run_in_threadpool(self._store.turns, tenant, call_sid) if self._redact else []
        mutes = mutes_of(turns, str(stream_sid), pending_too=True)
        span = byte_range or ByteRange(0, size)
        header = wav_header(frames=frames, channels=channels)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(span.end - span.start),
            "Cache-Control": "no-store",  # a live call's recording grows; a muted span may change
            "X-Mise-Stream-Sid": str(stream_sid),
        }
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {span.start}-{span.end - 1}/{size}"
        track_keys = [keys.get(t) for t in wanted]
        body = self._body(header, span, start, frames, channels, track_keys, [mutes.get(t, []) for t in wanted])
        return StreamingResponse(body, status_code=206 if byte_range else 200, media_type="audio/wav", headers=headers)

    async def _body(
        self,
        header: bytes,
        span: ByteRange,
        start: int,
        frames: int,
        channels: int,
        keys: list[str | None],
        mutes: list[list[tuple[int, int]]],
    ) -> AsyncIterator[bytes]:
        if span.start < WAV_HEADER_BYTES:
            yield header[span.start : min(span.end, WAV_HEADER_BYTES)]
        lo, hi = sample_span(span, channels)
        hi = min(hi, frames)
        frame_bytes = channels * 2
        for at in range(lo, hi, CHUNK_FRAMES):
            upto = min(hi, at + CHUNK_FRAMES)
            pcm = await asyncio.to_thread(self._pcm, start + at, start + upto, keys, mutes)
            data = pcm.tobytes()
            first = WAV_HEADER_BYTES + at * frame_bytes  # the WAV byte offset of data[0]
            yield data[max(0, span.start - first) : max(0, span.end - first)]

    def _pcm(self, lo: int, hi: int, keys: list[str | None], mutes: list[list[tuple[int, int]]]) -> np.ndarray:
        """Sample frames [lo, hi) of the recording (absolute sample indexes), muted where asked."""
        tracks = [self._recorder.read(key, lo, hi) if key else None for key in keys]
        pcm = pcm_frames(tracks, hi - lo)
        for channel, spans in enumerate(mutes):
            for a, b in spans:
                a, b = max(a, lo), min(b, hi)
                if a < b:
                    pcm[a - lo : b - lo, channel] = 0
        return pcm


def _ms(q: Any, name: str) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"{name} must be a number of milliseconds") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value
