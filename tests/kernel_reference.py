"""The numpy code that engine/_kernels.c replaced, kept as the reference its tests compare against: the same
arithmetic, numpy call by numpy call (engine/pitch.py's Viterbi, engine/voice_quality.py's glottal marks and
cycle amplitudes as they were at commit 065cfe7)."""

from __future__ import annotations

import bisect
import math

import numpy as np

from engine.pitch import _BLOCK, OCTAVE_JUMP_COST, VOICED_UNVOICED_COST, FloatArray, IntArray, PitchTrack
from engine.voice_quality import _MIN_PULSE_CORRELATION


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
    """Glottal-cycle marks (fractional sample indices, ascending) in each voiced run of ``track``.

    A run starts at its largest extremum near the middle; each next mark, forwards then backwards, is where a
    one-period window best correlates with the window around the previous mark, 0.8 to 1.25 local periods
    away, refined by a parabola through the correlation peak. Cycles that correlate less than
    ``_MIN_PULSE_CORRELATION`` are stepped over without a mark.
    """
    energy = np.concatenate([[0.0], np.cumsum(sig * sig)])
    half_hop = (track.times[1] - track.times[0]) * sr / 2 if len(track.times) > 1 else 0.0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], track.voiced.astype(np.int8), [0]])))
    runs: list[FloatArray] = []
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        at, periods = track.times[first:stop] * sr, sr / track.f0[first:stop]
        lo, hi = max(0.0, at[0] - half_hop), min(len(sig) - 1.0, at[-1] + half_hop)
        middle = (lo + hi) / 2
        half = float(np.interp(middle, at, periods)) / 2
        a, b = max(0, round(middle - half)), min(len(sig), round(middle + half) + 1)
        if b - a < 3:
            continue
        anchor = float(a + int(np.argmax(np.abs(sig[a:b]))))
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
