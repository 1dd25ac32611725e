"""engine/csrc/ (engine._kernels) against the numpy and Python code it replaced (tests/kernel_reference.py):
YIN's picks, the Viterbi path, the frames' means, the VAD's frame levels, speech flags and hysteresis bit for bit,
the other candidates, glottal marks and cycle amplitudes to float noise; on random inputs, the bundled demo call,
an AMI call and made voices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import _kernels, pitch, vad, voice_quality
from engine.pitch import TURN_PITCH, pitch_track
from tests import kernel_reference as ref
from tests.support import REPO, data_path

DEMO = REPO / "api" / "demo"
SR = 8000


def demo_speech() -> list[np.ndarray]:
    """Each track of the bundled demo call in 6 s pieces, as floats in [-1, 1)."""
    import soundfile

    pieces = []
    for track in ("inbound", "outbound"):
        x, sr = soundfile.read(DEMO / f"{track}.wav", dtype="float64")
        assert sr == SR
        pieces += [x[i : i + 6 * SR] for i in range(0, len(x) - 6 * SR, 6 * SR)]
    return pieces


def jittery_voice(seed: int, seconds: float = 2.0) -> np.ndarray:
    """Glottal pulses with random period and amplitude wobble, through a two-formant filter, plus noise."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    x, t = np.zeros(int(seconds * SR)), 100.0
    while t < len(x) - 1:
        x[int(t)] = 1.0 + 0.1 * rng.standard_normal()
        t += SR / (rng.uniform(90, 250)) * (1 + 0.02 * rng.standard_normal())
    for f, bw in ((700, 130), (1200, 70)):
        r = np.exp(-np.pi * bw / SR)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    x = 0.5 * x / np.max(np.abs(x))
    return x + 0.003 * rng.standard_normal(len(x))


def candidate_sets(cand: pitch._Candidates, row: int) -> dict[float, tuple[float, float, float]]:
    """A frame's candidates that are there (finite strength), by lag: (d', cross-correlation, strength). The
    order of the candidates after YIN's own pick is numpy's argpartition's, which nothing downstream reads."""
    return {
        float(cand.lag[row, c]): (float(cand.ap[row, c]), float(cand.xcorr[row, c]), float(cand.strength[row, c]))
        for c in range(cand.lag.shape[1])
        if np.isfinite(cand.strength[row, c])
    }


@pytest.mark.parametrize("source", ["demo", "made", "noise"])
def test_pitch_candidates_are_the_numpy_ones(source: str) -> None:
    rng = np.random.default_rng(7)
    signals = {
        "demo": demo_speech,
        "made": lambda: [jittery_voice(seed) for seed in range(4)],
        "noise": lambda: [0.3 * rng.standard_normal(3 * SR), np.zeros(SR), np.full(SR, 0.5)],
    }[source]()
    setup = pitch._setup(SR, *TURN_PITCH[:2], *TURN_PITCH[2:])
    frames = 0
    for x in signals:
        buf = np.concatenate([np.zeros(setup.lead), x, np.zeros(setup.reach)])
        count = len(x) // setup.hop
        ours, theirs = pitch._candidates(setup, buf, setup.lead, count), ref._candidates(setup, buf, setup.lead, count)
        for name in ("level_db", "ac_peak"):
            assert np.array_equal(getattr(ours, name), getattr(theirs, name)), name
        assert np.array_equal(ours.lag[:, 0], theirs.lag[:, 0]) and np.array_equal(ours.ap[:, 0], theirs.ap[:, 0])
        for row in range(count):  # the same candidates, to float noise (the sinc sums: a loop against BLAS)
            a, b = candidate_sets(ours, row), candidate_sets(theirs, row)
            assert a.keys() == b.keys(), row
            assert np.allclose([a[lag] for lag in a], [b[lag] for lag in a], rtol=1e-12, atol=1e-12), row
        frames += count
        analysis = pitch_track(x, sr=SR, fmin=TURN_PITCH[0], fmax=TURN_PITCH[1])
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pitch, "_candidates", ref._candidates)
            reference = pitch_track(x, sr=SR, fmin=TURN_PITCH[0], fmax=TURN_PITCH[1])
        assert np.array_equal(analysis.voiced, reference.voiced)
        assert np.allclose(analysis.f0, reference.f0, rtol=1e-12, equal_nan=True)
    assert frames > 200


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    states=st.integers(1, 7),
    seed=st.integers(0, 2**32 - 1),
    holes=st.floats(0.0, 0.6),
)
def test_the_viterbi_path_is_the_numpy_one_bit_for_bit(n: int, states: int, seed: int, holes: float) -> None:
    rng = np.random.default_rng(seed)
    strength = rng.uniform(-0.5, 1.2, (n, states))
    strength[rng.random((n, states)) < holes] = -np.inf  # candidates that are not there
    log_f = np.log2(rng.uniform(50, 500, (n, states)))
    log_f[:, -1] = 0.0
    assert np.array_equal(pitch._best_path(strength, log_f), ref._best_path(strength, log_f))


