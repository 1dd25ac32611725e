"""Voice activity per track of a call, streaming, 20 ms frames (160 samples at 8 kHz).

Two stages, each one idea:
1. ``webrtcvad`` decides per frame whether a track sounds like speech (C, ~2 us a frame), behind an
   absolute level floor.
2. ``Hysteresis`` turns frame flags into speech spans: on after ``onset`` consecutive speech frames
   (the span is backdated to the first), off after ``hangover`` non-speech frames.

Known gap (bench/analysis.py): on a quiet track with short backchannels and the other party's voice
leaking in (the AMI outbound track), any absolute floor trades misses for false alarms (F1 ~0.8, target
0.92). Level-based leakage gates were tried and did not help in causal form. Next: a floor relative to
each track's tracked noise floor, and/or a model-based VAD (silero, ONNX).

Time is a frame index on the shared stream clock (frame k covers samples [160 k, 160 k + 160)).
Measured by ``bench/analysis.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import webrtcvad

FRAME = 160  # samples: 20 ms at 8 kHz
FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class Span:
    """Speech from frame ``start`` (inclusive) to ``end`` (exclusive)."""

    start: int
    end: int

    @property
    def start_ms(self) -> int:
        return self.start * FRAME_MS

    @property
    def end_ms(self) -> int:
        return self.end * FRAME_MS


def frame_db(frame: npt.NDArray[np.int16]) -> float:
    """RMS level of one frame in dBFS (full-scale sine: -3 dB); -100 for digital silence."""
    x = frame.astype(np.float64) / 32768.0
    power = float(np.mean(x * x))
    return 10.0 * np.log10(power) if power > 1e-10 else -100.0


@dataclass
class Hysteresis:
    """Frame flags in, closed speech spans out (streaming)."""

    onset: int = 2
    hangover: int = 10
    _frame: int = field(init=False, default=0)
    _run: int = field(init=False, default=0)  # consecutive speech frames
    _quiet: int = field(init=False, default=0)  # consecutive non-speech frames while active
    _start: int | None = field(init=False, default=None)  # start of the open span
    _last_speech: int = field(init=False, default=0)

    @property
    def active(self) -> bool:
        return self._start is not None

    @property
    def open_start(self) -> int | None:
        """First frame of the span open now, if any."""
        return self._start

    def push(self, speech: bool) -> Span | None:
        """Feed frame ``k`` (in order); returns a span when one closes."""
        k = self._frame
        self._frame += 1
        closed = None
        if speech:
            self._run += 1
            self._quiet = 0
            self._last_speech = k
            if self._start is None and self._run >= self.onset:
                self._start = k - self.onset + 1
        else:
            self._run = 0
            if self._start is not None:
                self._quiet += 1
                if self._quiet >= self.hangover:
                    closed = Span(self._start, self._last_speech + 1)
                    self._start = None
        return closed

    def flush(self) -> Span | None:
        """Close the open span at the end of the stream."""
        if self._start is None:
            return None
        span = Span(self._start, self._last_speech + 1)
        self._start = None
        return span


@dataclass
class CallVad:
    """Both tracks of one call, frame by frame. ``mode``: webrtcvad aggressiveness 0-3; frames under
    ``floor_db`` are never speech (webrtcvad adapts for a while and can fire on a quiet hiss)."""

    mode: int = 2
    onset: int = 2
    hangover: int = 10
    floor_db: float = -60.0
    _vads: dict[str, webrtcvad.Vad] = field(init=False, default_factory=dict)
    _hysteresis: dict[str, Hysteresis] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("inbound", "outbound"):
            self._vads[name] = webrtcvad.Vad(self.mode)
            self._hysteresis[name] = Hysteresis(self.onset, self.hangover)

    def push(
        self, inbound: npt.NDArray[np.int16], outbound: npt.NDArray[np.int16]
    ) -> dict[str, tuple[bool, Span | None]]:
        """One 20 ms frame of each track -> per track (speech flag, span closed by this frame)."""
        out: dict[str, tuple[bool, Span | None]] = {}
        for name, frame in (("inbound", inbound), ("outbound", outbound)):
            speech = frame_db(frame) > self.floor_db and self._vads[name].is_speech(frame.tobytes(), 8000)
            out[name] = (speech, self._hysteresis[name].push(speech))
        return out

    def flush(self) -> dict[str, Span | None]:
        return {name: h.flush() for name, h in self._hysteresis.items()}


def spans_of(
    inbound: npt.NDArray[np.int16], outbound: npt.NDArray[np.int16], **options: float
) -> dict[str, list[Span]]:
    """Offline convenience: whole tracks (same length) in, speech spans per track out."""
    vad = CallVad(**options)  # type: ignore[arg-type]
    spans: dict[str, list[Span]] = {"inbound": [], "outbound": []}
    for k in range(min(len(inbound), len(outbound)) // FRAME):
        for name, (_, span) in vad.push(
            inbound[k * FRAME : (k + 1) * FRAME], outbound[k * FRAME : (k + 1) * FRAME]
        ).items():
            if span:
                spans[name].append(span)
    for name, span in vad.flush().items():
        if span:
            spans[name].append(span)
    return spans
