"""The numpy code that engine/csrc/ replaced, kept as the reference its tests compare against: the same
arithmetic, numpy call by numpy call (engine/pitch.py's candidates and Viterbi, engine/voice_quality.py's
glottal marks and cycle amplitudes as they were at commit 065cfe7, engine/vad.py's frame levels at 0f58b2a, and
its per-frame test, noise floor and hysteresis at 625a4a2)."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import fft

from engine.pitch import (
    _BLOCK,
    _N_DIPS,
    ENERGY_FLOOR_DBFS,
    OCTAVE_COST,
    OCTAVE_JUMP_COST,
    VOICED_UNVOICED_COST,
    FloatArray,
    IntArray,
    PitchTrack,
    _Candidates,
    _sinc_table,
)
from engine.vad import FRAME, Span, periodicity
from engine.voice_quality import _MIN_PULSE_CORRELATION, voiced_runs


def _best_path(strength: FloatArray, log_f: FloatArray) -> IntArray:
    """Viterbi over (n_frames, n_states), the last state 'unvoiced': maximum strength minus transition costs."""
    n, s = strength.shape
    back = np.zeros((n, s), dtype=np.intp)
    voicing = np.zeros((s, s))
    voicing[:-1, -1] = voicing[-1, :-1] = VOICED_UNVOICED_COST
    score = strength[0].copy()
    for start in range(1, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        jump = np.abs(log_f[start - 1 : stop - 1, :, None] - log_f[start:stop, None, :])
        jump[:, -1, :] = jump[:, :, -1] = 0.0
        cost = OCTAVE_JUMP_COST * jump + voicing
        for i in range(start, stop):  # per frame: ~2 us of numpy calls, no fancy indexing
            total = score[:, None] - cost[i - start]
            back[i] = total.argmax(axis=0)
            score = total.max(axis=0) + strength[i]
    path = np.empty(n, dtype=np.intp)
    path[-1] = int(np.argmax(score))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def glottal_marks(sig: FloatArray, sr: int, track: PitchTrack) -> list[FloatArray]:
    """engine/voice_quality.py's glottal_marks with its walk as it was in numpy (the runs are the engine's)."""
    energy = np.concatenate([[0.0], np.cumsum(sig * sig)])
    runs: list[FloatArray] = []
    for run in voiced_runs(sig, sr, track):
        at, periods, lo, hi, anchor = run.at, run.periods, run.lo, run.hi, run.anchor
        marks = [anchor]
        # Per cycle only a few numpy calls: this loop runs once per glottal cycle of every voiced run.
        at_list, period_list = at.tolist(), periods.tolist()
        for direction in (1, -1):
            pos = anchor
            while True:
                period = _interp(pos, at_list, period_list)
                n, near, far = max(3, round(period)), math.ceil(0.8 * period), math.floor(1.25 * period)
                ref = round(pos - n / 2)
                first_start = ref + near if direction > 0 else ref - far
                last_start = first_start + far - near
                if ref < 0 or first_start < 0 or ref + n > len(sig) or last_start + n > len(sig):
                    break
                product = np.correlate(sig[first_start : last_start + n], sig[ref : ref + n], mode="valid")
                own = energy[first_start + n : last_start + n + 1] - energy[first_start : last_start + 1]
                norm = np.sqrt(own * (energy[ref + n] - energy[ref]))
                values = product / np.maximum(norm, 1e-300)
                i, corr = int(np.argmax(values)), values.tolist()
                offset = 0.0
                if 0 < i < len(corr) - 1:
                    curve = corr[i - 1] - 2.0 * corr[i] + corr[i + 1]
                    offset = min(1.0, max(-1.0, 0.5 * (corr[i - 1] - corr[i + 1]) / curve)) if curve < 0 else 0.0
                pos += first_start + i + offset - ref
                if not lo <= pos <= hi:
                    break
                if corr[i] > _MIN_PULSE_CORRELATION:
                    marks.append(pos)
        runs.append(np.sort(np.asarray(marks)))
    return runs


def _interp(x: float, xp: list[float], fp: list[float]) -> float:
    """``np.interp(x, xp, fp)`` for one point, bit for bit (numpy's formula), without a numpy call."""
    if x <= xp[0]:
        return fp[0]
    if x >= xp[-1]:
        return fp[-1]
    j = bisect.bisect_right(xp, x) - 1
    if x == xp[j]:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    value = slope * (x - xp[j]) + fp[j]
    return slope * (x - xp[j + 1]) + fp[j + 1] if math.isnan(value) else value


def _cycle_amplitudes(sig: FloatArray, marks: FloatArray, left: FloatArray, right: FloatArray) -> FloatArray:
    """RMS of ``sig`` around each mark under a Hann window reaching ``left``/``right`` samples either side."""
    first = np.ceil(marks - left).astype(np.intp)
    span = first[:, None] + np.arange(int(np.max(left + right, initial=0.0)) + 2)
    width = np.where(span < marks[:, None], left[:, None], right[:, None])
    phase = (span - marks[:, None]) / np.maximum(width, 1e-12)
    weight = np.where(np.abs(phase) <= 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip(phase, -1.0, 1.0)), 0.0)
    weight = np.where((span >= 0) & (span < len(sig)), weight, 0.0)
    values = sig[np.clip(span, 0, len(sig) - 1)] * weight
    power: FloatArray = np.sum(values**2, axis=1) / np.maximum(np.sum(weight**2, axis=1), 1e-300)
    return np.sqrt(power)


