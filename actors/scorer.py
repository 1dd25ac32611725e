"""EmotionScorer: the one Ray actor that runs the emotion model for every call host.

torch lives here and only here: call hosts stay torch-free (~500 MiB of RSS apiece otherwise, see
ENVIRONMENT.md). Hosts send each finished turn's audio (``score``); requests arriving within
``max_wait_s`` of each other are scored as one batch (up to ``max_batch`` turns), on one thread,
under ``torch.inference_mode``, with the weights loaded once (``models.load_emotion_model``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from actors import allocator, tuning

log = logging.getLogger("mise.scorer")

SCORER_NAME = "mise-scorer"


class EmotionScorer:
    def __init__(
        self,
        *,
        weights: str | None = None,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queued: int = 256,
        max_age_s: float = 10.0,
    ) -> None:
        from models import load_emotion_model  # torch is imported here, in this actor's process only

        allocator.tune()

        self._model = load_emotion_model(weights, threads=1)  # the packaged weights unless ``weights``
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        # Bounded: past ``max_queued`` waiting turns a request is shed (its turns go out unscored, counted by
        # the host), and a turn that waited longer than ``max_age_s`` (its host has given up on it) is
        # dropped unscored instead of computed for nobody.
        self._max_queued = max_queued
        self._max_age = max_age_s
        self._queue: asyncio.Queue[tuple[npt.NDArray[np.int16], asyncio.Future[Any], float]] | None = None
        self.shed = self.expired = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mise-model")
        self._task: asyncio.Task[None] | None = None
        self.batches = self.items = 0
        self.busy_s = 0.0
        tuning.settle_heap()  # after torch and the weights: the collector never walks them again

    async def ready(self) -> dict[str, Any]:
        return {"classes": list(self._model.classes)}

    async def caller_spec(self) -> dict[str, Any] | None:
        """What a call host needs to score each speaker's turns with their voice offset removed
        (``models.caller.CallerScorer``), or None: these weights score every turn alone."""
        return self._model.caller_spec()

    async def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "batches": self.batches,
            "items": self.items,
            "busy_s": self.busy_s,
            "shed": self.shed,  # turns refused: the queue was full
            "expired": self.expired,  # turns dropped: they waited longer than their hosts do
            "queued": self._queue.qsize() if self._queue is not None else 0,
        }

    async def score(self, items: list[npt.NDArray[np.int16]]) -> list[dict[str, Any] | None]:
        """The model's result for each item (a turn's audio, int16, 8 kHz), batched with other callers';
        None for an item shed (the queue is full) or dropped (it waited longer than ``max_age_s``)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        if self._queue.qsize() + len(items) > self._max_queued:
            self.shed += len(items)
            if self.shed == len(items) or self.shed % 1000 < len(items):
                log.warning("emotion scorer over capacity: %d turns shed so far", self.shed)
            return [None] * len(items)
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future: asyncio.Future[dict[str, Any] | None] = loop.create_future()
            self._queue.put_nowait((item, future, loop.time()))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def _score(self, audio: list[Any]) -> list[dict[str, Any]]:
        """Each turn scored alone, with the raw logits a host needs to score it again for its speaker."""
        return self._model.score_with_logits(audio)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait
            while len(batch) < self._max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            stale = [entry for entry in batch if loop.time() - entry[2] > self._max_age]
            for _, future, _ in stale:
                if not future.done():
                    future.set_result(None)
            self.expired += len(stale)
            batch = [entry for entry in batch if loop.time() - entry[2] <= self._max_age]
            if not batch:
                continue
            audio: list[Any] = [item for item, _, _ in batch]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self._score, audio)
            except Exception as exc:
                log.exception("scoring a batch of %d turns failed", len(batch))
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.busy_s += time.perf_counter() - started
            self.batches += 1
            self.items += len(batch)
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
