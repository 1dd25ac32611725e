"""Measurer: a call host's measuring thread, supervised, and its client of the emotion scorer.

Deciding a turn happens in the host's push; measuring it (prosody: milliseconds per second of turn) happens
here, off the audio path, so a burst of turns ending together never holds up the next push's audio. Between
turns the thread analyses the pitch frames of the turns still in progress (``engine.pitch.PitchStream``), so
what is left when a turn ends is a few milliseconds. Under overload a turn that has waited longer than
``max_delay_s`` goes out without features (``features_skipped: "overload"``), counted, so the backlog and its
memory stay bounded.

Supervised: whatever one turn or call raises fails that turn or call (``measure_errors``), never the thread.
It never waits for the scorer: a turn's scores are asked for when it is decided, a measured turn whose
answer is not there yet goes back in the queue when it comes, and one whose answer never comes goes out
unscored, counted, after ``score_timeout_s``.

The host owns the calls and the lock; the measurer owns the turns waiting to be measured. It calls back
into the host with the lock held: to publish what a call can release now, and to fail a call.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import ObjectRef
from ray.actor import ActorHandle

from engine import costs
from engine.call import LiveCall
from engine.pending import PendingTurn, TurnScorer
from engine.pipeline import AnalysisOptions
from models.caller import CallerScorer

log = logging.getLogger("mise.host")

CATCH_UP_EVERY_S = 0.1  # an idle measuring thread looks for turns in progress this often
CATCH_UP_FRAMES = 100  # ... and analyses a track's pitch frames once this many (10 ms each) are waiting


@dataclass(eq=False)
class Measure:
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


class Measurer:
    def __init__(
        self,
        lock: threading.Lock,
        *,
        live_calls: Callable[[], Iterable[LiveCall]],
        release: Callable[[str], None],
        fail: Callable[[str, Exception], bool],
        scorer: ActorHandle[Any] | None,
        analysis: AnalysisOptions,
        max_delay_s: float,
        score_timeout_s: float,
    ) -> None:
        self._lock = lock
        # Host callbacks, called with the lock held: its live calls; publish what a call can release now
        # (nothing if it is gone); fail a call (False if the host does not hold it).
        self._live_calls, self._release, self._fail = live_calls, release, fail
        self._scorer = scorer  # the EmotionScorer (actors/scorer.py), when there is one
        self.max_delay_s = max_delay_s
        self.score_timeout_s = score_timeout_s
        self.speaker_scorer = self._speaker_scoring(scorer, analysis)
        self._jobs: dict[str, deque[Measure]] = {}  # per call, turns not yet measured, in decision order
        self._queue: queue.SimpleQueue[Measure] = queue.SimpleQueue()
        self._scoring: dict[tuple[str, int], Measure] = {}  # measured turns waiting for their scores
        self._decided_at: dict[tuple[str, int], float] = {}  # (call, turn_id) of a pending turn -> decision time
        self.measured = self.skipped = self.unscored = 0
        self.errors = 0  # exceptions the thread caught (each failed a turn or a call)
        threading.Thread(target=self._loop, name="mise-measure", daemon=True).start()

    @property
    def scoring(self) -> bool:
        return self._scorer is not None

    def _speaker_scoring(
        self, scorer: ActorHandle[Any] | None, analysis: AnalysisOptions
    ) -> Callable[[], TurnScorer] | None:
        """Each speaker's turns scored with their voice offset removed (``models.caller``), if the scorer's
        weights support it and ``analysis.speaker_baseline`` asks for it; else every turn is scored alone."""
        if scorer is None or not analysis.speaker_baseline:
            return None
        try:
            spec: Any = ray.get(scorer.caller_spec.remote(), timeout=max(self.score_timeout_s, 30.0))
        except Exception:
            log.exception("the emotion scorer gave no per-speaker calibration; every turn is scored alone")
            return None
        if spec is None:
            log.info("the emotion weights have no per-speaker calibration; every turn is scored alone")
            return None
        return lambda: CallerScorer(spec)

    # --- called by the host, its lock held -------------------------------------------------------------------
    def schedule(self, call: LiveCall, *, queue_them: bool = True) -> None:
        """Take the call's newly decided turns (their scores asked for at once)."""
        now = time.monotonic()
        for pending in call.analyzer.take_pending():
            job = Measure(call.meta.call_sid, pending, now)
            if self._scorer is not None:  # scored in the scorer's process while this one measures
                job.scores = self._scorer.score.remote([pending.audio])
            self._jobs.setdefault(job.call_sid, deque()).append(job)
            self._decided_at[job.key] = now
            if queue_them:
                self._queue.put(job)

    def waiting(self, call_sid: str) -> bool:
        return bool(self._jobs.get(call_sid))

    def backlog(self) -> int:
        return sum(len(jobs) for jobs in self._jobs.values())

    def decided_at(self, call_sid: str, turn_id: int) -> float | None:
        """When a published turn was decided (once)."""
        return self._decided_at.pop((call_sid, turn_id), None)

    def take(self, call_sid: str) -> list[Measure]:
        """The call's turns not yet measured, for its ``finish`` (``finish_turns``)."""
        return list(self._jobs.pop(call_sid, ()))

    def forget(self, call_sid: str) -> None:
        """The call failed: its waiting turns are dropped."""
        for job in self._jobs.pop(call_sid, ()):
            job.claimed = True
            self._decided_at.pop(job.key, None)

    # --- called by the host's finish, no lock held -------------------------------------------------------------
    def finish_turns(self, jobs: list[Measure]) -> None:
        """Measure a finishing call's last turns here, in decision order (the speaker baselines depend on it);
        one the thread has in hand is awaited, at most a turn's measuring and scoring time."""
        for job in jobs:
            with self._lock:
                mine, job.claimed = not job.claimed, True
            if mine:
                self._measure(job)
                self._complete(job, wait_s=self.score_timeout_s)
            elif not job.done.wait(self.max_delay_s + self.score_timeout_s + 1.0):
                # The thread has it and is slower than any turn should be: the call ends without it.
                log.error("call %s: turn %d was not measured in time; the call ends without it", *job.key)

    def ended(self, jobs: list[Measure]) -> None:
        """The finished call's turns were published (lock held): what is left of them goes."""
        for job in jobs:
            self._decided_at.pop(job.key, None)

    # --- the thread ----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job: Measure | None = None
            try:
                try:
                    job = self._queue.get(timeout=CATCH_UP_EVERY_S)
                except queue.Empty:
                    self._expire_scores()
                    self._catch_up()
                else:
                    self._handle(job)
                    self._expire_scores()
                    if self._queue.empty():
                        self._catch_up()
            except Exception as exc:
                self._supervise(job, exc)

    def _handle(self, job: Measure) -> None:
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
            self._release(job.call_sid)

    def _await_scores(self, job: Measure, answer: concurrent.futures.Future[Any]) -> None:
        """The thread goes on with other turns while the scorer works: the answer puts the turn back in
        the queue (``_handle``); one that never comes is given up after ``score_timeout_s``."""
        with self._lock:
            self._scoring[job.key] = job
        answer.add_done_callback(lambda _: self._queue.put(job))

    def _expire_scores(self) -> None:
        """Measured turns whose scores are later than ``score_timeout_s`` go out unscored (counted)."""
        if not self._scoring:
            return
        now = time.monotonic()
        with self._lock:
            late = [j for j in self._scoring.values() if now - (j.measured_at or now) > self.score_timeout_s]
        for job in late:
            self._handle(job)  # completes it unscored: its answer is not there

    def _supervise(self, job: Measure | None, exc: Exception) -> None:
        """Something raised on the thread: fail the call it was about (its other turns and the host's other
        calls go on); a turn of no call, or a failure outside one, is logged and counted."""
        with self._lock:
            self.errors += 1
            if job is not None and self._fail(job.call_sid, exc):
                return
        log.exception("the measuring thread caught an error; it goes on", exc_info=exc)

    def _catch_up(self) -> None:
        """Between turns: analyse the pitch frames of the turns in progress (no lock held while analysing),
        so a turn's measurement at its end is mostly done already. Decided turns come first."""
        with self._lock:
            streams = [s for call in self._live_calls() for s in call.analyzer.streams(CATCH_UP_FRAMES)]
        for stream in streams:
            if not self._queue.empty():
                return
            try:
                with costs.stage("pitch"):
                    stream.catch_up()
            except Exception:  # the turn is then measured from its own audio, as without a stream
                log.exception("pitch frames of a turn in progress could not be analysed")
                stream.dead = True

    def _measure(self, job: Measure) -> None:
        """Measure one turn (no lock held), or skip it if it waited too long: the backlog stays bounded."""
        try:
            if time.monotonic() - job.decided > self.max_delay_s:
                job.pending.skip("overload")
                with self._lock:
                    self.skipped += 1
                    first = self.skipped == 1 or self.skipped % 1000 == 0
                if first:
                    log.warning("host over capacity: %d turns sent without features so far", self.skipped)
            else:
                job.pending.measure()
                with self._lock:
                    self.measured += 1
        except Exception:
            log.exception("call %s: measuring turn %d failed; it goes out without features", *job.key)
            job.pending.skip("error")
        finally:
            job.measured_at = time.monotonic()

    def _complete(self, job: Measure, *, wait_s: float = 0.0) -> None:
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
                    self.unscored += 1
                    first = self.unscored == 1 or self.unscored % 1000 == 0
                if first:
                    log.warning("call %s: turn %d has no emotion scores (%s); %d so far", *job.key, why, self.unscored)
            job.pending.set_scores(result)
        with self._lock:
            self._scoring.pop(job.key, None)
        job.done.set()
