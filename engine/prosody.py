"""Prosody of one track: a YIN pitch track, per-turn features, and per-speaker baselines.

Pure numpy/scipy, no I/O. Audio is mono float in [-1, 1) at 8000 Hz (the telephone band). Levels are dBFS
with 0 dBFS an RMS of 1.0, so a full-scale sine sits at -3.01 dBFS; pitch intervals are semitones.

Pitch is YIN (de Cheveigné & Kawahara 2002): the difference function by FFT, its cumulative mean normalised
form d', the absolute threshold and parabolic refinement. Frame by frame, YIN makes octave errors where a
telephone voice is nearly periodic at two lags (creak; a fundamental below the 300 Hz band edge), so each
frame keeps its best d' dips as candidates and a Viterbi path chooses among them and "unvoiced", scoring them
as Boersma's (1993) autocorrelation tracker does, with Praat's default costs. On real calls that brings the
frames more than 20% away from Praat's F0 from ~8% to under 1%.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import fft, signal

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

ENERGY_FLOOR_DBFS: Final = -70.0  # a frame below this level is silence: never voiced, never active
ACTIVE_RANGE_DB: Final = 30.0  # active frames are also within this of the turn's loud (99th percentile) frames
MIN_VOICED_FRAMES: Final = 3  # fewer voiced frames: pitch and voice-quality features are None

# Path scoring, as Praat's "To Pitch (ac)" defaults; a candidate's strength is its windowed autocorrelation.
VOICING_THRESHOLD: Final = 0.45  # strength of "unvoiced": a candidate must beat it for the frame to be voiced
SILENCE_THRESHOLD: Final = 0.03  # frames whose peak is near or below this fraction of the input's peak favour unvoiced
OCTAVE_COST: Final = 0.01  # strength bonus per octave up, so a perfectly periodic signal gets its own period
OCTAVE_JUMP_COST: Final = 0.35  # per octave jumped between consecutive voiced frames
VOICED_UNVOICED_COST: Final = 0.14  # per voicing transition
_N_DIPS: Final = 4  # d' dips kept per frame besides YIN's own pick
_BLOCK: Final = 2048  # frames per vectorised block: bounds memory on long inputs
_TURN_PITCH: Final = (60.0, 400.0, 0.01, 0.04, 0.15)  # fmin, fmax, hop_s, frame_s, threshold of turn_features

# Voice quality, as Praat's defaults for "Get jitter/shimmer (local)" and "To Harmonicity (cc)".
_MAX_PERIOD_FACTOR: Final = 1.3
_MAX_AMPLITUDE_FACTOR: Final = 1.6
_MIN_PULSE_CORRELATION: Final = 0.3  # a cycle that resembles its neighbour less than this gets no mark
_HNR_SILENCE: Final = 0.1  # HNR frames: r > 2 - (frame peak / turn peak) / this, as Praat's harmonicity

# Syllable nuclei (de Jong & Wempe 2009): voiced peaks of the vowel-band intensity, 2 dB above the dip before.
_NUCLEUS_BAND_HZ: Final = (300.0, 2500.0)
_NUCLEUS_MIN_DIP_DB: Final = 2.0
_NUCLEUS_SILENCE_DB: Final = 25.0  # peaks this far below the turn's 99th-percentile intensity don't count

FEATURE_KEYS: Final = (
    "pitch_mean_hz",
    "pitch_std_hz",
    "pitch_range_st",
    "pitch_slope_st_per_s",
    "energy_db",
    "energy_range_db",
    "speaking_rate",
    "voiced_ratio",
    "jitter",
    "shimmer",
    "hnr_db",
)


@dataclass(frozen=True, slots=True)
class PitchTrack:
    """A pitch contour, one value per analysis frame (every array has shape ``(n_frames,)``)."""

    times: FloatArray  # s from the start of the input: the centre of the span each frame compares
    f0: FloatArray  # Hz, NaN where unvoiced
    voiced: BoolArray
    periodicity: FloatArray  # 1 - d'(tau) at the frame's lag: ~1 periodic, ~0 (or below) aperiodic


@dataclass(frozen=True, slots=True)
class _Analysis:
    track: PitchTrack
    level_db: FloatArray  # dBFS per frame, frame mean removed (so DC is not level)
    r: FloatArray  # normalised cross-correlation at the frame's period (its best candidate's where unvoiced)
    peak: FloatArray  # frame peak / input peak, in [0, 1]


def _as_signal(x: npt.ArrayLike) -> FloatArray:
    """``x`` as a flat float64 array; NaN reads as silence and infinities as full scale."""
    return np.nan_to_num(np.asarray(x, dtype=np.float64).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)


def _parabola(left: FloatArray, mid: FloatArray, right: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vertex (offset in [-1, 1] from the middle point, value) of parabolas through equally spaced points."""
    curve = left - 2.0 * mid + right
    safe = np.where(curve != 0.0, curve, 1.0)
    offset = np.where(curve != 0.0, np.clip(0.5 * (left - right) / safe, -1.0, 1.0), 0.0)
    return offset, mid - 0.25 * (left - right) * offset


