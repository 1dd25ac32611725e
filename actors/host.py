"""CallHost: the Ray actor process that holds up to ``MISE_CALLS_PER_ACTOR`` live calls.

Each call is its own ``LiveCall`` (state, lifecycle) inside the host; the host is its mailbox. The API
process sends the audio of every call bound for one host in ONE push per tick (``push``), so the cost of a
call between processes is paid per host and tick, not per frame. An API process on the host's own node pushes
over a local socket (``actors/channel.py``, the address from ``channel``); one on another node through a Ray
call. With 1 call per host this is the plain "a Ray actor per call"; with N it multiplexes N calls in one
process.

After writing a push's audio, the host advances each touched call's analysis: deciding turns, pauses
and interruptions costs microseconds per frame and happens in the push. Measuring a decided turn does
NOT: it runs on the host's supervised measuring thread (``actors/measurer.py``), so a burst of turns
ending together never holds up the next push's audio. A call's events still leave in decision order
(``CallAnalyzer.release``).

Events leave through ``_publish``, by ONE path: queued per call for the reply to the next push that
carries (or polls) that call (``PushAck.events``), or for ``finish``. The API process streaming the call
stores them and hands them to the event hub for SSE (``api/events.py``), so the stored copy and the
live one are never lost apart. ``PushAck.awaiting`` names the calls with turns still being measured;
the pump polls for them even when no audio is pending, so a turn measured after the last audio still
leaves promptly. When the transcriber is on, each turn.ended's audio rides beside it (``PushAck.clips``,
never inside the event) to the API process's queue of turns waiting for words (``api/transcripts.py``).

Isolation: every per-call operation runs under its own ``try``; a call that raises is marked failed
and logged, and the host and its other calls go on (the measuring thread fails a call the same way).
``finish`` runs in its own concurrency group, so one call's end (measuring and scoring its last turns) never
holds up another call's audio. Torch-free by design: the emotion model is numpy (``models.live``; see tests).
"""

from __future__ import annotations

import logging
import os
import pickle
import resource
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import ray

from actors import allocator, tuning
from actors.channel import Address, ChannelServer
from actors.channel import available as channel_available
from actors.measurer import Measurer
from engine import costs, prosody
from engine.call import CallMeta, LiveCall
from engine.events import CALL_ENDED, CALL_STARTED, TURN_ENDED, CallEvent, iso_utc
from engine.g711 import decode_ulaw
from engine.pipeline import AnalysisOptions
from models.scoring import EmotionScoring

log = logging.getLogger("mise.host")

FINISH_CONCURRENCY = 4  # calls of one host that can be finishing at once, beside its pushes

# One entry of a push: (call_sid, track, timestamp_ms, mu-law payload, arrival time at the API, epoch s)
PushItem = tuple[str, str, int, bytes, float]
# An event as it leaves the host: (tenant, event JSON); the tenant is for routing, never shown.
Published = tuple[str, dict[str, Any]]
# A turn's audio for the transcriber (when the analysis keeps clips), beside its turn.ended:
# (call_sid, turn_id, stream ms of its first sample, int16 8 kHz PCM bytes)
Spoken = tuple[str, int, int, bytes]


@dataclass(frozen=True, slots=True)
class PushAck:
    applied: int  # frames handed to a live call
    orphaned: int  # frames for calls this host does not hold (already finished or never opened)
    failed: int  # frames for calls that raised
    events: list[Published] = field(default_factory=list)  # the pushed/polled calls' events since last time
    awaiting: list[str] = field(default_factory=list)  # of those calls, the ones with turns being measured
    clips: list[Spoken] = field(default_factory=list)  # the audio of those events' turns, for the transcriber


