"""Words for turns: packing short turns into one recogniser window, and splitting the words back.

Pure, no model here (``actors/asr.py`` runs one). Whisper reads 30 s windows: a 2 s turn alone still costs a
whole window. So turns (of any calls) are laid end to end in one window, ``GAP_S`` of silence apart, and the
words the recogniser returns are given back to the turn whose span holds each word's middle, with times made
relative to that turn again. A turn longer than a window goes alone (the recogniser slides over it).

Also here: ``word_error_rate`` (for ``bench/asr.py``) and the 8 kHz -> 16 kHz step Whisper needs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

SR: Final = 16_000  # what Whisper reads
WINDOW_S: Final = 30.0
GAP_S: Final = 0.6  # silence between packed turns: Whisper ends a phrase there, and no word straddles two turns

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_ms: int  # from the start of its turn
    end_ms: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Clip:
    key: Hashable  # e.g. (tenant, call_sid, turn_id)
    audio: FloatArray  # 16 kHz mono float32 in [-1, 1]

    @property
    def seconds(self) -> float:
        return len(self.audio) / SR


@dataclass
class Window:
    """Clips laid end to end: ``spans`` holds (key, start s, end s) within ``audio``."""

    audio: FloatArray
    spans: list[tuple[Hashable, float, float]] = field(default_factory=list)


def upsample(pcm8k: npt.NDArray[np.int16]) -> FloatArray:
    """Telephone audio (int16, 8 kHz) as Whisper reads it: float32 at 16 kHz."""
    from scipy import signal  # here: the API process imports this module for ``Word`` only (1.5 s of import)

    x = pcm8k.astype(np.float32) / 32768.0
    out: FloatArray = signal.resample_poly(x, 2, 1).astype(np.float32)
    return out


def pack(clips: Sequence[Clip], *, window_s: float = WINDOW_S, gap_s: float = GAP_S) -> list[Window]:
    """First fit, in the order given (oldest turns first): each window holds as many clips as fit."""
    gap = np.zeros(round(gap_s * SR), dtype=np.float32)
    windows: list[Window] = []
    parts: list[FloatArray] = []
    current = Window(np.zeros(0, dtype=np.float32))
    at = 0.0

    def close() -> None:
        nonlocal parts, current, at
        if current.spans:
            current.audio = np.concatenate(parts)
            windows.append(current)
        parts, current, at = [], Window(np.zeros(0, dtype=np.float32)), 0.0

    for clip in clips:
        if clip.seconds >= window_s - gap_s:  # a long turn: a window (or several, slid over) of its own
            close()
            current.spans.append((clip.key, 0.0, clip.seconds))
            parts = [clip.audio]
            close()
            continue
        if at + clip.seconds > window_s - gap_s:
            close()
        current.spans.append((clip.key, at, at + clip.seconds))
        parts += [clip.audio, gap]
        at += clip.seconds + gap_s
    close()
    return windows


def split(window: Window, words: Sequence[tuple[str, float, float, float]]) -> dict[Hashable, list[Word]]:
    """The recogniser's words of ``window`` ((text, start s, end s, probability)) per clip: each word goes to
    the clip whose span holds its middle, its times relative to that clip and clipped to it. Words in the
    silence between clips (hallucinations, mostly) are dropped."""
    out: dict[Hashable, list[Word]] = {key: [] for key, _, _ in window.spans}
    for text, start, end, prob in words:
        middle = (start + end) / 2
        for key, a, b in window.spans:
            if a <= middle <= b:
                s, e = max(start, a) - a, min(end, b) - a
                out[key].append(Word(text.strip(), round(s * 1000), round(e * 1000), round(float(prob), 3)))
                break
    return out


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, letters, digits and inner apostrophes only."""
    out = []
    for raw in text.lower().split():
        word = "".join(ch for ch in raw if ch.isalnum() or ch == "'").strip("'")
        if word:
            out.append(word)
    return out


def word_error_rate(reference: Sequence[str], hypothesis: Sequence[str]) -> tuple[int, int]:
    """(edits, reference words): substitutions + deletions + insertions by Levenshtein over words."""
    prev = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref != hyp))
        prev = cur
    return prev[-1], len(reference)


Recogniser = Callable[[list[FloatArray]], list[list[tuple[str, float, float, float]]]]


def transcribe(recognise: Recogniser, clips: Sequence[Clip], *, batch: int = 4) -> dict[Hashable, list[Word]]:
    """Every clip's words: clips packed into windows, windows recognised ``batch`` at a time (one model call
    each), words split back. A window longer than 30 s (one long turn) is recognised in 30 s pieces."""
    pieces: list[tuple[Window, float]] = []  # (window, offset of this piece within it)
    for window in pack(clips):
        step = round(WINDOW_S * SR)
        for at in range(0, max(1, len(window.audio)), step):
            pieces.append((window, at / SR))
    words: dict[int, list[tuple[str, float, float, float]]] = {}
    for first in range(0, len(pieces), batch):
        part = pieces[first : first + batch]
        audio = [w.audio[round(off * SR) : round(off * SR) + round(WINDOW_S * SR)] for w, off in part]
        for (window, offset), found in zip(part, recognise(audio), strict=True):
            words.setdefault(id(window), []).extend((t, a + offset, b + offset, p) for t, a, b, p in found)
    out: dict[Hashable, list[Word]] = {}
    for window in {id(w): w for w, _ in pieces}.values():
        out.update(split(window, words.get(id(window), [])))
    return out