def _sinc_table(half: int = 8, steps: int = 8) -> tuple[IntArray, FloatArray]:
    """Taps (relative lags) and Hann-windowed sinc weights, shape ``(2*steps + 1, 2*half)``, that evaluate a
    band-limited sequence at offsets -1, -1 + 1/steps, ..., +1 from an integer lag."""
    taps = np.arange(-half + 1, half + 1)
    offsets = np.linspace(-1.0, 1.0, 2 * steps + 1)
    dist = offsets[:, None] - taps[None, :]
    weights = np.sinc(dist) * (0.5 + 0.5 * np.cos(np.pi * np.clip(dist / (half + 1), -1.0, 1.0)))
    return taps, weights


_SINC_TAPS, _SINC_WEIGHTS = _sinc_table()


def _peak_value(seq: FloatArray, idx: IntArray) -> FloatArray:
    """Maximum of each row of ``seq`` (shape ``(rows, lags)``) within one lag of ``idx`` (shape ``(rows, k)``),
    by windowed-sinc interpolation: at 8 kHz a parabola misses most of a sharp correlation peak."""
    lag_idx = np.clip(idx[:, :, None] + _SINC_TAPS, 0, seq.shape[1] - 1)
    curve = np.take_along_axis(seq[:, None, :], lag_idx, axis=2) @ _SINC_WEIGHTS.T  # (rows, k, offsets)
    best = np.clip(np.argmax(curve, axis=2), 1, curve.shape[2] - 2)[:, :, None]
    around = [np.take_along_axis(curve, best + step, axis=2)[:, :, 0] for step in (-1, 0, 1)]
    return _parabola(*around)[1]  # the last step, between interpolated points


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


@dataclass(frozen=True, slots=True, eq=False)
class _Setup:
    """The frame geometry and constant windows of one set of pitch options (``_setup``)."""

    sr: int
    fmin: float
    fmax: float
    threshold: float
    frame: int  # samples in a YIN frame; frame i starts at sample s = i * hop
    hop: int
    tau_min: int
    tau_max: int
    width: int  # YIN's integration window
    centre: int  # frame i stands for the instant s + centre
    ac_len: int  # the Hann window the candidates are scored on starts at s + ac_offset
    ac_offset: int
    hann: FloatArray
    n_fft: int
    n_fft_ac: int
    window_ac: FloatArray  # the Hann window's own normalised autocorrelation

    @property
    def lead(self) -> int:
        """Samples a frame reads before its start s."""
        return max(0, -self.ac_offset)

    @property
    def reach(self) -> int:
        """Samples a frame reads from its start s on."""
        return max(self.frame, self.ac_offset + self.ac_len)


