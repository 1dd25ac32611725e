"""AsrWorker: a Ray actor that turns finished turns' audio into words, off the call path.

``MISE_ASR_WORKERS`` of them per cluster, each its own process with its recogniser loaded once: built in,
Whisper tiny.en (``models/whisper.py``) with the turns of any calls packed into shared 30 s windows and
decoded ``batch`` windows at a time (``engine.asr.transcribe``: 3.9x the throughput of one turn per window,
bench/asr.py); or, with ``MISE_ASR_URL``, an external speech-to-text service (``models/remote_stt.py``).

A worker runs at a lower CPU priority (nice ``NICE``): on cores shared with call hosts, words wait and calls
do not. The API process's ``Transcriber`` (``api/transcripts.py``) owns the queue and sends a worker one
batch at a time.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from actors import tuning
from engine.asr import Clip, transcribe, upsample

log = logging.getLogger("mise.asr")

ASR_NAME = "mise-asr"  # workers are mise-asr-0, mise-asr-1, ...
NICE = 10

# A turn's words as a worker returns them: (text, start ms, end ms from the turn clip's start, confidence)
WordTuple = tuple[str, int, int, float]


class AsrWorker:
    def __init__(
        self,
        *,
        url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        batch: int = 4,
        threads: int = 1,
    ) -> None:
        try:
            os.nice(NICE)
        except OSError:  # not allowed here: the worker still works, at the calls' priority
            log.warning("asr worker: could not lower its CPU priority")
        self._batch = batch
        if url:
            from models.remote_stt import RemoteStt

            self._remote: Any = RemoteStt(url, model=model, api_key=api_key)
            self._whisper: Any = None
        else:
            from models.whisper import Whisper

            self._remote, self._whisper = None, Whisper(threads=threads)
        self.turns = self.batches = 0
        self.audio_s = self.busy_s = 0.0
        tuning.settle_heap()

    def ready(self) -> int:
        return os.getpid()

    def recognise(self, clips: list[tuple[str, bytes]]) -> dict[str, list[WordTuple]]:
        """Each clip's words: ``clips`` are (key, int16 8 kHz PCM bytes)."""
        started = time.process_time()
        pcm = {key: np.frombuffer(data, dtype=np.int16) for key, data in clips}
        if self._remote is not None:  # turn by turn: one the service fails is left out (skipped, counted)
            out = {}
            for key, samples in pcm.items():
                try:
                    out[key] = self._remote.words(samples)
                except Exception as exc:
                    log.warning("asr worker: a turn of %.1f s failed: %s", len(samples) / 8000, exc)
        else:
            found = transcribe(
                self._whisper.transcribe, [Clip(key, upsample(x)) for key, x in pcm.items()], batch=self._batch
            )
            out = {str(k): [(w.text, w.start_ms, w.end_ms, w.confidence) for w in ws] for k, ws in found.items()}
        self.turns += len(clips)
        self.batches += 1
        self.audio_s += sum(len(x) for x in pcm.values()) / 8000
        self.busy_s += time.process_time() - started
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "turns": self.turns,
            "batches": self.batches,
            "audio_s": self.audio_s,
            "cpu_s": self.busy_s,
        }
