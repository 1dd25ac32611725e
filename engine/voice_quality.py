"""Voice quality of one turn: glottal-cycle marks, local jitter and shimmer, and the harmonics-to-noise ratio.

Numpy, with the cycle-by-cycle loops compiled (``engine/csrc/voice.c``), no I/O; the pitch track and the
per-frame correlations come from ``engine.pitch``. Jitter and shimmer follow Praat's "Get jitter/shimmer
(local)": glottal marks found by cross-correlating one period with the next, within the voiced runs of the
track. The HNR follows Praat's "To Harmonicity (cc)": from the normalised cross-correlation at the pitch
period of the frames it counts. ``engine.prosody.turn_features`` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from engine import _kernels
from engine.pitch import BoolArray, FloatArray, PitchTrack

# Voice quality, as Praat's defaults for "Get jitter/shimmer (local)" and "To Harmonicity (cc)".
_MAX_PERIOD_FACTOR: Final = 1.3
_MAX_AMPLITUDE_FACTOR: Final = 1.6
_MIN_PULSE_CORRELATION: Final = 0.3  # a cycle that resembles its neighbour less than this gets no mark
_HNR_SILENCE: Final = 0.1  # HNR frames: r > 2 - (frame peak / turn peak) / this, as Praat's harmonicity


@dataclass(frozen=True, slots=True)
class VoicedRun:
    """One voiced run of a pitch track, in samples: its frames' instants and local periods, the span
    [lo, hi] its marks may take, and where its marks start (the largest extremum near its middle)."""

    at: FloatArray
    periods: FloatArray
    lo: float
    hi: float
    anchor: float


def voiced_runs(sig: FloatArray, sr: int, track: PitchTrack) -> list[VoicedRun]:
    """The voiced runs of ``track`` over ``sig`` that are long enough to mark (a few samples or more)."""
    half_hop = (track.times[1] - track.times[0]) * sr / 2 if len(track.times) > 1 else 0.0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], track.voiced.astype(np.int8), [0]])))
    runs: list[VoicedRun] = []
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        at, periods = track.times[first:stop] * sr, sr / track.f0[first:stop]
        lo, hi = max(0.0, at[0] - half_hop), min(len(sig) - 1.0, at[-1] + half_hop)
        middle = (lo + hi) / 2
        half = float(np.interp(middle, at, periods)) / 2
        a, b = max(0, round(middle - half)), min(len(sig), round(middle + half) + 1)
        if b - a >= 3:
            runs.append(VoicedRun(at, periods, lo, hi, float(a + int(np.argmax(np.abs(sig[a:b]))))))
    return runs


def glottal_marks(sig: FloatArray, sr: int, track: PitchTrack) -> list[FloatArray]:
    """Glottal-cycle marks (fractional sample indices, ascending) in each voiced run of ``track``.

    A run starts at its largest extremum near the middle; each next mark, forwards then backwards, is where a
    one-period window best correlates with the window around the previous mark, 0.8 to 1.25 local periods
    away, refined by a parabola through the correlation peak. Cycles that correlate less than
    ``_MIN_PULSE_CORRELATION`` are stepped over without a mark. The walk is compiled (engine/csrc/voice.c): a
    cycle took ~10 numpy calls, and a turn has hundreds of cycles.
    """
    sig = np.ascontiguousarray(sig, dtype=np.float64)
    energy = np.concatenate([[0.0], np.cumsum(sig * sig)])
    out: list[FloatArray] = []
    for run in voiced_runs(sig, sr, track):
        marks = np.empty(int(run.hi - run.lo) + 2)  # marks are over a sample apart and within [lo, hi]
        count = _kernels.glottal_run(
            sig, energy, run.at, run.periods, run.anchor, run.lo, run.hi, _MIN_PULSE_CORRELATION, marks
        )
        if count < 0:
            raise RuntimeError(f"glottal marks: more than {len(marks)} in a run of {run.hi - run.lo:.0f} samples")
        out.append(np.sort(marks[:count]))
    return out


def _cycle_amplitudes(sig: FloatArray, marks: FloatArray, left: FloatArray, right: FloatArray) -> FloatArray:
    """RMS of ``sig`` around each mark under a Hann window reaching ``left``/``right`` samples either side
    (compiled: engine/csrc/voice.c)."""
    out = np.zeros(len(marks))
    if len(marks) and len(sig):
        width = int(np.max(left + right)) + 2
        f64 = np.ascontiguousarray
        _kernels.cycle_amplitudes(f64(sig), f64(marks), f64(left), f64(right), width, out)
    return out


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