@functools.lru_cache(maxsize=16)
def _setup(sr: int, fmin: float, fmax: float, hop_s: float, frame_s: float, threshold: float) -> _Setup:
    if sr <= 0 or not 0.0 < fmin < fmax or hop_s <= 0.0 or frame_s <= 0.0 or threshold <= 0.0:
        raise ValueError(f"bad pitch options: sr={sr} fmin={fmin} fmax={fmax} hop_s={hop_s} frame_s={frame_s}")
    frame, hop = round(frame_s * sr), max(1, round(hop_s * sr))
    tau_min, tau_max = max(2, math.floor(sr / fmax)), math.ceil(sr / fmin) + 1
    width = frame - tau_max
    if width < tau_max // 2 or tau_min + 2 > tau_max:
        raise ValueError(f"frame_s={frame_s} s is too short for fmin={fmin} Hz, or fmax is too close to fmin")
    # Frame i compares x[s : s+W] with x[s+tau : s+tau+W], s = i*hop: its centre is about (W + tau)/2 past s.
    centre = round((width + sr / math.sqrt(fmin * fmax)) / 2)
    # Candidates are scored on a Hann window of 3 periods of fmin around that centre, as Praat's AC method.
    ac_len = round(3 * sr / fmin)
    hann = np.hanning(ac_len)
    n_fft, n_fft_ac = fft.next_fast_len(frame, real=True), fft.next_fast_len(ac_len + tau_max + 1, real=True)
    window_ac = fft.irfft(np.abs(fft.rfft(hann, n_fft_ac)) ** 2, n_fft_ac)[: tau_max + 1]
    window_ac /= window_ac[0]
    return _Setup(
        sr, fmin, fmax, threshold, frame, hop, tau_min, tau_max, width, centre, ac_len, centre - ac_len // 2,
        hann, n_fft, n_fft_ac, window_ac,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Candidates:
    """Per frame, before the path: each of the ``k`` candidate periods and the frame's own figures.
    Every value depends on the frame's own samples only, so frames can be computed as audio arrives."""

    lag: FloatArray  # (n, k) samples
    ap: FloatArray  # (n, k) d' at the lag (aperiodicity)
    xcorr: FloatArray  # (n, k) normalised cross-correlation at the lag; -1 for no candidate
    strength: FloatArray  # (n, k) path score of each candidate; -inf for none (or a silent frame)
    level_db: FloatArray  # (n,) dBFS, frame mean removed
    ac_peak: FloatArray  # (n,) peak of the Hann-windowed, mean-removed span (absolute; the path divides it)

    def __len__(self) -> int:
        return len(self.level_db)

    def __getitem__(self, rows: slice) -> _Candidates:
        return _Candidates(*(getattr(self, name)[rows] for name in _Candidates.__slots__))

    @staticmethod
    def join(parts: list[_Candidates]) -> _Candidates:
        if len(parts) == 1:
            return parts[0]
        return _Candidates(*(np.concatenate([getattr(p, name) for p in parts]) for name in _Candidates.__slots__))


def _candidates(setup: _Setup, buf: FloatArray, first: int, count: int) -> _Candidates:
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
        e_lag = energy[:, lags + s.width] - energy[:, lags]
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


def _path(setup: _Setup, cand: _Candidates, global_peak: float) -> _Analysis:
    """The voicing decision and F0 of every frame: the best path through the candidates and "unvoiced",
    whose strength grows for frames quiet relative to the input's peak (``global_peak``)."""
    n, k = len(cand), _N_DIPS + 1
    times = (np.arange(n) * setup.hop + setup.centre) / setup.sr
    peak_rel = cand.ac_peak / max(global_peak, 1e-12)
    if n == 0:
        track = PitchTrack(times=times, f0=times.copy(), voiced=np.zeros(0, dtype=np.bool_), periodicity=times.copy())
        return _Analysis(track=track, level_db=cand.level_db, r=peak_rel.copy(), peak=peak_rel)
    relative = peak_rel / (SILENCE_THRESHOLD / (1.0 + VOICING_THRESHOLD))
    strength = np.concatenate([cand.strength, (VOICING_THRESHOLD + np.maximum(0.0, 2.0 - relative))[:, None]], axis=1)
    path = _best_path(strength, np.concatenate([np.log2(setup.sr / cand.lag), np.zeros((n, 1))], axis=1))
    voiced, at = path < k, np.arange(n)
    pick = np.where(voiced, path, 0)  # unvoiced frames report YIN's own pick
    f0 = np.where(voiced, setup.sr / cand.lag[at, pick], np.nan)
    r_frame = np.where(voiced, cand.xcorr[at, pick], np.max(cand.xcorr, axis=1))
    track = PitchTrack(times=times, f0=f0, voiced=voiced, periodicity=1.0 - cand.ap[at, pick])
    return _Analysis(track=track, level_db=cand.level_db, r=r_frame, peak=peak_rel)


def _analyse(
    x: npt.ArrayLike,
    *,
    sr: int,
    fmin: float,
    fmax: float,
    hop_s: float,
    frame_s: float,
    threshold: float,
    stream: PitchStream | None = None,
    at: int = 0,
) -> _Analysis:
    """Pitch analysis of ``x`` on its own (silence before and after it). With ``stream``, the track that
    ``x`` was cut from at sample ``at``, the frames the stream has already analysed are reused."""
    setup = _setup(sr, fmin, fmax, hop_s, frame_s, threshold)
    sig = _as_signal(x)
    n_frames = 1 + (len(sig) - setup.frame) // setup.hop if len(sig) >= setup.frame else 0
    global_peak = float(np.max(np.abs(sig - sig.mean()))) if len(sig) else 0.0
    padded = np.concatenate([np.zeros(setup.lead), sig, np.zeros(max(0, setup.reach - setup.frame))])
    reused = stream.candidates(setup, at, len(sig)) if stream is not None and n_frames else None
    lo, hi = (0, 0) if reused is None else (reused[0], reused[0] + len(reused[1]))
    parts = [_candidates(setup, padded, setup.lead, lo)] if lo > 0 else []
    if reused is not None:
        parts.append(reused[1])
    parts.append(_candidates(setup, padded, setup.lead + hi * setup.hop, n_frames - hi))
    return _path(setup, _Candidates.join(parts), global_peak)


class PitchStream:
    """The per-frame pitch analysis of one track's audio as it arrives, so measuring a turn when it ends
    only has to choose the path: the frame work (~90% of ``turn_features``) is spread over the turn.

    The stream's signal starts at sample ``origin`` of the track (silence before it, as a turn analysed on
    its own). ``feed`` appends audio (cheap: a copy into a queue; any thread); ``catch_up`` analyses the
    frames that audio completes; ``candidates`` hands ``_analyse`` the frames of a span of the track.
    Frames are those of the defaults of ``turn_features``; only the last ``keep_s`` of them are kept.
    Audio queued but not analysed is capped at ``max_queued_s``: past it the stream gives up (``dead``)
    and turns are measured from their own audio as before, so nothing grows without bound.
    ``feed`` is called from one thread; ``catch_up`` and ``candidates`` from any (a lock orders them).
    """

    def __init__(self, origin: int, *, keep_s: float = 8.0, max_queued_s: float = 30.0, sr: int = 8000) -> None:
        self.setup = _setup(sr, *_TURN_PITCH)
        self.origin = origin
        self.end = origin  # the sample after the last one fed
        self.dead = False
        self._keep = max(1, round(keep_s * sr / self.setup.hop))  # frames kept
        self._max_queued = round(max_queued_s * sr)
        self._incoming: deque[npt.NDArray[np.int16]] = deque()
        self._drained = origin  # samples up to here have left ``_incoming``
        self._buf = np.zeros(self.setup.lead)  # samples from ``_buf_at`` on (silence before ``origin``)
        self._buf_at = origin - self.setup.lead
        self._next = 0  # the next frame to analyse (frame j starts at origin + j * hop)
        self._first = 0  # the oldest frame kept
        self._parts: list[_Candidates] = []
        self._lock = threading.Lock()

    def feed(self, samples: npt.NDArray[np.int16]) -> None:
        """Append the track's next ``samples`` (int16, as the ring holds them; the stream keeps the array)."""
        if self.dead or not len(samples):
            return
        self._incoming.append(samples)
        self.end += len(samples)
        if self.end - self._drained > self._max_queued:  # nobody is catching up: let it all go
            with self._lock:
                self.dead = True
                self._incoming.clear()
                self._parts, self._buf = [], np.zeros(0)

    @property
    def behind(self) -> int:
        """Frames whose audio has arrived but which are not analysed yet (approximate, lock-free)."""
        return max(0, (self.end - self.origin - self.setup.reach) // self.setup.hop + 1 - self._next)

    def catch_up(self, until: int | None = None) -> None:
        """Analyse the frames the audio fed so far completes (only those ending by sample ``until``)."""
        with self._lock:
            self._catch_up(until)

    def _catch_up(self, until: int | None) -> None:
        if self.dead:
            return
        parts = []
        while self._incoming:
            part = self._incoming.popleft()
            self._drained += len(part)
            parts.append(part)
        if parts:
            self._buf = np.concatenate([self._buf, np.concatenate(parts).astype(np.float64) / 32768.0])
        s = self.setup
        # Frames more than ``keep_s`` before the newest audio can't be in any turn's window any more (the
        # open turn ends at the earliest now): a long turn's early frames are skipped, not analysed.
        newest = self._buf_at + len(self._buf)
        skip_to = -(-(newest - self._keep * s.hop - self.origin) // s.hop)
        if skip_to > self._next:
            self._parts, self._first = [], skip_to
            self._next = skip_to
            keep_from = self.origin + self._next * s.hop - s.lead
            if keep_from > self._buf_at:
                self._buf, self._buf_at = self._buf[keep_from - self._buf_at :], keep_from
        end = self._buf_at + len(self._buf) if until is None else min(until, self._buf_at + len(self._buf))
        start = self.origin + self._next * s.hop  # the next frame's start
        count = (end - start - s.reach) // s.hop + 1 if end >= start + s.reach else 0
        if count <= 0:
            return
        self._parts.append(_candidates(s, self._buf, start - self._buf_at, count))
        self._next += count
        keep_from = self.origin + self._next * s.hop - s.lead
        self._buf, self._buf_at = self._buf[keep_from - self._buf_at :], keep_from
        if self._next - self._first > self._keep + 256:  # trim, amortised
            kept = _Candidates.join(self._parts)
            drop = self._next - self._keep - self._first
            self._parts, self._first = [kept[drop:]], self._first + drop

    def candidates(self, setup: _Setup, at: int, length: int) -> tuple[int, _Candidates] | None:
        """For ``length`` samples of the track from sample ``at`` analysed on their own (silence around
        them): ``(i, frames)``, the frames from the input's frame ``i`` on that the stream has and that read
        the same samples; None if none do."""
        if setup is not self.setup or (at - self.origin) % setup.hop:
            return None
        with self._lock:
            self._catch_up(at + length)
            if self.dead or not self._parts:
                return None
            offset = (at - self.origin) // setup.hop  # the input's frame i is the stream's frame offset + i
            lo = 0 if at == self.origin else -(-(setup.lead + max(0, self.origin - at)) // setup.hop)
            lo = max(lo, self._first - offset)
            hi = min(self._next - offset, (length - setup.reach) // setup.hop + 1)
            if hi <= lo:
                return None
            kept = _Candidates.join(self._parts)
            self._parts = [kept]
            return lo, kept[lo + offset - self._first : hi + offset - self._first]


def pitch_track(
    x: npt.ArrayLike,
    *,
    sr: int = 8000,
    fmin: float = 60.0,
    fmax: float = 400.0,
    hop_s: float = 0.01,
    frame_s: float = 0.04,
    threshold: float = 0.15,
) -> PitchTrack:
    """The YIN pitch track of ``x`` (mono, shape ``(n,)``, float in [-1, 1) at ``sr`` Hz), all frames at once.

    A frame of ``frame_s`` seconds starts every ``hop_s`` seconds and compares its first ``frame - sr/fmin``
    samples with the same span ``tau`` samples later, for periods from ``sr/fmax`` to ``sr/fmin``.
    ``threshold`` is YIN's absolute threshold on d': the first dip below it is YIN's estimate, which competes
    on the path with the frame's deepest other dips. A frame is voiced when the path prefers a candidate to
    "unvoiced" (its windowed autocorrelation beats ``VOICING_THRESHOLD``; frames quiet relative to the
    input's peak need more) and its level is above ``ENERGY_FLOOR_DBFS``, so silence, digital or line noise,
    is unvoiced. Input shorter than one frame gives an empty track; ``ValueError`` only for bad options.
    """
    return _analyse(x, sr=sr, fmin=fmin, fmax=fmax, hop_s=hop_s, frame_s=frame_s, threshold=threshold).track


def _glottal_marks(sig: FloatArray, sr: int, track: PitchTrack) -> list[FloatArray]:
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
        for direction in (1, -1):
            pos = anchor
            while True:
                period = float(np.interp(pos, at, periods))
                n, near, far = max(3, round(period)), math.ceil(0.8 * period), math.floor(1.25 * period)
                ref = round(pos - n / 2)
                first_start = ref + near if direction > 0 else ref - far
                last_start = first_start + far - near
                if ref < 0 or first_start < 0 or ref + n > len(sig) or last_start + n > len(sig):
                    break
                product = np.correlate(sig[first_start : last_start + n], sig[ref : ref + n], mode="valid")
                starts = np.arange(first_start, last_start + 1)
                norm = np.sqrt((energy[starts + n] - energy[starts]) * (energy[ref + n] - energy[ref]))
                corr = product / np.maximum(norm, 1e-300)
                i = int(np.argmax(corr))
                offset = 0.0
                if 0 < i < len(corr) - 1:
                    curve = corr[i - 1] - 2.0 * corr[i] + corr[i + 1]
                    offset = min(1.0, max(-1.0, float(0.5 * (corr[i - 1] - corr[i + 1]) / curve))) if curve < 0 else 0.0
                pos += starts[i] + offset - ref
                if not lo <= pos <= hi:
                    break
                if corr[i] > _MIN_PULSE_CORRELATION:
                    marks.append(pos)
        runs.append(np.sort(np.asarray(marks)))
    return runs


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


def _jitter_shimmer(
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


def _speaking_rate(sig: FloatArray, sr: int, track: PitchTrack) -> float:
    """Syllable nuclei per second of ``sig``: prominent, voiced peaks of the vowel-band intensity."""
    if len(track.times) < 3:
        return 0.0
    sos = signal.butter(2, [_NUCLEUS_BAND_HZ[0], min(_NUCLEUS_BAND_HZ[1], 0.45 * sr)], "bandpass", fs=sr, output="sos")
    power = np.concatenate([[0.0], np.cumsum(signal.sosfilt(sos, sig) ** 2)])
    # Intensity over 50 ms centred on each pitch frame, then a 3-frame moving average.
    centres = np.round(track.times * sr).astype(np.intp)
    a = np.clip(centres - round(0.025 * sr), 0, len(sig))
    b = np.clip(centres + round(0.025 * sr), 0, len(sig))
    env = 10.0 * np.log10(np.maximum((power[b] - power[a]) / np.maximum(b - a, 1), 1e-12))
    env = np.convolve(np.pad(env, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    floor = max(float(np.percentile(env, 99)) - _NUCLEUS_SILENCE_DB, float(np.median(env)), ENERGY_FLOOR_DBFS)
    peaks, _ = signal.find_peaks(env, height=floor, prominence=_NUCLEUS_MIN_DIP_DB)
    return float(np.count_nonzero(track.voiced[peaks]) / (len(sig) / sr))


def turn_features(
    x: npt.ArrayLike, *, sr: int = 8000, stream: PitchStream | None = None, at: int = 0
) -> dict[str, float | None]:
    """Prosodic features of one turn ``x`` (mono, shape ``(n,)``, float in [-1, 1) at ``sr`` Hz).

    Keys are ``FEATURE_KEYS``, units in the names:
    - ``pitch_mean_hz``, ``pitch_std_hz``: over voiced frames of ``pitch_track`` (default options);
    - ``pitch_range_st``: 95th minus 5th percentile of voiced F0, in semitones;
    - ``pitch_slope_st_per_s``: least-squares slope of F0 in semitones against time, voiced frames;
    - ``energy_db``: dBFS of the mean power of the active frames (above ``ENERGY_FLOOR_DBFS`` and within
      ``ACTIVE_RANGE_DB`` of the turn's 99th-percentile frame); ``energy_range_db``: their 95th minus 5th
      percentile level;
    - ``speaking_rate``: syllable nuclei per second of turn, as de Jong & Wempe: peaks of the 300-2500 Hz
      intensity at least 2 dB above the dip before them, not 25 dB below the turn's loud frames, voiced;
    - ``voiced_ratio``: voiced frames / active frames (a voiced frame counts as active);
    - ``jitter``, ``shimmer``: local, as ratios (Praat prints %): mean absolute difference of consecutive
      glottal periods (cycle amplitudes) over their mean, within voiced runs; periods must be 0.8/fmax to
      1.25/fmin and pairs within Praat's factors (1.3, 1.6). A cycle's amplitude is the Hann-weighted RMS
      of its peak region (20% of a period either side of its mark), as Praat measures it;
    - ``hnr_db``: mean of 10 log10(r / (1 - r)), r the normalised cross-correlation at the pitch period,
      over the frames Praat's cross-correlation harmonicity counts: the voiced frames, plus unvoiced frames
      loud enough that r > 2 - frame peak / (0.1 x turn peak), at their best lag. Voiced frames alone follow
      Praat's "Harmonicity: Get mean" less well (Pearson 0.75 against 0.97 over real turns). Capped at 60 dB;
      at 8 kHz a clean voice whose period is not a whole number of samples reads ~30-40 dB.
    Pitch and voice-quality values are None with fewer than ``MIN_VOICED_FRAMES`` voiced frames, energy
    values and ``voiced_ratio`` without active frames. Never raises on silence, DC, clipping or short input.
    ``stream``: the track's ``PitchStream``, ``x`` being its samples from ``at`` on: the frames it has analysed
    already are reused (the result is the same, sooner).
    """
    sig = _as_signal(x)
    fmin, fmax, hop_s, frame_s, threshold = _TURN_PITCH
    analysis = _analyse(
        sig, sr=sr, fmin=fmin, fmax=fmax, hop_s=hop_s, frame_s=frame_s, threshold=threshold, stream=stream, at=at
    )
    track = analysis.track
    out: dict[str, float | None] = dict.fromkeys(FEATURE_KEYS)
    out["speaking_rate"] = _speaking_rate(sig, sr, track) if len(sig) else 0.0
    loud = analysis.level_db > ENERGY_FLOOR_DBFS
    if loud.any():
        active = loud & (analysis.level_db >= np.percentile(analysis.level_db[loud], 99) - ACTIVE_RANGE_DB)
        levels = analysis.level_db[active]
        out["energy_db"] = float(10.0 * np.log10(np.mean(10.0 ** (levels / 10.0))))
        out["energy_range_db"] = float(np.percentile(levels, 95) - np.percentile(levels, 5))
        out["voiced_ratio"] = float(np.count_nonzero(track.voiced) / np.count_nonzero(active | track.voiced))
    if np.count_nonzero(track.voiced) < MIN_VOICED_FRAMES:
        return out
    f0 = track.f0[track.voiced]
    semitones = 12.0 * np.log2(f0 / 100.0)
    out["pitch_mean_hz"] = float(np.mean(f0))
    out["pitch_std_hz"] = float(np.std(f0))
    out["pitch_range_st"] = float(np.percentile(semitones, 95) - np.percentile(semitones, 5))
    out["pitch_slope_st_per_s"] = float(np.polyfit(track.times[track.voiced], semitones, 1)[0])
    r = analysis.r
    counted = track.voiced | ((r > 0.0) & (r > 2.0 - analysis.peak / _HNR_SILENCE))
    r = np.clip(r[counted & (r > 0.0)], 1e-6, 1.0 - 1e-6)  # caps the HNR at 60 dB
    out["hnr_db"] = float(np.mean(10.0 * np.log10(r / (1.0 - r)))) if len(r) else None
    centred = sig - np.mean(sig)
    marks = _glottal_marks(centred, sr, track)
    out["jitter"], out["shimmer"] = _jitter_shimmer(centred, marks, 0.8 * sr / fmax, 1.25 * sr / fmin)
    return out


_RELATIVE_KEYS: Final = {"pitch": ("pitch_z", "pitch_delta_st"), "energy": ("energy_z", "energy_delta_db")}
RELATIVE_KEYS: Final = tuple(k for keys in _RELATIVE_KEYS.values() for k in keys)


class SpeakerBaseline:
    """Running statistics of one speaker's turns in a call, so "raised voice" means raised for that person.

    Welford mean and variance of each turn's ``pitch_mean_hz`` (in semitones re 100 Hz) and ``energy_db``.
    ``relative`` compares a turn with the turns *before* it: call ``relative(f)`` then ``update(f)``, so a
    sudden raise stands out instead of diluting its own reference. The spread has a floor
    (``MIN_STD_ST``, ``MIN_STD_DB``) so two near-identical early turns don't make every later one extreme.
    """

    MIN_TURNS: Final = 2
    MIN_STD_ST: Final = 0.5  # semitones
    MIN_STD_DB: Final = 1.0  # dB

    __slots__ = ("_stats",)

    def __init__(self) -> None:
        self._stats: dict[str, list[float]] = {}
        self.reset()

    def reset(self) -> None:
        self._stats = {"pitch": [0.0, 0.0, 0.0], "energy": [0.0, 0.0, 0.0]}  # count, mean, sum of squares

    @staticmethod
    def _values(features: dict[str, float | None]) -> dict[str, float | None]:
        pitch, energy = features.get("pitch_mean_hz"), features.get("energy_db")
        semitones = (
            12.0 * math.log2(pitch / 100.0) if pitch is not None and math.isfinite(pitch) and pitch > 0 else None
        )
        return {"pitch": semitones, "energy": energy if energy is not None and math.isfinite(energy) else None}

    @property
    def turns(self) -> dict[str, int]:
        """Turns counted so far per statistic (``pitch``, ``energy``)."""
        return {name: int(stats[0]) for name, stats in self._stats.items()}

    def update(self, features: dict[str, float | None]) -> None:
        """Count one turn's features (a ``turn_features`` dict); None values are skipped."""
        for name, value in self._values(features).items():
            if value is None:
                continue
            stats = self._stats[name]
            stats[0] += 1
            delta = value - stats[1]
            stats[1] += delta / stats[0]
            stats[2] += delta * (value - stats[1])

    def relative(self, features: dict[str, float | None]) -> dict[str, float | None]:
        """A turn against the turns counted so far: ``pitch_z``, ``energy_z`` (in sample standard deviations,
        floored) and ``pitch_delta_st``, ``energy_delta_db`` (semitones and dB above the speaker's mean);
        None until ``MIN_TURNS`` turns are counted or when the turn lacks the value."""
        out: dict[str, float | None] = {}
        floors = {"pitch": self.MIN_STD_ST, "energy": self.MIN_STD_DB}
        for name, value in self._values(features).items():
            z, delta = _RELATIVE_KEYS[name]
            count, mean, m2 = self._stats[name]
            if value is None or count < self.MIN_TURNS:
                out[z] = out[delta] = None
                continue
            std = max(math.sqrt(m2 / (count - 1)), floors[name])
            out[z] = (value - mean) / std
            out[delta] = value - mean
        return out
