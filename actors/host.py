"""CallHost: the Ray actor process that holds up to ``MISE_CALLS_PER_ACTOR`` live calls.

Each call is its own ``LiveCall`` (state, lifecycle) inside the host; the host is its mailbox. The API
process sends the audio of every call bound for one host in ONE Ray call per tick (``push``), so Ray's
per-call cost (~2.5 ms of CPU) is paid per host and tick, not per frame. With 1 call per host this is
the plain "a Ray actor per call"; with N it multiplexes N calls in one process.

After writing a push's audio, the host advances each touched call's analysis and hands the events it
decided to ``_publish``: the ONE seam through which events leave the actor. Today it queues them into
the reply of the push (``PushAck.events``) or of ``finish``, so they reach the API process that sent
the audio within the push round trip; an event hub subscribes here.

Isolation: every per-call operation runs under its own ``try``; a call that raises is marked failed
and logged, and the host and its other calls go on. Torch-free by design (see tests).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.call import CallMeta, LiveCall
from engine.events import CallEvent, iso_utc
from engine.pipeline import AnalysisOptions

log = logging.getLogger("mise.host")

# One entry of a push: (call_sid, track, timestamp_ms, mu-law payload, arrival time at the API, epoch s)
PushItem = tuple[str, str, int, bytes, float]
# An event as it leaves the host: (tenant, event JSON); the tenant is for routing, never shown.
Published = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PushAck:
    applied: int  # frames handed to a live call
    orphaned: int  # frames for calls this host does not hold (already finished or never opened)
    failed: int  # frames for calls that raised
    events: list[Published] = field(default_factory=list)  # what the calls decided during this push


class CallHost:
    def __init__(
        self,
        *,
        ring_seconds: float = 60.0,
        latency_window: int = 200_000,
        analysis: AnalysisOptions | None = None,
    ) -> None:
        self._ring_seconds = ring_seconds
        self._analysis = analysis
        self._outbox: list[Published] = []
        self._events = 0
        self._calls: dict[str, LiveCall] = {}
        self._failed: dict[str, str] = {}
        # Arrival-at-API to applied-in-actor delays (s), for the ingest benchmark and /metrics.
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._frames = 0
        self._pushes = 0

    def ready(self) -> int:
        return os.getpid()

    def open(self, meta: CallMeta) -> None:
        if meta.call_sid in self._calls:
            raise ValueError(f"call {meta.call_sid} is already open on this host")
        self._failed.pop(meta.call_sid, None)
        self._calls[meta.call_sid] = LiveCall(meta, ring_seconds=self._ring_seconds, analysis=self._analysis)

    def push(self, items: list[PushItem]) -> PushAck:
        applied = orphaned = failed = 0
        now = time.time()
        touched: dict[str, LiveCall] = {}
        for call_sid, track, timestamp_ms, payload, arrived in items:
            call = self._calls.get(call_sid)
            if call is None:
                if call_sid in self._failed:
                    failed += 1
                else:
                    orphaned += 1
                continue
            try:
                call.write(track, timestamp_ms, payload)
            except Exception as exc:
                self._fail(call_sid, exc)
                failed += 1
                continue
            applied += 1
            touched[call_sid] = call
            self._latency.append(now - arrived)
        for call_sid, call in touched.items():
            try:
                self._publish(call, call.advance())
            except Exception as exc:
                self._fail(call_sid, exc)
        self._frames += applied
        self._pushes += 1
        events, self._outbox = self._outbox, []
        return PushAck(applied, orphaned, failed, events)

    def finish(self, call_sid: str) -> dict[str, Any] | None:
        """Close a call: its final figures, summary and last events; None if this host never held it."""
        call = self._calls.pop(call_sid, None)
        if call is None:
            error = self._failed.pop(call_sid, None)
            return {"error": error} if error else None
        try:
            self._publish(call, call.finish())
            analysis_error = None
        except Exception as exc:  # the audio figures still stand; say what the analysis could not do
            log.exception("call %s: analysis failed at the end of the stream", call_sid)
            analysis_error = f"{type(exc).__name__}: {exc}"
        events, self._outbox = self._outbox, []
        final = {**self._figures(call), "events": events}
        if analysis_error:
            final["error"] = f"analysis failed: {analysis_error}"
        return final

    def snapshot(self, call_sid: str) -> dict[str, Any] | None:
        call = self._calls.get(call_sid)
        return None if call is None else self._figures(call)

    @staticmethod
    def _figures(call: LiveCall) -> dict[str, Any]:
        return {"tracks": call.track_stats(), "duration_ms": call.duration_ms, "summary": call.summary()}

    def _publish(self, call: LiveCall, events: list[CallEvent]) -> None:
        """The one way events leave the actor."""
        if not events:
            return
        at = iso_utc(time.time())
        meta = call.meta
        self._outbox.extend(
            (meta.tenant, {**event.to_json(meta.call_sid, at), "stream_sid": meta.stream_sid}) for event in events
        )
        self._events += len(events)

    def audio(self, call_sid: str, track: str) -> npt.NDArray[np.int16] | None:
        call = self._calls.get(call_sid)
        return None if call is None else call.audio(track)

    def stats(self, *, reset_latency: bool = False) -> dict[str, Any]:
        lat = np.fromiter(self._latency, dtype=np.float64)
        if reset_latency:
            self._latency.clear()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "calls": len(self._calls),
            "frames": self._frames,
            "pushes": self._pushes,
            "events": self._events,
            "latency_count": int(lat.size),
            "latency_p50_ms": float(np.percentile(lat, 50) * 1000) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95) * 1000) if lat.size else None,
            "latency_max_ms": float(lat.max() * 1000) if lat.size else None,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_bytes": _rss_bytes(),
        }

    def _fail(self, call_sid: str, exc: Exception) -> None:
        log.exception("call %s failed on this host; its other calls go on", call_sid, exc_info=exc)
        self._calls.pop(call_sid, None)
        self._failed[call_sid] = f"{type(exc).__name__}: {exc}"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