_SINC_TAPS, _SINC_WEIGHTS = _sinc_table()


def _parabola(left: FloatArray, mid: FloatArray, right: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vertex (offset in [-1, 1] from the middle point, value) of parabolas through equally spaced points."""
    curve = left - 2.0 * mid + right
    safe = np.where(curve != 0.0, curve, 1.0)
    offset = np.where(curve != 0.0, np.clip(0.5 * (left - right) / safe, -1.0, 1.0), 0.0)
    return offset, mid - 0.25 * (left - right) * offset


def _peak_value(seq: FloatArray, idx: IntArray) -> FloatArray:
    """Maximum of each row of ``seq`` (shape ``(rows, lags)``) within one lag of ``idx`` (shape ``(rows, k)``),
    by windowed-sinc interpolation: at 8 kHz a parabola misses most of a sharp correlation peak."""
    rows, k = idx.shape
    lags = seq.shape[1]
    # Flat indices and one (rows * k, taps) @ (taps, offsets) product: a fraction of the per-row calls.
    at = np.clip(idx[:, :, None] + _SINC_TAPS, 0, lags - 1) + (np.arange(rows) * lags)[:, None, None]
    curve = np.ascontiguousarray(seq).ravel()[at.reshape(rows * k, -1)] @ _SINC_WEIGHTS.T  # (rows * k, offsets)
    best = np.clip(np.argmax(curve, axis=1), 1, curve.shape[1] - 2) + np.arange(rows * k) * curve.shape[1]
    flat = curve.ravel()
    return _parabola(flat[best - 1], flat[best], flat[best + 1])[1].reshape(rows, k)  # between interpolated points


def _candidates(setup: Any, buf: FloatArray, first: int, count: int) -> _Candidates:
    """Candidates of ``count`` frames whose YIN frames start at ``buf[first + i * hop]`` (their scoring
    windows at ``first + i * hop + ac_offset``); ``buf`` holds every sample they read."""
    s, k = setup, _N_DIPS + 1
    assert first - s.lead >= 0 and first + (count - 1) * s.hop + s.reach <= len(buf) if count else True
    lag, ap, xcorr, strength = np.ones((count, k)), np.ones((count, k)), np.zeros((count, k)), np.zeros((count, k))
    level_db, ac_peak = np.full(count, -120.0), np.zeros(count)
    lags = np.arange(s.tau_max + 1)
    view = np.lib.stride_tricks.sliding_window_view
    for start in range(0, count, _BLOCK):
        nb = min(_BLOCK, count - start)
        rows, out = np.arange(nb)[:, None], slice(start, start + nb)
        at = first + start * s.hop
        block = view(buf[at : at + (nb - 1) * s.hop + s.frame], s.frame)[:: s.hop]
        block = block - block.mean(axis=1, keepdims=True)
        # YIN steps 1-3: r(tau) = sum_{j<W} x[j] x[j+tau] by FFT (no wrap-around while n_fft >= frame), then
        # d(tau) = e(0) + e(tau) - 2 r(tau) from running energies, then d'(tau) = d(tau) tau / sum_{1..tau} d.
        r = fft.irfft(np.conj(fft.rfft(block[:, : s.width], s.n_fft)) * fft.rfft(block, s.n_fft), s.n_fft)
        r = r[:, : s.tau_max + 1]
        energy = np.concatenate([np.zeros((nb, 1)), np.cumsum(block**2, axis=1)], axis=1)
        e_lag = energy[:, s.width : s.width + s.tau_max + 1] - energy[:, : s.tau_max + 1]
        d = np.maximum(e_lag[:, :1] + e_lag - 2.0 * r, 0.0)
        dn = np.ones_like(d)
        dn[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(np.cumsum(d[:, 1:], axis=1), 1e-300)
        # YIN step 4: the first dip below the absolute threshold (else the deepest), and the next deepest dips.
        search = dn[:, s.tau_min : s.tau_max]
        dips = (search < dn[:, s.tau_min - 1 : s.tau_max - 1]) & (search <= dn[:, s.tau_min + 1 : s.tau_max + 1])
        first_dip = np.argmax(search < s.threshold, axis=1)
        below = (search < s.threshold).any(axis=1)[:, None]
        after = dips & (np.arange(search.shape[1]) >= first_dip[:, None]) & below
        depth = np.where(dips, search, np.inf)
        yin = np.where(after.any(axis=1), np.argmax(after, axis=1), np.argmin(depth, axis=1))
        others = np.argpartition(depth, _N_DIPS - 1, axis=1)[:, :_N_DIPS]
        idx = np.concatenate([yin[:, None], others], axis=1) + s.tau_min
        valid = np.isfinite(depth[rows, idx - s.tau_min])
        # YIN step 5: the lag refined by a parabola through the raw d (d' is biased by its normalisation).
        shift, _ = _parabola(d[rows, idx - 1], d[rows, idx], d[rows, idx + 1])
        lag[out] = np.clip(idx + shift, s.sr / s.fmax, s.sr / s.fmin)
        ap[out] = dn[rows, idx]
        rn = r / np.sqrt(np.maximum(e_lag[:, :1] * e_lag, 1e-300))
        xc = _peak_value(rn, idx)
        xc = np.where(xc > 1.0, 1.0 / np.maximum(xc, 1e-12), xc)
        xcorr[out] = np.where(valid, xc, -1.0)
        # Strength: the Hann-windowed autocorrelation, divided by the window's own, at each candidate's lag.
        at_ac = at + s.ac_offset
        acf = view(buf[at_ac : at_ac + (nb - 1) * s.hop + s.ac_len], s.ac_len)[:: s.hop]
        acf = (acf - acf.mean(axis=1, keepdims=True)) * s.hann
        ac = fft.irfft(np.abs(fft.rfft(acf, s.n_fft_ac)) ** 2, s.n_fft_ac)[:, : s.tau_max + 1]
        ac = ac / np.maximum(ac[:, :1], 1e-300) / s.window_ac
        peak = _peak_value(ac, idx)
        peak = np.where(peak > 1.0, 1.0 / np.maximum(peak, 1e-12), peak)  # short-window overshoot
        level_db[out] = 10.0 * np.log10(np.maximum(energy[:, -1] / s.frame, 1e-12))
        loud = (level_db[out] > ENERGY_FLOOR_DBFS)[:, None]
        strength[out] = np.where(valid & loud, peak + OCTAVE_COST * np.log2(s.sr / lag[out] / s.fmin), -np.inf)
        ac_peak[out] = np.max(np.abs(acf), axis=1)
    return _Candidates(lag, ap, xcorr, strength, level_db, ac_peak)


_FULL_SCALE_POWER = FRAME * 1073741824.0  # FRAME * 32768 ** 2


def _prepare(block: npt.NDArray[np.int16]) -> tuple[npt.NDArray[np.int16], list[float], bytes]:
    """A block of whole frames -> (the frames, each without its mean when that is 64 or more, i.e. above
    -54 dBFS of offset: a DC offset from a bad line or a cheap ADC is neither level nor speech, shape
    ``(n, FRAME)``; each frame's level in dBFS as ``frame_db`` gives it; the frames' bytes for webrtcvad)."""
    frames = block.reshape(-1, FRAME)
    sums = frames.sum(axis=1, dtype=np.int64)
    means = np.trunc(sums / FRAME).astype(np.int64)  # the mean, truncated toward zero
    offset = np.abs(means) >= 64
    if offset.any():
        frames = frames.copy()
        shifted = frames[offset].astype(np.int32) - means[offset, None].astype(np.int32)
        frames[offset] = np.clip(shifted, -32768, 32767).astype(np.int16)
    x = frames.astype(np.float64)
    power = np.einsum("ij,ij->i", x, x) / _FULL_SCALE_POWER  # sums of integer squares: exact in float64
    levels = [10.0 * math.log10(p) if p > 1e-10 else -100.0 for p in power.tolist()]
    return frames, levels, frames.tobytes()


class Hysteresis:
    """Frame flags in, closed speech spans out (streaming)."""

    def __init__(self, onset: int = 2, hangover: int = 10) -> None:
        self.onset, self.hangover = onset, hangover
        self._frame = self._run = self._quiet = self._last_speech = 0
        self._start: int | None = None

    @property
    def open_start(self) -> int | None:
        return self._start

    def push(self, speech: bool) -> Span | None:
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


class NoiseFloor:
    def __init__(self, level_db: float, rise_db: float = 0.02) -> None:
        self.level_db, self.rise_db = level_db, rise_db

    def update(self, frame_level_db: float) -> None:
        if frame_level_db < self.level_db:
            self.level_db = frame_level_db
        else:
            self.level_db += self.rise_db


def vad_flags(
    tracks: dict[str, npt.NDArray[np.int16]], hangover: int = 15, voicing: float = 0.85, mode: int = 1
) -> dict[str, list[bool]]:
    """engine/vad.py's CallVad over two whole tracks, frame by frame in Python: each frame's speech flag."""
    import webrtcvad

    n = min(len(x) for x in tracks.values()) // FRAME
    prepared = {name: _prepare(x[: n * FRAME]) for name, x in tracks.items()}
    other = dict(zip(tracks, reversed(list(tracks)), strict=True))
    out: dict[str, list[bool]] = {}
    for name, (frames, levels, data) in prepared.items():
        vad, noise = webrtcvad.Vad(mode), NoiseFloor(-72.0)
        since, previous, flags = hangover, np.zeros(FRAME, dtype=np.int16), []
        for i, level in enumerate(levels):
            relative = noise.level_db + 12.0
            loud = level > max(-60.0, relative)
            speech = vad.is_speech(data[i * 2 * FRAME : (i + 1) * 2 * FRAME], 8000) and loud
            if speech:
                since = 0
            elif since < hangover and level > max(-70.0, relative) and level > prepared[other[name]][1][i] - 20.0:
                speech = periodicity(np.concatenate((previous if i == 0 else frames[i - 1], frames[i]))) >= voicing
            since += 1
            noise.update(level)
            flags.append(bool(speech))
        out[name] = flags
    return out
