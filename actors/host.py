"""CallHost: the Ray actor process that holds up to ``MISE_CALLS_PER_ACTOR`` live calls.

Each call is its own ``LiveCall`` (state, lifecycle) inside the host; the host is its mailbox. The API
process sends the audio of every call bound for one host in ONE Ray call per tick (``push``), so Ray's
per-call cost (~2.5 ms of CPU) is paid per host and tick, not per frame. With 1 call per host this is
the plain "a Ray actor per call"; with N it multiplexes N calls in one process.

After writing a push's audio, the host advances each touched call's analysis: deciding turns, pauses
and interruptions costs microseconds per frame and happens in the push. Measuring a decided turn
(prosody: milliseconds per second of turn) does NOT: it runs on the host's measuring thread, so a
burst of turns ending together never holds up the next push's audio. Between turns the same thread
analyses the pitch frames of the turns still in progress (``engine.pitch.PitchStream``), so what is
left when a turn ends is a few milliseconds. A call's events still leave in
decision order (``CallAnalyzer.release``). Under overload a turn that has waited longer than
``measure_max_delay_s`` goes out without features (``features_skipped: "overload"``), counted, so
the backlog and its memory stay bounded and nothing else is held up.

Events leave through ``_publish``: the ONE seam through which events leave the actor; an event hub
subscribes here. Today it queues them per call for the reply to the next push that carries (or polls)
that call (``PushAck.events``), or to ``finish``: so a call's events reach the API process streaming
it. ``PushAck.awaiting`` names the calls with turns still being measured; the pump polls for them
even when no audio is pending, so a turn measured after the last audio still leaves promptly.

Isolation: every per-call operation runs under its own ``try``; a call that raises is marked failed
and logged, and the host and its other calls go on. The measuring thread is supervised the same way
(``measure_errors`` in ``stats``): whatever it catches fails that turn or call, never the thread.
Nothing a push depends on waits without a bound: the measuring thread never waits for the emotion
scorer (a turn whose scores are on their way is put back in its queue when they arrive, and goes out
unscored, counted, after ``score_timeout_s``), and ``finish`` runs in its own concurrency group, so
one call's end (measuring its last turns, waiting for their scores) never holds up another call's
audio. Torch-free by design (see tests).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pickle
import queue
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray import ObjectRef
from ray.actor import ActorHandle

from actors import tuning
from actors.hub import HUB_NAME
from engine import costs
from engine.call import CallMeta, LiveCall
from engine.events import CALL_ENDED, CALL_STARTED, TURN_ENDED, CallEvent, iso_utc
from engine.g711 import decode_ulaw
from engine.pipeline import AnalysisOptions, PendingTurn, TurnScorer
from models.caller import CallerScorer

log = logging.getLogger("mise.host")

FINISH_CONCURRENCY = 4  # calls of one host that can be finishing at once, beside its pushes
HUB_LOOKUP_S = 2.0  # how often an idle measuring thread checks that its hub is still the named one
HUB_EVERY_S = 0.1  # events reach the hub (SSE) in batches at most this far apart
CATCH_UP_EVERY_S = 0.1  # an idle measuring thread looks for turns in progress this often
CATCH_UP_FRAMES = 100  # ... and analyses a track's pitch frames once this many (10 ms each) are waiting

# One entry of a push: (call_sid, track, timestamp_ms, mu-law payload, arrival time at the API, epoch s)
PushItem = tuple[str, str, int, bytes, float]
# An event as it leaves the host: (tenant, event JSON); the tenant is for routing, never shown.
Published = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PushAck:
    applied: int  # frames handed to a live call
    orphaned: int  # frames for calls this host does not hold (already finished or never opened)
    failed: int  # frames for calls that raised
    events: list[Published] = field(default_factory=list)  # the pushed/polled calls' events since last time
    awaiting: list[str] = field(default_factory=list)  # of those calls, the ones with turns being measured


@dataclass(eq=False)
class _Measure:
    """One decided turn waiting for the measuring thread (or for its call's ``finish``)."""

    call_sid: str
    pending: PendingTurn
    decided: float  # time.monotonic() at the decision
    claimed: bool = False  # taken by the thread or by finish; guarded by the host lock
    done: threading.Event = field(default_factory=threading.Event)
    scores: ObjectRef[list[dict[str, Any] | None]] | None = None  # the emotion model's answer, on its way
    measured_at: float | None = None  # time.monotonic() once its features are measured (or skipped)

    @property
    def key(self) -> tuple[str, int]:
        return self.call_sid, self.pending.turn_id


class CallHost:
    def __init__(
        self,
        *,
        ring_seconds: float = 60.0,
        latency_window: int = 200_000,
        analysis: AnalysisOptions | None = None,
        analyse: bool = True,
        measure_max_delay_s: float = 3.0,
        hub: ActorHandle[Any] | None = None,
        scorer: ActorHandle[Any] | None = None,
        score_timeout_s: float = 10.0,
    ) -> None:
        self._ring_seconds = ring_seconds
        self._analysis = analysis
        self._analyse = analyse  # False: an ingest-only host (audio into the rings, no turns or features)
        self._max_delay = measure_max_delay_s
        # The lock guards calls, outbox, jobs and counters against the measuring thread; that thread
        # holds it only to release and publish, never while measuring.
        self._lock = threading.Lock()
        self._outbox: dict[str, list[Published]] = {}  # per call, published and not yet handed out
        self._hub = hub  # the EventHub (actors/hub.py), when there is one
        self._scorer = scorer  # the EmotionScorer (actors/scorer.py), when there is one
        self._score_timeout = score_timeout_s
        self._unscored = 0
        self._measure_errors = 0  # exceptions the measuring thread caught (each failed a turn or a call)
        self._scoring: dict[tuple[str, int], _Measure] = {}  # measured turns waiting for their scores
        self._speaker_scorer = self._speaker_scoring(scorer, analysis or AnalysisOptions())
        self._to_hub: list[Published] = []
        self._hub_sent = 0.0  # time.monotonic() of the last hand-over to the hub
        self._hub_checked = time.monotonic()  # ... and of the last look for it by name
        self._events = 0
        self._jobs: dict[str, deque[_Measure]] = {}  # per call, turns not yet measured, in decision order
        self._queue: queue.SimpleQueue[_Measure] = queue.SimpleQueue()
        self._decided_at: dict[tuple[str, int], float] = {}  # (call, turn_id) of a pending turn -> decision time
        self._event_delay: deque[float] = deque(maxlen=latency_window)  # turn.ended: decision -> published (s)
        self._measured = self._skipped = 0
        self._calls: dict[str, LiveCall] = {}
        self._failed: dict[str, str] = {}
        # Arrival-at-API to applied-in-actor delays (s), for the ingest benchmark and /metrics.
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._frames = 0
        self._pushes = 0
        threading.Thread(target=self._measure_loop, name="mise-measure", daemon=True).start()
        tuning.settle_heap()

    def _speaker_scoring(
        self, scorer: ActorHandle[Any] | None, analysis: AnalysisOptions
    ) -> Callable[[], TurnScorer] | None:
        """Each speaker's turns scored with their voice offset removed (``models.caller``), if the scorer's
        weights support it and ``analysis.speaker_baseline`` asks for it; else every turn is scored alone."""
        if scorer is None or not analysis.speaker_baseline:
            return None
        try:
            spec: Any = ray.get(scorer.caller_spec.remote(), timeout=max(self._score_timeout, 30.0))
        except Exception:
            log.exception("the emotion scorer gave no per-speaker calibration; every turn is scored alone")
            return None
        if spec is None:
            log.info("the emotion weights have no per-speaker calibration; every turn is scored alone")
            return None
        return lambda: CallerScorer(spec)

    def ready(self) -> int:
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
            scores=self._scorer is not None,
            speaker_scorer=self._speaker_scorer,
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
            self._send_to_hub()

    def push(self, items: list[PushItem] | bytes, poll: list[str] | None = None) -> PushAck:
        """Write ``items`` (or the pickled list of them, as ``AudioPump`` sends it); reply with the events
        of their calls and of the ``poll`` calls."""
        batch: list[PushItem] = pickle.loads(items) if isinstance(items, bytes) else items  # our own API's
        with self._lock:
            ack = self._push(batch, poll or [])
            self._send_to_hub()
            return ack

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
                    self._schedule(call)
                except Exception as exc:
                    self._fail(call_sid, exc)
        self._frames += applied
        self._pushes += 1
        events: list[Published] = []
        awaiting: list[str] = []
        for call_sid in dict.fromkeys([*touched, *poll]):
            events += self._outbox.pop(call_sid, [])
            if self._jobs.get(call_sid):
                awaiting.append(call_sid)
        return PushAck(applied, orphaned, failed, events, awaiting)

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
                    self._schedule(call, queue_them=False)
                analysis_error = None
            except Exception as exc:  # the audio figures still stand; say what the analysis could not do
                log.exception("call %s: analysis failed at the end of the stream", call_sid)
                analysis_error = f"{type(exc).__name__}: {exc}"
            jobs = list(self._jobs.pop(call_sid, ()))
        for job in jobs:  # in decision order: the speaker baselines depend on it
            with self._lock:
                mine, job.claimed = not job.claimed, True
            if mine:
                self._measure(job)
                self._complete(job, wait_s=self._score_timeout)
            elif not job.done.wait(self._max_delay + self._score_timeout + 1.0):
                # The thread has it and is slower than any turn should be: the call ends without it.
                log.error("call %s: turn %d was not measured in time; the call ends without it", *job.key)
        with self._lock:
            if analysis_error is None:
                self._publish(call, call.analyzer.release())
            for job in jobs:
                self._decided_at.pop(job.key, None)
            figures = self._figures(call)
            if call.analyzer.unreleased == 0:  # the last event of the call
                call.analyzer.note(CALL_ENDED, {"end_reason": end_reason, **figures})
                self._publish(call, call.analyzer.release())
            self._send_to_hub(force=True)
            final = {**figures, "events": self._outbox.pop(call_sid, [])}
        if analysis_error:
            final["error"] = f"analysis failed: {analysis_error}"
        return final

    def _schedule(self, call: LiveCall, *, queue_them: bool = True) -> None:
        """Hand the call's newly decided turns to the measuring thread (lock held)."""
        now = time.monotonic()
        for pending in call.analyzer.take_pending():
            job = _Measure(call.meta.call_sid, pending, now)
            if self._scorer is not None:  # scored in the scorer's process while this one measures
                job.scores = self._scorer.score.remote([pending.audio])
            self._jobs.setdefault(job.call_sid, deque()).append(job)
            self._decided_at[job.key] = now
            if queue_them:
                self._queue.put(job)

    def _measure_loop(self) -> None:
        """The measuring thread, supervised: whatever one turn or call raises fails that turn or call
        (logged, counted in ``measure_errors``), never this thread: every call of the host depends on it."""
        while True:
            job: _Measure | None = None
            try:
                try:
                    job = self._queue.get(timeout=CATCH_UP_EVERY_S)
                except queue.Empty:
                    self._expire_scores()
                    self._idle_tick()
                else:
                    self._handle(job)
                    self._expire_scores()
                    if self._queue.empty():
                        self._catch_up()
                if self._hub is not None and time.monotonic() - self._hub_checked > HUB_LOOKUP_S:
                    self._hub_checked = time.monotonic()
                    self._find_hub()
            except Exception as exc:
                self._supervise(job, exc)

    def _handle(self, job: _Measure) -> None:
        """A decided turn to measure, or a measured one whose scores came back (``_await_scores``)."""
        if job.measured_at is None:
            with self._lock:
                if job.claimed:  # its call finished or failed meanwhile
                    return
                job.claimed = True
            self._measure(job)
            if job.scores is not None:
                answer = job.scores.future()
                if not answer.done():
                    self._await_scores(job, answer)
                    return
        if job.done.is_set():  # its scores came after their deadline, or it was completed twice
            return
        self._complete(job)
        with self._lock:
            jobs = self._jobs.get(job.call_sid)
            while jobs and jobs[0].done.is_set():
                jobs.popleft()
            call = self._calls.get(job.call_sid)
            if call is not None:
                self._publish(call, call.analyzer.release())
                self._send_to_hub()

    def _await_scores(self, job: _Measure, answer: concurrent.futures.Future[Any]) -> None:
        """The thread goes on with other turns while the scorer works: the answer puts the turn back in
        the queue (``_handle``); one that never comes is given up after ``score_timeout_s`` (``_idle_tick``)."""
        with self._lock:
            self._scoring[job.key] = job
        answer.add_done_callback(lambda _: self._queue.put(job))

    def _idle_tick(self) -> None:
        """No turn waiting: hand held-back events to the hub, catch up on pitch."""
        if self._to_hub:  # events held back for the hub (``HUB_EVERY_S``) with no push coming
            with self._lock:
                self._send_to_hub()
        self._catch_up()

    def _find_hub(self) -> None:
        """The hub by its name: a hub killed and made again by an API process (``actors.runtime.hub``) is
        another actor, and this host follows it (Ray restarts of the same actor keep the handle valid)."""
        try:
            current = ray.get_actor(HUB_NAME, namespace=ray.get_runtime_context().namespace)
        except Exception:  # none right now (being made again), or not on Ray at all: keep the handle
            return
        if self._hub is None or current._actor_id != self._hub._actor_id:
            log.warning("the event hub was replaced; events go to the new one")
            with self._lock:
                self._hub = current

    def _expire_scores(self) -> None:
        """Measured turns whose scores are later than ``score_timeout_s`` go out unscored (counted)."""
        if not self._scoring:
            return
        now = time.monotonic()
        with self._lock:
            late = [j for j in self._scoring.values() if now - (j.measured_at or now) > self._score_timeout]
        for job in late:
            self._handle(job)  # completes it unscored: its answer is not there

    def _supervise(self, job: _Measure | None, exc: Exception) -> None:
        """Something raised on the measuring thread: fail the call it was about (its other turns and the
        host's other calls go on); a turn of no call, or a failure outside one, is logged and counted."""
        with self._lock:
            self._measure_errors += 1
            if job is not None and job.call_sid in self._calls:
                self._fail(job.call_sid, exc)
                return
        log.exception("the measuring thread caught an error; it goes on", exc_info=exc)

    def _catch_up(self) -> None:
        """Between turns: analyse the pitch frames of the turns in progress (no lock held while analysing),
        so a turn's measurement at its end is mostly done already. Decided turns come first."""
        with self._lock:
            streams = [s for call in self._calls.values() for s in call.analyzer.streams(CATCH_UP_FRAMES)]
        for stream in streams:
            if not self._queue.empty():
                return
            try:
                with costs.stage("pitch"):
                    stream.catch_up()
            except Exception:  # the turn is then measured from its own audio, as without a stream
                log.exception("pitch frames of a turn in progress could not be analysed")
                stream.dead = True

    def _measure(self, job: _Measure) -> None:
        """Measure one turn (no lock held), or skip it if it waited too long: the backlog stays bounded."""
        try:
            if time.monotonic() - job.decided > self._max_delay:
                job.pending.skip("overload")
                with self._lock:
                    self._skipped += 1
                    first = self._skipped == 1 or self._skipped % 1000 == 0
                if first:
                    log.warning("host over capacity: %d turns sent without features so far", self._skipped)
            else:
                job.pending.measure()
                with self._lock:
                    self._measured += 1
        except Exception:
            log.exception("call %s: measuring turn %d failed; it goes out without features", *job.key)
            job.pending.skip("error")
        finally:
            job.measured_at = time.monotonic()

    def _complete(self, job: _Measure, *, wait_s: float = 0.0) -> None:
        """Add the emotion model's result to a measured turn (waiting at most ``wait_s`` for it; without
        one the turn goes out unscored, counted) and mark it done. No lock held."""
        if job.scores is not None:
            result, why = None, "no answer in time"
            try:
                result = ray.get(job.scores, timeout=wait_s)[0]
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
            if result is None:
                with self._lock:
                    self._unscored += 1
                    first = self._unscored == 1 or self._unscored % 1000 == 0
                if first:
                    log.warning("call %s: turn %d has no emotion scores (%s); %d so far", *job.key, why, self._unscored)
            job.pending.set_scores(result)
        with self._lock:
            self._scoring.pop(job.key, None)
        job.done.set()

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
                decided = self._decided_at.pop((meta.call_sid, event.data["turn_id"]), None)
                if decided is not None:
                    self._event_delay.append(now - decided)
        published = [(meta.tenant, event.to_json(meta.call_sid, meta.stream_sid, at)) for event in events]
        self._outbox.setdefault(meta.call_sid, []).extend(published)
        if self._hub is not None:
            self._to_hub += published
        self._events += len(events)

    def _send_to_hub(self, *, force: bool = False) -> None:
        """Hand what was published to the hub (lock held: so a call's events reach it in order), at most
        every ``HUB_EVERY_S`` unless ``force``d (a call's end): each hand-over is a Ray call here, in the
        hub and in every API process it wakes. Fire-and-forget: a slow or missing hub never holds up audio."""
        if self._hub is None or not self._to_hub:
            return
        now = time.monotonic()
        if not force and now - self._hub_sent < HUB_EVERY_S:
            return  # a later push, the measuring thread's next idle tick or a call's end sends it
        self._hub_sent = now
        batch, self._to_hub = self._to_hub, []
        try:
            self._hub.publish.remote(batch)
        except Exception:
            log.exception("could not hand %d events to the event hub", len(batch))

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
            backlog = sum(len(jobs) for jobs in self._jobs.values())
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
            "turns_measured": self._measured,
            "turns_unmeasured": self._skipped,  # sent without features: the host was over capacity
            "turns_unscored": self._unscored,  # sent without emotion scores: the scorer failed, shed or was late
            "measure_errors": self._measure_errors,
            "measure_backlog": backlog,
            "turn_event_count": int(delay.size),
            "turn_event_p50_ms": float(np.percentile(delay, 50) * 1000) if delay.size else None,
            "turn_event_p95_ms": float(np.percentile(delay, 95) * 1000) if delay.size else None,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "stages": costs.spent(),  # CPU s per analysis stage (engine.costs); the rest is Ray and events
            "rss_bytes": _rss_bytes(),
        }

    def _fail(self, call_sid: str, exc: Exception) -> None:
        """Drop a call that raised (lock held); its other calls go on."""
        log.exception("call %s failed on this host; its other calls go on", call_sid, exc_info=exc)
        self._calls.pop(call_sid, None)
        self._outbox.pop(call_sid, None)  # a failed call's finish reports its error, not half its events
        for job in self._jobs.pop(call_sid, ()):
            job.claimed = True
            self._decided_at.pop(job.key, None)
        self._failed[call_sid] = f"{type(exc).__name__}: {exc}"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