def test_the_viterbi_path_on_real_speech_is_the_numpy_one() -> None:
    calls = 0

    def both(strength: np.ndarray, log_f: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        path = ref._best_path(strength, log_f)
        assert np.array_equal(original(strength, log_f), path)
        return path

    original = pitch._best_path
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pitch, "_best_path", both)
        for x in demo_speech():
            pitch_track(x, sr=SR)
    assert calls > 5


@pytest.mark.parametrize("source", ["demo", "made"])
def test_glottal_marks_are_the_numpy_ones(source: str) -> None:
    signals = demo_speech() if source == "demo" else [jittery_voice(seed) for seed in range(6)]
    fmin, fmax, hop_s, frame_s, threshold = TURN_PITCH
    marks_seen = 0
    for x in signals:
        track = pitch_track(x, sr=SR, fmin=fmin, fmax=fmax, hop_s=hop_s, frame_s=frame_s, threshold=threshold)
        ours, theirs = voice_quality.glottal_marks(x, SR, track), ref.glottal_marks(x, SR, track)
        assert [len(r) for r in ours] == [len(r) for r in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert np.allclose(a, b, rtol=0, atol=1e-6), np.max(np.abs(a - b))
            marks_seen += len(a)
        pmin, pmax = SR / fmax, SR / fmin
        jitter, shimmer = voice_quality.jitter_shimmer(x, ours, pmin, pmax)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(voice_quality, "_cycle_amplitudes", ref._cycle_amplitudes)
            jitter_ref, shimmer_ref = voice_quality.jitter_shimmer(x, theirs, pmin, pmax)
        assert (jitter is None) == (jitter_ref is None) and (shimmer is None) == (shimmer_ref is None)
        if jitter is not None and jitter_ref is not None:
            assert jitter == pytest.approx(jitter_ref, rel=1e-9)
        if shimmer is not None and shimmer_ref is not None:
            assert shimmer == pytest.approx(shimmer_ref, rel=1e-9)
    assert marks_seen > 500


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 40), length=st.integers(1, 400))
def test_cycle_amplitudes_are_the_numpy_ones_even_at_the_edges(seed: int, count: int, length: int) -> None:
    rng = np.random.default_rng(seed)
    sig = rng.uniform(-1, 1, length)
    marks = np.sort(rng.uniform(-20, length + 20, count))  # some windows reach past either end
    left, right = rng.uniform(0, 30, count), rng.uniform(0, 30, count)
    ours = voice_quality._cycle_amplitudes(sig, marks, left, right)
    assert np.allclose(ours, ref._cycle_amplitudes(sig, marks, left, right), rtol=1e-12, atol=1e-300)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(0, 12), dc=st.integers(-40000, 40000))
