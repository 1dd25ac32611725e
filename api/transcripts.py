"""Transcriber: each API process's queue of finished turns waiting for words, and its use of the ASR workers.

Turns come with their ``turn.ended`` (the call host sends each turn's audio beside its event); ``add``
queues one and returns at once, so ``turn.ended`` never waits for words. Whenever a worker
(``actors/asr.py``) is free, the oldest waiting turns (up to ``batch_s`` of audio, of any calls) go to it
in one Ray call; their words are redacted, stored on the turns, indexed and sent as ``turn.transcribed``
(``api/words.py``).

Bounded, and nothing silent: a turn that would take the queue past ``max_queue_s`` of audio, or that has
waited longer than ``max_lag_s``, is skipped (``transcript: "skipped"``, ``transcript_skipped:
"overload"``), as is a batch whose worker failed (``"error"``) and what is still queued at a clean stop
(``"shutdown"``). Every skip is stored on its turn, sent as
an event and counted (``mise_transcripts_total``); ``mise_asr_queued_turns``, ``mise_asr_queued_seconds``
and ``mise_asr_lag_seconds`` show the queue. Turns queued in a process that dies (not a clean stop) stay
``pending``: their audio was there only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.actor import ActorHandle

from api.metrics import Metrics
from api.words import TurnWords
from engine import transcript
from engine.asr import Word

log = logging.getLogger("mise.transcripts")

WORKER_TIMEOUT_S = 120.0  # a batch a worker has not answered by then is skipped ("error")


@dataclass(slots=True)
class _Job:
    tenant: str
    call_sid: str
    turn_id: int
    first_ms: int  # stream time of the clip's first sample
    pcm: bytes  # int16, 8 kHz
    queued: float  # time.monotonic() when it came

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 16000

    @property
    def key(self) -> str:
        return f"{self.tenant}\x00{self.call_sid}\x00{self.turn_id}"


class Transcriber:
    def __init__(
        self,
        *,
        workers: list[ActorHandle[Any]],
        words: TurnWords,
        metrics: Metrics,
        max_queue_s: float,
        max_lag_s: float,
        batch_s: float = 116.0,  # ~4 packed 30 s windows: one model call's batch
        redact: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._workers = workers
        self._words = words
        self._metrics = metrics
        self._max_queue_s = max_queue_s
        self._max_lag_s = max_lag_s
        self._batch_s = batch_s
        self._redact = redact
        self._clock = clock
        self._queue: deque[_Job] = deque()
        self._queued_s = 0.0
        self._idle: deque[int] = deque(range(len(workers)))  # workers with no batch of ours in hand
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._skipped = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._run(), name="mise-transcriber")

    async def stop(self, *, drain_s: float = 5.0) -> None:
        """Let the batches in hand finish (for up to ``drain_s``); turns still queued are skipped
        (``"shutdown"``), so none is left pending by a clean stop."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._queue:
            left, self._queue = list(self._queue), deque()
            self._skip(left, "shutdown")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=drain_s)

    def add(self, tenant: str, call_sid: str, turn_id: int, first_ms: int, pcm: bytes) -> None:
        """Queue a finished turn's audio (on the event loop; returns at once)."""
        job = _Job(tenant, call_sid, turn_id, first_ms, pcm, self._clock())
        if self._queued_s + job.seconds > self._max_queue_s:
            self._skip([job], "overload")
            return
        self._queue.append(job)
        self._queued_s += job.seconds
        self._gauge()
        self._wake.set()

    async def until_idle(self, poll_s: float = 0.1) -> None:
        """Wait until nothing is queued (an imported call's turns then wait behind no one: none is skipped for
        lag). Live calls' turns keep coming meanwhile; they are never held back by this."""
        while self._queue:
            await asyncio.sleep(poll_s)

    def _gauge(self) -> None:
        self._metrics.asr_queued.set(len(self._queue))
        self._metrics.asr_queued_s.set(self._queued_s)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._idle:
                jobs = self._take()
                if jobs:
                    worker = self._idle.popleft()
                    task = asyncio.get_running_loop().create_task(self._recognise(worker, jobs))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Job]:
        """The oldest queued turns, up to ``batch_s`` of audio (at least one); those waited too long are
        skipped on the way."""
        now, seconds = self._clock(), 0.0
        late: list[_Job] = []
        jobs: list[_Job] = []
        while self._queue and (not jobs or seconds + self._queue[0].seconds <= self._batch_s):
            job = self._queue.popleft()
            self._queued_s -= job.seconds
            if now - job.queued > self._max_lag_s:
                late.append(job)
            else:
                jobs.append(job)
                seconds += job.seconds
        if not self._queue:
            self._queued_s = 0.0  # no float drift
        self._gauge()
        if late:
            self._skip(late, "overload")
        return jobs

    async def _recognise(self, worker: int, jobs: list[_Job]) -> None:
        found: dict[str, list[tuple[str, int, int, float]]] = {}
        try:
            ref: Any = self._workers[worker].recognise.remote([(job.key, job.pcm) for job in jobs])
            found = await asyncio.wait_for(ref, WORKER_TIMEOUT_S)
        except Exception as exc:
            log.error("asr worker %d failed on %d turns (they are skipped): %s", worker, len(jobs), exc)
        finally:
            self._idle.append(worker)
            self._wake.set()
        self._metrics.asr_audio_s.inc(sum(job.seconds for job in jobs))
        failed = [job for job in jobs if job.key not in found]  # the batch failed, or these turns in it
        if failed:
            self._skip(failed, "error")
        done = [job for job in jobs if job.key in found]
        await self._store(done, lambda job: self._fields(job, found[job.key]), source="asr")

    def _fields(self, job: _Job, words: list[tuple[str, int, int, float]]) -> dict[str, Any]:
        spoken = [Word(text, start, end, conf) for text, start, end, conf in words]
        return transcript.fields(spoken, start_ms=job.first_ms, source="asr", redact=self._redact)

    def _skip(self, jobs: list[_Job], reason: str) -> None:
        skip = {"transcript": "skipped", "transcript_skipped": reason}
        before, self._skipped = self._skipped, self._skipped + len(jobs)
        if before == 0 or before // 100 != self._skipped // 100:  # the first, then one line per hundred
            log.warning("transcriber: %d turns skipped (%s); %d so far", len(jobs), reason, self._skipped)
        task = asyncio.get_running_loop().create_task(self._store(jobs, lambda job: dict(skip), source=None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, jobs: list[_Job], fields: Callable[[_Job], dict[str, Any]], *, source: str | None) -> None:
        by_call: dict[tuple[str, str], list[_Job]] = defaultdict(list)
        for job in jobs:
            by_call[job.tenant, job.call_sid].append(job)
        now = self._clock()
        for (tenant, call_sid), group in by_call.items():
            queued = {job.turn_id: job.queued for job in group}

            def lag_s(turn_id: int, queued: dict[int, float] = queued) -> float | None:
                return now - queued[turn_id] if source is not None and turn_id in queued else None

            try:
                changes = {job.turn_id: fields(job) for job in group}
                await self._words.apply(tenant, call_sid, changes, source=source, lag_s=lag_s)
            except Exception:
                log.exception("could not store the words of %d turns of call %s", len(group), call_sid)
