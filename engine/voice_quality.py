"""Voice quality of one turn: glottal-cycle marks, local jitter and shimmer, and the harmonics-to-noise ratio.

Pure numpy, no I/O; the pitch track and the per-frame correlations come from ``engine.pitch``. Jitter and
shimmer follow Praat's "Get jitter/shimmer (local)": glottal marks found by cross-correlating one period with
the next, within the voiced runs of the track. The HNR follows Praat's "To Harmonicity (cc)": from the
normalised cross-correlation at the pitch period of the frames it counts. ``engine.prosody.turn_features``
reports them.
"""

from __future__ import annotations

import bisect
import math
from typing import Final

import numpy as np

from engine.pitch import BoolArray, FloatArray, PitchTrack

# Voice quality, as Praat's defaults for "Get jitter/shimmer (local)" and "To Harmonicity (cc)".
_MAX_PERIOD_FACTOR: Final = 1.3
_MAX_AMPLITUDE_FACTOR: Final = 1.6
_MIN_PULSE_CORRELATION: Final = 0.3  # a cycle that resembles its neighbour less than this gets no mark
_HNR_SILENCE: Final = 0.1  # HNR frames: r > 2 - (frame peak / turn peak) / this, as Praat's harmonicity


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


def jitter_shimmer(
    sig: FloatArray, runs: list[FloatArray], pmin: float, pmax: float
) -> tuple[float | None, float | None]:
    """Local jitter and shimmer (ratios) from glottal marks; periods in samples must lie in [pmin, pmax]."""
    period_diffs, periods_used, amp_diffs, amps_used = [], [], [], []
    for marks in runs:
        if len(marks) < 3:
            continue
        periods = np.diff(marks)
        p1, p2 = periods[:-1], periods[1:]
        ok = (periods >= pmin) & (periods <= pmax)
        pair = ok[:-1] & ok[1:] & (np.maximum(p1, p2) <= _MAX_PERIOD_FACTOR * np.minimum(p1, p2))
        period_diffs.append(np.abs(p1 - p2)[pair])
        periods_used.append(periods[ok])
        # A cycle's amplitude: Hann-weighted RMS over 20% of a period either side of its mark, as Praat; the
        # raw sample peak would wobble with the sampling phase (a few % at 8 kHz).
        amps = _cycle_amplitudes(sig, marks[1:-1], 0.2 * p1, 0.2 * p2)[pair]
        if len(amps) >= 2:
            a1, a2 = amps[:-1], amps[1:]
            close = np.maximum(a1, a2) <= _MAX_AMPLITUDE_FACTOR * np.minimum(a1, a2)
            amp_diffs.append(np.abs(a1 - a2)[close])
            amps_used.append(amps)
    jitter = shimmer = None
    diffs, used = np.concatenate([np.zeros(0), *period_diffs]), np.concatenate([np.zeros(0), *periods_used])
    if len(diffs) and len(used):
        jitter = float(np.mean(diffs) / np.mean(used))
    diffs, used = np.concatenate([np.zeros(0), *amp_diffs]), np.concatenate([np.zeros(0), *amps_used])
    if len(diffs) and np.mean(used) > 0:
        shimmer = float(np.mean(diffs) / np.mean(used))
    return jitter, shimmer


def hnr_db(r: FloatArray, peak: FloatArray, voiced: BoolArray) -> float | None:
    """Mean harmonics-to-noise ratio of a turn in dB, 10 log10(r / (1 - r)) with ``r`` the normalised
    cross-correlation at each frame's period, over the frames Praat's cross-correlation harmonicity counts:
    the ``voiced`` ones, plus unvoiced frames loud enough that r > 2 - ``peak`` / ``_HNR_SILENCE`` (``peak``:
    frame peak / turn peak). Capped at 60 dB; None when no frame counts. Every array has shape ``(n_frames,)``.
    """
    counted = voiced | ((r > 0.0) & (r > 2.0 - peak / _HNR_SILENCE))
    r = np.clip(r[counted & (r > 0.0)], 1e-6, 1.0 - 1e-6)  # caps the HNR at 60 dB
    return float(np.mean(10.0 * np.log10(r / (1.0 - r)))) if len(r) else None