def test_vad_frame_levels_are_the_numpy_ones_bit_for_bit(seed: int, frames: int, dc: int) -> None:
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.0, 1.0, 30.0, 3000.0, 40000.0])  # silence, the offset threshold, speech, clipping
    x = np.clip(dc + scale * rng.standard_normal(frames * vad.FRAME), -32768, 32767).astype(np.int16)
    ours, theirs = vad._prepare(x), ref._prepare(x)
    assert np.array_equal(ours[0], theirs[0]) and ours[1].tolist() == theirs[1] and ours[2] == theirs[2]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 140),
    length=st.integers(1, 420),
    hop=st.integers(1, 90),
    pad=st.integers(0, 150),
)
def test_centred_frames_are_numpys_bit_for_bit(seed: int, count: int, length: int, hop: int, pad: int) -> None:
    """Each frame without numpy's own mean (its pairwise sum), windowed, zero-padded, and its peak: the same
    bits."""
    rng = np.random.default_rng(seed)
    buf = rng.standard_normal(3 + max(0, count - 1) * hop + length) * rng.choice([1e-6, 1.0, 1e6]) + rng.normal()
    window = rng.uniform(0, 1, length)
    frames = np.lib.stride_tricks.sliding_window_view(buf[3:], length)[::hop][:count]
    centred = frames - frames.mean(axis=1, keepdims=True)
    plain, windowed, peak = np.empty((count, length)), np.full((count, length + pad), np.nan), np.empty(count)
    _kernels.centred_frames(buf, 3, hop, length, np.empty(0), plain, length, np.empty(0))
    _kernels.centred_frames(buf, 3, hop, length, window, windowed, length + pad, peak)
    assert np.array_equal(plain, centred)
    assert np.array_equal(windowed[:, :length], centred * window) and not windowed[:, length:].any()  # padded
    assert np.array_equal(peak, np.max(np.abs(centred * window), axis=1, initial=0.0))


@settings(max_examples=300, deadline=None)
@given(
    flags=st.lists(st.booleans(), max_size=120),
    onset=st.integers(1, 4),
    hangover=st.integers(1, 30),
    cuts=st.lists(st.integers(0, 120), max_size=6),
)
def test_hysteresis_is_the_python_one_in_blocks_of_any_size(
    flags: list[bool], onset: int, hangover: int, cuts: list[int]
) -> None:
    """The compiled hysteresis, fed in blocks cut anywhere, gives per frame the open span and the spans closed
    that the Python one (frame by frame) gives."""
    theirs = ref.Hysteresis(onset, hangover)
    expected = []
    for flag in flags:
        closed = theirs.push(flag)
        expected.append((-1 if theirs.open_start is None else theirs.open_start, closed))
    ours, got = vad.Hysteresis(onset, hangover), []
    bounds = [0, *sorted(min(c, len(flags)) for c in cuts), len(flags)]
    for lo, hi in itertools.pairwise(bounds):
        for open_start, start, end in ours.run(bytes(flags[lo:hi])).tolist():
            got.append((open_start, vad.Span(start, end) if start >= 0 else None))
    assert got == expected


