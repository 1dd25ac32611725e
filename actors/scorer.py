"""EmotionScorer: the one Ray actor that runs the emotion model for every call host.

torch lives here and only here: call hosts stay torch-free (~500 MiB of RSS apiece otherwise, see
ENVIRONMENT.md). Hosts send each finished turn's audio (``score``). A threaded actor: each request runs on
one of Ray's threads (``SCORER_THREADS`` at once), the model on one of them at a time, with the weights
loaded once (``models.load_emotion_model``) and under ``torch.inference_mode``. The request that finds the
model free scores everything waiting then, its own turns and other requests' (up to ``max_batch``), as one
batch; turns that arrive meanwhile wait for the next. So turns are batched exactly when they would otherwise
queue, with no timer. An async actor did the same with an event loop, a queue, a timer per batch and a hand-off
to a model thread: ~1 ms more of this process's CPU per turn (docs/density.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors import allocator, tuning

log = logging.getLogger("mise.scorer")

SCORER_NAME = "mise-scorer"
SCORER_THREADS = 32  # requests in hand at once (more wait in Ray's queue); one of them runs the model


@dataclass(eq=False, slots=True)
class _Turn:
    audio: npt.NDArray[np.int16]
    queued: float  # time.monotonic() when it arrived
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    done: bool = False


class EmotionScorer:
    def __init__(
        self,
        *,
        weights: str | None = None,
        max_batch: int = 32,
        max_queued: int = 256,
        max_age_s: float = 10.0,
    ) -> None:
        from models import load_emotion_model  # torch is imported here, in this actor's process only

        allocator.tune()

        self._model = load_emotion_model(weights, threads=1)  # the packaged weights unless ``weights``
        self._max_batch = max_batch
        # Bounded: past ``max_queued`` waiting turns a request is shed (its turns go out unscored, counted by
        # the host), and a turn that waited longer than ``max_age_s`` (its host has given up on it) is
        # dropped unscored instead of computed for nobody.
        self._max_queued = max_queued
        self._max_age = max_age_s
        self._cond = threading.Condition()
        self._waiting: deque[_Turn] = deque()  # turns not yet taken into a batch (guarded by _cond)
        self._busy = False  # a request is running the model (guarded by _cond)
        self.shed = self.expired = 0
        self.batches = self.items = 0
        self.busy_s = 0.0
        tuning.settle_heap()  # after torch and the weights: the collector never walks them again

    def ready(self) -> dict[str, Any]:
        return {"classes": list(self._model.classes)}

    def caller_spec(self) -> dict[str, Any] | None:
        """What a call host needs to score each speaker's turns with their voice offset removed
        (``models.caller.CallerScorer``), or None: these weights score every turn alone."""
        return self._model.caller_spec()

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "batches": self.batches,
            "items": self.items,
            "busy_s": self.busy_s,
            "shed": self.shed,  # turns refused: the queue was full
            "expired": self.expired,  # turns dropped: they waited longer than their hosts do
            "queued": len(self._waiting),
        }

    def score(self, items: list[npt.NDArray[np.int16]]) -> list[dict[str, Any] | None]:
        """The model's result for each item (a turn's audio, int16, 8 kHz), batched with other callers';
        None for an item shed (the queue is full) or dropped (it waited longer than ``max_age_s``)."""
        now = time.monotonic()
        mine = [_Turn(item, now) for item in items]
        with self._cond:
            if len(self._waiting) + len(mine) > self._max_queued:
                self.shed += len(mine)
                if self.shed == len(mine) or self.shed % 1000 < len(mine):
                    log.warning("emotion scorer over capacity: %d turns shed so far", self.shed)
                return [None] * len(mine)
            self._waiting.extend(mine)
            while not all(turn.done for turn in mine):
                if self._busy:
                    self._cond.wait()
                    continue
                batch = self._take()
                if not batch:
                    continue
                self._busy = True
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        failed = next((turn.error for turn in mine if turn.error is not None), None)
        if failed is not None:
            raise failed
        return [turn.result for turn in mine]

    def _take(self) -> list[_Turn]:
        """The next batch from the front of the queue (lock held); turns too old for their hosts are dropped."""
        batch: list[_Turn] = []
        now = time.monotonic()
        while self._waiting and len(batch) < self._max_batch:
            turn = self._waiting.popleft()
            if now - turn.queued > self._max_age:
                turn.done = True
                self.expired += 1
            else:
                batch.append(turn)
        return batch

    def _run(self, batch: list[_Turn]) -> None:
        """Score ``batch`` (lock not held; one request at a time): each turn alone, with the raw logits a host
        needs to score it again for its speaker."""
        started = time.perf_counter()
        try:
            results = self._model.score_with_logits([turn.audio for turn in batch])
            if len(results) != len(batch):  # every turn taken must end done, or its request waits for ever
                raise RuntimeError(f"the model gave {len(results)} results for {len(batch)} turns")
        except Exception as exc:
            log.exception("scoring a batch of %d turns failed", len(batch))
            for turn in batch:
                turn.error, turn.done = exc, True
            return
        self.busy_s += time.perf_counter() - started
        self.batches += 1
        self.items += len(batch)
        for turn, result in zip(batch, results, strict=True):
            turn.result, turn.done = result, True