class CallHost:
    def __init__(
        self,
        *,
        ring_seconds: float = 60.0,
        latency_window: int = 200_000,
        analysis: AnalysisOptions | None = None,
        analyse: bool = True,
        measure_max_delay_s: float = 3.0,
        emotion: EmotionScoring | None = None,
        channel: bool = False,
    ) -> None:
        allocator.tune()  # numpy temporaries stay mapped between steps (actors/allocator.py)
        self._ring_seconds = ring_seconds
        self._analysis = analysis
        self._analyse = analyse  # False: an ingest-only host (audio into the rings, no turns or features)
        # The lock guards calls, outbox, turns waiting and counters against the measuring thread; that thread
        # holds it only to release and publish, never while measuring.
        self._lock = threading.Lock()
        self._outbox: dict[str, list[Published]] = {}  # per call, published and not yet handed out
        self._clips: dict[str, list[Spoken]] = {}  # per call, beside the outbox
        self._events = 0
        self._event_delay: deque[float] = deque(maxlen=latency_window)  # turn.ended: decision -> published (s)
        self._calls: dict[str, LiveCall] = {}
        self._failed: dict[str, str] = {}
        # Arrival-at-API to applied-in-actor delays (s), for the ingest benchmark and /metrics.
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._frames = 0
        self._pushes = 0
        self._measurer = Measurer(
            self._lock,
            live_calls=self._calls.values,
            release=self._release,
            fail=self._fail_if_held,
            emotion=emotion,
            analysis=analysis or AnalysisOptions(),
            max_delay_s=measure_max_delay_s,
        )
        tuning.settle_heap()
        # What measuring needs (scipy.signal, ~1.5 s of import), imported meanwhile: the actor is created (and
        # the directory that created it goes on) at once, and ``ready`` answers once it is done, before any call.
        self._warm = threading.Thread(target=prosody.warm, name="mise-warm", daemon=True)
        self._warm.start()
        # Pushes from API processes on this node come over a local socket rather than a Ray call (actors/channel.py).
        self._channel = (
            ChannelServer(self._channel_push, node=ray.get_runtime_context().get_node_id())
            if channel and channel_available()
            else None
        )

    def ready(self) -> int:
        self._warm.join()
        return os.getpid()

    def cpu_s(self) -> float:
        """CPU seconds this host's process has used (the directory places calls by it)."""
        return time.process_time()

    def open(self, meta: CallMeta, first: tuple[int, int] = (0, 0), *, moved: bool = False) -> None:
        """Hold a new live call, numbering its events and turns from ``first`` = (event sequence, turn id):
        a call's next stream numbers its turns on from the turns of its earlier streams. ``moved``: the call
        goes on here after its host died (failover), so no second ``call.started`` is sent."""
        if meta.call_sid in self._calls:
            raise ValueError(f"call {meta.call_sid} is already open on this host")
        self._failed.pop(meta.call_sid, None)
        call = LiveCall(
            meta,
            ring_seconds=self._ring_seconds,
            analysis=self._analysis,
            measure_inline=False,
            scores=self._measurer.scoring,
            speaker_scorer=self._measurer.speaker_scorer,
        )
        started = {
            "stream_sid": meta.stream_sid,
            "account_sid": meta.account_sid,
            "tracks": list(meta.tracks),
            "custom_parameters": meta.custom_parameters,
            "started_at": meta.started_at,
        }
        with self._lock:
            self._calls[meta.call_sid] = call
            call.analyzer.continue_from(*first)
            if not moved:
                call.analyzer.note(CALL_STARTED, started)
            self._publish(call, call.analyzer.release())

    def channel(self) -> Address | None:
        """Where API processes on this host's node can push without Ray (None: through Ray only)."""
        return None if self._channel is None else self._channel.address

    def _channel_push(self, request: bytes) -> bytes:
        items, poll = pickle.loads(request)  # from an API process that had the channel's token from Ray
        return pickle.dumps(self.push(items, poll), protocol=pickle.HIGHEST_PROTOCOL)

    def push(self, items: list[PushItem] | bytes, poll: list[str] | None = None) -> PushAck:
        """Write ``items`` (or the pickled list of them, as ``AudioPump`` sends it); reply with the events
        of their calls and of the ``poll`` calls."""
        batch: list[PushItem] = pickle.loads(items) if isinstance(items, bytes) else items  # our own API's
        with self._lock:
            return self._push(batch, poll or [])

    def _push(self, items: list[PushItem], poll: list[str]) -> PushAck:
        applied = orphaned = failed = 0
        now = time.time()
        touched: dict[str, LiveCall] = {}
        with costs.stage("decode_ring"):
            # One table lookup for the whole push, then a view per frame: decoding frame by frame costs
            # a numpy call each.
            pcm = decode_ulaw(b"".join([item[3] for item in items]))
            at = 0
            for call_sid, track, timestamp_ms, payload, arrived in items:
                samples, at = pcm[at : at + len(payload)], at + len(payload)
                call = self._calls.get(call_sid)
                if call is None:
                    if call_sid in self._failed:
                        failed += 1
                    else:
                        orphaned += 1
                    continue
                try:
                    call.write_pcm(track, timestamp_ms, samples)
                except Exception as exc:
                    self._fail(call_sid, exc)
                    failed += 1
                    continue
                applied += 1
                touched[call_sid] = call
                self._latency.append(now - arrived)
        with costs.stage("vad_turns"):
            for call_sid, call in touched.items() if self._analyse else ():
                try:
                    self._publish(call, call.advance())
                    self._measurer.schedule(call)
                except Exception as exc:
                    self._fail(call_sid, exc)
        self._frames += applied
        self._pushes += 1
        events: list[Published] = []
        awaiting: list[str] = []
        clips: list[Spoken] = []
        for call_sid in dict.fromkeys([*touched, *poll]):
            events += self._outbox.pop(call_sid, [])
            clips += self._clips.pop(call_sid, [])
            if self._measurer.waiting(call_sid):
                awaiting.append(call_sid)
        return PushAck(applied, orphaned, failed, events, awaiting, clips)

    @ray.method(concurrency_group="finish")
    def finish(self, call_sid: str, end_reason: str = "") -> dict[str, Any] | None:
        """Close a call: its final figures, summary and last events; None if this host never held it.
        Its turns not yet measured are measured here (or awaited, if the thread has one in hand, for at
        most a turn's measuring and scoring time). On a Ray host this runs in its own concurrency group
        (``FINISH_CONCURRENCY`` threads): a call's end never holds up the pushes of the host's other
        calls. The pump awaits every push of a call before its ``finish``, so none is overtaken."""
        with self._lock:
            call = self._calls.pop(call_sid, None)
            if call is None:
                error = self._failed.pop(call_sid, None)
                return {"error": error} if error else None
            try:
                if self._analyse:
                    self._publish(call, call.finish())
                    self._measurer.schedule(call, queue_them=False)
                analysis_error = None
            except Exception as exc:  # the audio figures still stand; say what the analysis could not do
                log.exception("call %s: analysis failed at the end of the stream", call_sid)
                analysis_error = f"{type(exc).__name__}: {exc}"
            jobs = self._measurer.take(call_sid)
        self._measurer.finish_turns(jobs)
        with self._lock:
            if analysis_error is None:
                self._publish(call, call.analyzer.release())
            self._measurer.ended(jobs)
            figures = self._figures(call)
            if call.analyzer.unreleased == 0:  # the last event of the call
                call.analyzer.note(CALL_ENDED, {"end_reason": end_reason, **figures})
                self._publish(call, call.analyzer.release())
            final = {**figures, "events": self._outbox.pop(call_sid, []), "clips": self._clips.pop(call_sid, [])}
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
        now = time.monotonic()
        for event in events:
            if event.type == TURN_ENDED:
                decided = self._measurer.decided_at(meta.call_sid, event.data["turn_id"])
                if decided is not None:
                    self._event_delay.append(now - decided)
                if event.clip is not None:
                    first_ms, pcm = event.clip
                    clip = (meta.call_sid, int(event.data["turn_id"]), first_ms, pcm.tobytes())
                    self._clips.setdefault(meta.call_sid, []).append(clip)
        published = [(meta.tenant, event.to_json(meta.call_sid, meta.stream_sid, at)) for event in events]
        self._outbox.setdefault(meta.call_sid, []).extend(published)
        self._events += len(events)

    def audio(self, call_sid: str, track: str) -> npt.NDArray[np.int16] | None:
        call = self._calls.get(call_sid)
        return None if call is None else call.audio(track)

    def stats(self, *, reset_latency: bool = False) -> dict[str, Any]:
        with self._lock:
            lat = np.fromiter(self._latency, dtype=np.float64)
            delay = np.fromiter(self._event_delay, dtype=np.float64)
            if reset_latency:
                self._latency.clear()
                self._event_delay.clear()
            backlog = self._measurer.backlog()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "calls": len(self._calls),
            "frames": self._frames,
            "pushes": self._pushes,
            "events": self._events,
            "latency_count": int(lat.size),
            "latency_p50_ms": float(np.percentile(lat, 50) * 1000) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95) * 1000) if lat.size else None,
            "latency_max_ms": float(lat.max() * 1000) if lat.size else None,
            "turns_measured": self._measurer.measured,
            "turns_unmeasured": self._measurer.skipped,  # sent without features: the host was over capacity
            "turns_unscored": self._measurer.unscored,  # no emotion scores: skipped for overload, or the model failed
            "measure_errors": self._measurer.errors,
            "measure_backlog": backlog,
            "turn_event_count": int(delay.size),
            "turn_event_p50_ms": float(np.percentile(delay, 50) * 1000) if delay.size else None,
            "turn_event_p95_ms": float(np.percentile(delay, 95) * 1000) if delay.size else None,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "stages": costs.spent(),  # CPU s per analysis stage (engine.costs); the rest is Ray and events
            "rss_bytes": _rss_bytes(),
        }

    # --- what the measuring thread calls back (actors/measurer.py), the lock held --------------------------------
    def _release(self, call_sid: str) -> None:
        call = self._calls.get(call_sid)
        if call is not None:
            self._publish(call, call.analyzer.release())

    def _fail_if_held(self, call_sid: str, exc: Exception) -> bool:
        if call_sid not in self._calls:
            return False
        self._fail(call_sid, exc)
        return True

    def _fail(self, call_sid: str, exc: Exception) -> None:
        """Drop a call that raised (lock held); its other calls go on."""
        log.exception("call %s failed on this host; its other calls go on", call_sid, exc_info=exc)
        self._calls.pop(call_sid, None)
        self._outbox.pop(call_sid, None)  # a failed call's finish reports its error, not half its events
        self._clips.pop(call_sid, None)
        self._measurer.forget(call_sid)
        self._failed[call_sid] = f"{type(exc).__name__}: {exc}"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
