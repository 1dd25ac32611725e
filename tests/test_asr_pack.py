"""Packing turns into recogniser windows and giving the words back (engine/asr.py), and word error rate."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.asr import GAP_S, SR, WINDOW_S, Clip, normalise, pack, split, transcribe, upsample, word_error_rate


def clip(key: str, seconds: float, value: float = 0.1) -> Clip:
    return Clip(key, np.full(round(seconds * SR), value, dtype=np.float32))


def test_short_turns_share_a_window_and_long_ones_go_alone() -> None:
    windows = pack([clip("a", 2.0), clip("b", 3.0), clip("long", 40.0), clip("c", 28.0), clip("d", 1.0)])
    assert [[k for k, _, _ in w.spans] for w in windows] == [["a", "b"], ["long"], ["c"], ["d"]]
    first = windows[0]
    assert first.spans == [("a", 0.0, 2.0), ("b", 2.0 + GAP_S, 5.0 + GAP_S)]
    assert len(first.audio) == round((5.0 + 2 * GAP_S) * SR)
    a, b = (round(x * SR) for x in (2.0, 2.0 + GAP_S))
    assert np.all(first.audio[:a] == 0.1) and np.all(first.audio[a:b] == 0.0)  # the gap is silence
    assert all(len(w.audio) <= WINDOW_S * SR for w in windows if len(w.spans) > 1)


def test_words_go_back_to_their_turn_with_turn_relative_times() -> None:
    (window,) = pack([clip("a", 2.0), clip("b", 3.0)])
    words = [("hello", 0.1, 0.5, 0.9), (" there", 1.6, 2.1, 0.8), ("um", 2.2, 2.4, 0.2), ("yes", 2.7, 3.0, 0.95)]
    got = split(window, words)
    assert [(w.text, w.start_ms, w.end_ms) for w in got["a"]] == [("hello", 100, 500), ("there", 1600, 2000)]
    assert [(w.text, w.start_ms, w.end_ms, w.confidence) for w in got["b"]] == [("yes", 100, 400, 0.95)]


@given(st.lists(st.floats(0.2, 35.0), min_size=1, max_size=20))
def test_every_turn_lands_in_exactly_one_window_whole(seconds: list[float]) -> None:
    clips = [clip(str(i), s) for i, s in enumerate(seconds)]
    windows = pack(clips)
    keys = [k for w in windows for k, _, _ in w.spans]
    assert keys == [c.key for c in clips]  # all, once, in order
    for w in windows:
        for key, a, b in w.spans:
            assert abs((b - a) - round(seconds[int(str(key))] * SR) / SR) < 1e-9
            assert b * SR <= len(w.audio) + 1
        if len(w.spans) > 1:
            assert w.spans[-1][2] <= WINDOW_S


def test_upsampling_keeps_a_tone() -> None:
    t = np.arange(8000) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 16000).astype(np.int16)
    out = upsample(pcm)
    assert out.dtype == np.float32 and len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_word_error_rate() -> None:
    assert word_error_rate(normalise("I want to cancel"), normalise("i want to cancel.")) == (0, 4)
    assert word_error_rate(["a", "b", "c"], ["a", "x", "c", "d"]) == (2, 3)
    assert word_error_rate([], ["a"]) == (1, 0)
    assert normalise("Don't, STOP!") == ["don't", "stop"]


def runs_heard(windows: list[np.ndarray]) -> list[list[tuple[str, float, float, float]]]:
    """A stand-in recogniser (the real one is tested in tests/test_whisper.py): one "word" per stretch of
    non-zero samples, named by the stretch's level."""
    out = []
    for audio in windows:
        loud = np.concatenate([[False], audio != 0, [False]])
        edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
        out.append([(f"w{audio[a]:.2f}", a / SR, b / SR, 0.9) for a, b in zip(edges[::2], edges[1::2], strict=True)])
    return out


def test_transcribe_gives_each_turn_its_own_words_in_its_own_time() -> None:
    clips = [clip("a", 2.0, 0.25), clip("b", 3.5, 0.5), clip("long", 40.0, 0.75), clip("c", 1.0, 0.125)]
    got = transcribe(runs_heard, clips, batch=2)
    assert [(w.text, w.start_ms, w.end_ms) for w in got["a"]] == [("w0.25", 0, 2000)]
    assert [(w.text, w.start_ms, w.end_ms) for w in got["b"]] == [("w0.50", 0, 3500)]
    assert [(w.text, w.start_ms, w.end_ms) for w in got["c"]] == [("w0.12", 0, 1000)]
    # a turn longer than a window is heard in 30 s pieces, its words' times on its own clock
    assert [(w.start_ms, w.end_ms) for w in got["long"]] == [(0, 30000), (30000, 40000)]
