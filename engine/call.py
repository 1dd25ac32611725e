"""The state of one live call: metadata plus one time-aligned ring buffer per track.

Both tracks share one clock: sample index = ``media.timestamp`` (ms since the stream started) x 8.
The call's ``CallAnalyzer`` reads its audio from these rings (``advance`` after writes, ``finish`` at
the end) and returns the call's events; the call itself knows nothing about Ray, sockets or storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.events import CallEvent
from engine.frames import TRACKS
from engine.g711 import SAMPLES_PER_MS, decode_ulaw
from engine.pending import TurnScorer
from engine.pipeline import AnalysisOptions, CallAnalyzer
from engine.ring import RingBuffer, WriteResult


@dataclass(frozen=True, slots=True)
class CallMeta:
    tenant: str
    call_sid: str
    stream_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(hash=False)
    started_at: str = ""  # ISO 8601 UTC, when the stream's start reached us


@dataclass
class TrackCounters:
    frames: int = 0  # media frames written (any part new)
    duplicate_frames: int = 0  # frames that carried no new sample
    late_frames: int = 0  # frames dropped whole: older than the ring's window


class LiveCall:
    def __init__(
        self,
        meta: CallMeta,
        *,
        ring_seconds: float,
        analysis: AnalysisOptions | None = None,
        measure_inline: bool = True,
        scores: bool = False,
        speaker_scorer: Callable[[], TurnScorer] | None = None,
    ) -> None:
        self.meta = meta
        self.analyzer = CallAnalyzer(
            analysis, measure_inline=measure_inline, scores=scores, speaker_scorer=speaker_scorer
        )
        capacity = int(ring_seconds * 1000) * SAMPLES_PER_MS
        # Both tracks always exist: a <Connect> stream carries inbound only, and an empty outbound
        # ring costs ~0.5 MB less than special-casing it everywhere downstream would.
        self._rings = {track: RingBuffer(capacity) for track in TRACKS}
        self._counters = {track: TrackCounters() for track in TRACKS}

    def ring(self, track: str) -> RingBuffer:
        return self._rings[track]

    def write(self, track: str, timestamp_ms: int, payload: bytes) -> WriteResult:
        """Place one media payload (mu-law bytes) at its stream timestamp."""
        return self.write_pcm(track, timestamp_ms, decode_ulaw(payload))

    def write_pcm(self, track: str, timestamp_ms: int, samples: npt.NDArray[np.int16]) -> WriteResult:
        """Place one media payload, decoded already (``engine.g711.decode_ulaw``), at its stream timestamp."""
        result = self._rings[track].write(timestamp_ms * SAMPLES_PER_MS, samples)
        counters = self._counters[track]
        if result.written:
            counters.frames += 1
        elif result.late:
            counters.late_frames += 1
        else:
            counters.duplicate_frames += 1
        return result

    def advance(self) -> list[CallEvent]:
        """Analyse the audio that has settled since the last call; the events it decided."""
        return self.analyzer.advance(self._rings)

    def finish(self) -> list[CallEvent]:
        """The stream ended: analyse what is left and close open turns."""
        return self.analyzer.finish(self._rings)

    def summary(self) -> dict[str, Any]:
        return self.analyzer.summary.to_json()

    def audio(self, track: str) -> npt.NDArray[np.int16]:
        """Everything the ring still holds for ``track``, from its oldest sample to the head."""
        ring = self._rings[track]
        return ring.read(ring.oldest, ring.head)

    def track_stats(self) -> dict[str, dict[str, Any]]:
        """Per-track figures for the call record. Durations in ms."""
        out: dict[str, dict[str, Any]] = {}
        late = self.analyzer.late_ms(self._rings)
        for track, ring in self._rings.items():
            c = self._counters[track]
            out[track] = {
                "duration_ms": ring.head / SAMPLES_PER_MS,
                "received_ms": ring.received / SAMPLES_PER_MS,
                "missing_ms": ring.missing / SAMPLES_PER_MS,
                "frames": c.frames,
                "duplicate_frames": c.duplicate_frames,
                "late_frames": c.late_frames,
                "late_for_analysis_ms": late[track],
            }
        return out

    @property
    def duration_ms(self) -> float:
        return max(ring.head for ring in self._rings.values()) / SAMPLES_PER_MS