@pytest.mark.parametrize("source", ["demo", "ami", "noise"])
def test_vad_flags_are_the_python_ones(source: str) -> None:
    """CallVad's compiled per-frame test, noise floor and voicing fallback, fed in steps of any size, flag the
    frames the Python loop flagged, on real calls (the demo, AMI's leaky tracks) and noise with tones."""
    if source == "demo":
        tracks = {t: soundfile.read(DEMO / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound")}
    elif source == "ami":
        call = data_path("calls/ami_es2004_a/turns.csv").parent
        tracks = {t: soundfile.read(call / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound")}
    else:
        rng = np.random.default_rng(11)
        t = np.arange(20 * SR) / SR
        hum = 300 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
        tracks = {
            "inbound": np.clip(rng.normal(0, 40, len(t)) + hum, -32768, 32767).astype(np.int16),
            "outbound": np.clip(rng.normal(0, 5, len(t)) + 2000 * (rng.random(len(t)) < 0.01), -32768, 32767),
        }
        tracks = {name: x.astype(np.int16) for name, x in tracks.items()}
    n = min(len(x) for x in tracks.values()) // vad.FRAME
    expected = ref.vad_flags(tracks)
    ours, got = vad.CallVad(), {name: [] for name in tracks}
    rng, at = np.random.default_rng(5), 0
    while at < n:
        step = min(n - at, int(rng.integers(1, 12)))
        block = {name: x[at * vad.FRAME : (at + step) * vad.FRAME] for name, x in tracks.items()}
        for name, flags in ours.decide(block).items():
            got[name] += [bool(f) for f in flags]
        at += step
    assert got == expected
    assert sum(map(sum, expected.values())) > (0 if source == "noise" else n // 10)


def test_bad_shapes_are_refused_not_read_past() -> None:
    with pytest.raises(ValueError, match="shapes"):
        _kernels.best_path(np.zeros(6), np.zeros(5), 2, 0.35, 0.14, np.zeros(3, dtype=np.intp))
    with pytest.raises(ValueError, match="shapes"):
        _kernels.glottal_run(np.zeros(10), np.zeros(10), np.zeros(2), np.zeros(2), 0.0, 0.0, 9.0, 0.3, np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        _kernels.cycle_amplitudes(np.zeros(10), np.zeros(3), np.zeros(3), np.zeros(2), 4, np.zeros(3))
    z = np.zeros
    with pytest.raises(ValueError, match="shapes"):  # r shorter than the lags
        _kernels.yin_dips(z((2, 320)), z((2, 100)), 185, 20, 135, 0.15, *[z((2, 136))] * 3, z((2, 115)), z(2), z(2))
    idx = np.full((2, 5), 140, dtype=np.intp)  # past the last lag a candidate can have
    d, ac, out, valid = z((2, 136)), z((2, 540)), z((2, 5)), z((2, 5), dtype=np.uint8)
    with pytest.raises(ValueError, match="out of range"):
        _kernels.yin_candidates(
            idx, d, d, d, z((2, 320)), ac, z(136), z((17, 16)), 17, 20.0, 133.3, out, out, out, out, valid
        )  # fmt: skip
    with pytest.raises(ValueError, match="shapes"):  # not whole frames
        _kernels.vad_levels(np.zeros(170, dtype=np.int16), np.zeros(170, dtype=np.int16), np.zeros(1))
    with pytest.raises(ValueError, match="shapes"):  # frames past the end of the signal
        _kernels.centred_frames(np.zeros(100), 0, 10, 50, np.empty(0), np.zeros((7, 50)), 50, np.empty(0))
    with pytest.raises(ValueError, match="shapes"):  # a window of another length
        _kernels.centred_frames(np.zeros(100), 0, 10, 50, np.zeros(49), np.zeros((2, 50)), 50, np.empty(0))
    with pytest.raises(ValueError, match="shapes"):  # rows shorter than a frame
        _kernels.centred_frames(np.zeros(100), 0, 10, 50, np.empty(0), np.zeros((2, 40)), 40, np.empty(0))
    with pytest.raises(ValueError, match="shapes"):  # codes for fewer frames than levels
        _kernels.vad_decide(
            np.zeros(5), np.zeros(5), bytes(5), np.zeros(2), -60.0, 12.0, -70.0, 20.0, 0.02, 15, z(4, dtype=np.uint8)
        )
    with pytest.raises(ValueError, match="shapes"):  # state of the wrong size
        _kernels.hysteresis(bytes(4), np.zeros(4, dtype=np.int64), 2, 3, np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="contiguous"):  # a strided view: the kernels read C-contiguous memory
        _kernels.cycle_amplitudes(np.zeros(20)[::2], np.zeros(3), np.zeros(3), np.zeros(3), 4, np.zeros(3))
