"""Measurer: a call host's measuring thread, supervised: each decided turn's features and emotion scores.

Deciding a turn happens in the host's push; measuring it (prosody: milliseconds per second of turn) happens
here, off the audio path, so a burst of turns ending together never holds up the next push's audio. Between
turns the thread analyses the pitch frames of the turns still in progress (``engine.pitch.PitchStream``), so
what is left when a turn ends is a few milliseconds. Under overload a turn that has waited longer than
``max_delay_s`` goes out without features (``features_skipped: "overload"``), counted, so the backlog and its
memory stay bounded.

Supervised: whatever one turn or call raises fails that turn or call (``measure_errors``), never the thread.
The emotion model (``models.live``: numpy, ~2 ms of CPU per turn) scores each turn right after its features,
on this thread; a turn skipped for overload goes out unscored too, and one the model fails on goes out
unscored: both counted (``unscored``). It was a Ray actor of its own, with torch, until that process was found
to spend ~9 ms of CPU per turn on a model that costs ~2 ms (docs/density.md).

The host owns the calls and the lock; the measurer owns the turns waiting to be measured. It calls back
into the host with the lock held: to publish what a call can release now, and to fail a call.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine import costs
from engine.call import LiveCall
from engine.pending import PendingTurn, TurnScorer
from engine.pipeline import AnalysisOptions
from models.caller import CallerScorer
from models.scoring import EmotionScoring

log = logging.getLogger("mise.host")

CATCH_UP_EVERY_S = 0.1  # an idle measuring thread looks for turns in progress this often
TURN_WORK_S = 10.0  # far more than measuring and scoring one turn takes: past it, a call's finish stops waiting
CATCH_UP_FRAMES = 100  # ... and analyses a track's pitch frames once this many (10 ms each) are waiting


@dataclass(eq=False)
class Measure:
    """One decided turn waiting for the measuring thread (or for its call's ``finish``)."""

    call_sid: str
    pending: PendingTurn
    decided: float  # time.monotonic() at the decision
    claimed: bool = False  # taken by the thread or by finish; guarded by the host lock
    done: threading.Event = field(default_factory=threading.Event)

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
        emotion: EmotionScoring | None,
        analysis: AnalysisOptions,
        max_delay_s: float,
    ) -> None:
        self._lock = lock
        # Host callbacks, called with the lock held: its live calls; publish what a call can release now
        # (nothing if it is gone); fail a call (False if the host does not hold it).
        self._live_calls, self._release, self._fail = live_calls, release, fail
        self._emotion = emotion  # the emotion model, when turns are scored
        self.max_delay_s = max_delay_s
        self.speaker_scorer = self._speaker_scoring(emotion, analysis)
        self._jobs: dict[str, deque[Measure]] = {}  # per call, turns not yet measured, in decision order
        self._queue: queue.SimpleQueue[Measure] = queue.SimpleQueue()
        self._decided_at: dict[tuple[str, int], float] = {}  # (call, turn_id) of a pending turn -> decision time
        self.measured = self.skipped = self.unscored = 0
        self.errors = 0  # exceptions the thread caught (each failed a turn or a call)
        threading.Thread(target=self._loop, name="mise-measure", daemon=True).start()

    @property
    def scoring(self) -> bool:
        return self._emotion is not None

    @staticmethod
    def _speaker_scoring(emotion: EmotionScoring | None, analysis: AnalysisOptions) -> Callable[[], TurnScorer] | None:
        """Each speaker's turns scored with their voice offset removed (``models.caller``), if the model's
        weights support it and ``analysis.speaker_baseline`` asks for it; else every turn is scored alone."""
        if emotion is None or not analysis.speaker_baseline:
            return None
        spec = emotion.caller_spec()
        if spec is None:
            log.info("the emotion weights have no per-speaker calibration; every turn is scored alone")
            return None
        return lambda: CallerScorer(spec)

    # --- called by the host, its lock held -------------------------------------------------------------------
    def schedule(self, call: LiveCall, *, queue_them: bool = True) -> None:
        """Take the call's newly decided turns."""
        now = time.monotonic()
        for pending in call.analyzer.take_pending():
            job = Measure(call.meta.call_sid, pending, now)
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
        """Measure and score a finishing call's last turns here, in decision order (the speaker baselines depend
        on it); one the thread has in hand is awaited, at most a turn's measuring and scoring time."""
        for job in jobs:
            with self._lock:
                mine, job.claimed = not job.claimed, True
            if mine:
                self._measure(job)
                self._complete(job)
            elif not job.done.wait(self.max_delay_s + TURN_WORK_S):
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
                    self._catch_up()
                else:
                    self._handle(job)
                    if self._queue.empty():
                        self._catch_up()
            except Exception as exc:
                self._supervise(job, exc)

    def _handle(self, job: Measure) -> None:
        """A decided turn: measure it, score it, publish what its call can release."""
        with self._lock:
            if job.claimed:  # its call finished or failed meanwhile
                return
            job.claimed = True
        self._measure(job)
        self._complete(job)
        with self._lock:
            jobs = self._jobs.get(job.call_sid)
            while jobs and jobs[0].done.is_set():
                jobs.popleft()
            self._release(job.call_sid)

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
        """Score and measure one turn (no lock held), or skip both if it waited too long: the backlog stays
        bounded. Scored first: measuring lets the turn's audio go."""
        try:
            if time.monotonic() - job.decided > self.max_delay_s:
                job.pending.skip("overload")
                with self._lock:
                    self.skipped += 1
                    first = self.skipped == 1 or self.skipped % 1000 == 0
                if first:
                    log.warning("host over capacity: %d turns sent without features so far", self.skipped)
            else:
                self._score(job)
                job.pending.measure()
                with self._lock:
                    self.measured += 1
        except Exception:
            log.exception("call %s: measuring turn %d failed; it goes out without features", *job.key)
            job.pending.skip("error")

    def _score(self, job: Measure) -> None:
        """The emotion model's result for the turn; a turn the model fails on goes out unscored, counted."""
        if self._emotion is None:
            return
        try:
            with costs.stage("emotion"):
                result = self._emotion.score_with_logits([job.pending.audio])[0]
        except Exception as exc:
            log.exception("call %s: scoring turn %d failed", *job.key)
            self._unscored(job, f"{type(exc).__name__}: {exc}")
        else:
            job.pending.set_scores(result)

    def _unscored(self, job: Measure, why: str) -> None:
        job.pending.set_scores(None)
        with self._lock:
            self.unscored += 1
            first = self.unscored == 1 or self.unscored % 1000 == 0
        if first:
            log.warning("call %s: turn %d has no emotion scores (%s); %d so far", *job.key, why, self.unscored)

    def _complete(self, job: Measure) -> None:
        """Mark a measured (or skipped) turn done; one skipped before it was scored goes out unscored, counted."""
        if not job.pending.scored:
            self._unscored(job, "skipped: the host is over capacity")
        job.done.set()
