"""A call's running figures (ARCHITECTURE.md's call ``summary``): turns, talk time, interruptions, overlap,
silences, response latency and the caller's frustration arc, counted as ``engine.pipeline`` decides them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.frames import SPEAKER_OF_TRACK
from engine.turns import Turn


@dataclass
class CallSummary:
    """Running figures of one call, as ARCHITECTURE.md's call ``summary``."""

    turns: int = 0  # turns that held the floor (backchannels not counted)
    backchannels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPEAKER_OF_TRACK.values(), 0))
    talk_ms: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPEAKER_OF_TRACK.values(), 0))
    interruptions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPEAKER_OF_TRACK.values(), 0))
    overlap_ms: int = 0
    silences: int = 0
    silence_ms: int = 0
    longest_silence_ms: int = 0
    _latency_sum: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPEAKER_OF_TRACK.values(), 0))
    _latency_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPEAKER_OF_TRACK.values(), 0))
    max_frustration: float | None = None  # the caller's most frustrated turn (emotion model)
    frustration_ema: float | None = None  # the caller's running frustration across turns: the call's tension arc
    frustration_alerts: int = 0

    def count_frustration(self, frustration: float, alpha: float) -> None:
        self.max_frustration = max(self.max_frustration or 0.0, frustration)
        ema = self.frustration_ema
        self.frustration_ema = frustration if ema is None else (1 - alpha) * ema + alpha * frustration

    def count_turn(self, turn: Turn) -> None:
        self.talk_ms[turn.speaker] += turn.duration_ms
        if turn.backchannel:
            self.backchannels[turn.speaker] += 1
            return
        self.turns += 1
        self.overlap_ms += turn.overlap_ms
        if turn.response_latency_ms is not None:
            self._latency_sum[turn.speaker] += turn.response_latency_ms
            self._latency_count[turn.speaker] += 1

    def count_silence(self, duration_ms: int) -> None:
        self.silences += 1
        self.silence_ms += duration_ms
        self.longest_silence_ms = max(self.longest_silence_ms, duration_ms)

    def to_json(self) -> dict[str, Any]:
        latency = {s: (round(self._latency_sum[s] / n) if n else None) for s, n in self._latency_count.items()}
        return {
            "turns": self.turns,
            "backchannels": dict(self.backchannels),
            "talk_ms": dict(self.talk_ms),
            "interruptions": dict(self.interruptions),
            "overlap_ms": self.overlap_ms,
            "silences": self.silences,
            "silence_ms": self.silence_ms,
            "longest_silence_ms": self.longest_silence_ms,
            "mean_response_latency_ms": latency,
            "max_frustration": self.max_frustration,
            "frustration_ema": None if self.frustration_ema is None else round(self.frustration_ema, 4),
            "frustration_alerts": self.frustration_alerts,
        }
