"""Pitch of one track: YIN candidates per frame, a Viterbi path through them, and its streaming form.

Pure numpy/scipy, no I/O. Audio is mono float in [-1, 1) at 8000 Hz (the telephone band). Levels are dBFS
with 0 dBFS an RMS of 1.0, so a full-scale sine sits at -3.01 dBFS.

Pitch is YIN (de Cheveigné & Kawahara 2002): the difference function by FFT, its cumulative mean normalised
form d', the absolute threshold and parabolic refinement. Frame by frame, YIN makes octave errors where a
telephone voice is nearly periodic at two lags (creak; a fundamental below the 300 Hz band edge), so each
frame keeps its best d' dips as candidates and a Viterbi path chooses among them and "unvoiced", scoring them
as Boersma's (1993) autocorrelation tracker does, with Praat's default costs. On real calls that brings the
frames more than 20% away from Praat's F0 from ~8% to under 1%.

Here: ``pitch_track`` (a ``PitchTrack``), ``analyse`` (the track plus the per-frame level and correlation that
``engine.prosody`` and ``engine.voice_quality`` measure from) and ``PitchStream`` (the frame work done as a
track's audio arrives, so measuring a turn when it ends only chooses the path).
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
from scipy import fft

from engine import _kernels

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

ENERGY_FLOOR_DBFS: Final = -70.0  # a frame below this level is silence: never voiced, never active

# Path scoring, as Praat's "To Pitch (ac)" defaults; a candidate's strength is its windowed autocorrelation.
VOICING_THRESHOLD: Final = 0.45  # strength of "unvoiced": a candidate must beat it for the frame to be voiced
SILENCE_THRESHOLD: Final = 0.03  # frames whose peak is near or below this fraction of the input's peak favour unvoiced
OCTAVE_COST: Final = 0.01  # strength bonus per octave up, so a perfectly periodic signal gets its own period
OCTAVE_JUMP_COST: Final = 0.35  # per octave jumped between consecutive voiced frames
VOICED_UNVOICED_COST: Final = 0.14  # per voicing transition
_N_DIPS: Final = 4  # d' dips kept per frame besides YIN's own pick
# Frames per vectorised block: bounds memory on long inputs and keeps a block's FFT temporaries in cache.
_BLOCK: Final = 128
TURN_PITCH: Final = (60.0, 400.0, 0.01, 0.04, 0.15)  # fmin, fmax, hop_s, frame_s, threshold of turn_features


@dataclass(frozen=True, slots=True)
class PitchTrack:
    """A pitch contour, one value per analysis frame (every array has shape ``(n_frames,)``)."""

    times: FloatArray  # s from the start of the input: the centre of the span each frame compares
    f0: FloatArray  # Hz, NaN where unvoiced
    voiced: BoolArray
    periodicity: FloatArray  # 1 - d'(tau) at the frame's lag: ~1 periodic, ~0 (or below) aperiodic


@dataclass(frozen=True, slots=True)
class PitchAnalysis:
    track: PitchTrack
    level_db: FloatArray  # dBFS per frame, frame mean removed (so DC is not level)
    r: FloatArray  # normalised cross-correlation at the frame's period (its best candidate's where unvoiced)
    peak: FloatArray  # frame peak / input peak, in [0, 1]


def as_signal(x: npt.ArrayLike) -> FloatArray:
    """``x`` as a flat float64 array; NaN reads as silence and infinities as full scale."""
    return np.nan_to_num(np.asarray(x, dtype=np.float64).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)


def _sinc_table(half: int = 8, steps: int = 8) -> tuple[IntArray, FloatArray]:
    """Taps (relative lags) and Hann-windowed sinc weights, shape ``(2*steps + 1, 2*half)``, that evaluate a
    band-limited sequence at offsets -1, -1 + 1/steps, ..., +1 from an integer lag."""
    taps = np.arange(-half + 1, half + 1)
    offsets = np.linspace(-1.0, 1.0, 2 * steps + 1)
    dist = offsets[:, None] - taps[None, :]
    weights = np.sinc(dist) * (0.5 + 0.5 * np.cos(np.pi * np.clip(dist / (half + 1), -1.0, 1.0)))
    return taps, weights


_SINC_WEIGHTS = _sinc_table()[1]
_NONE = np.empty(0)  # no window, no peaks (_kernels.centred_frames)


def _best_path(strength: FloatArray, log_f: FloatArray) -> IntArray:
    """Viterbi over (n_frames, n_states), the last state 'unvoiced': maximum strength minus transition costs
    (a jump between voiced states costs ``OCTAVE_JUMP_COST`` per octave, a voicing change
    ``VOICED_UNVOICED_COST``). Compiled (``engine/csrc/pitch.c``): frame by frame, numpy took ~2 us of calls each."""
    n, s = strength.shape
    path = np.empty(n, dtype=np.intp)
    _kernels.best_path(
        np.ascontiguousarray(strength, dtype=np.float64),
        np.ascontiguousarray(log_f, dtype=np.float64),
        s,
        OCTAVE_JUMP_COST,
        VOICED_UNVOICED_COST,
        path,
    )
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
    valid, power, ac_peak = np.zeros((count, k), dtype=np.bool_), np.zeros(count), np.zeros(count)  # valid: 0/1 bytes
    lags = s.tau_max + 1
    buf = np.ascontiguousarray(buf, dtype=np.float64)
    for start in range(0, count, _BLOCK):
        nb = min(_BLOCK, count - start)
        out = slice(start, start + nb)
        at = first + start * s.hop
        # Each frame without its mean (compiled: numpy's mean bit for bit, without a temporary per step).
        block = np.empty((nb, s.frame))
        _kernels.centred_frames(buf, at, s.hop, s.frame, _NONE, block, s.frame, _NONE)
        # YIN steps 1-3 need r(tau) = sum_{j<W} x[j] x[j+tau], by FFT (no wrap-around while n_fft >= frame).
        cross = np.conj(fft.rfft(block[:, : s.width], s.n_fft)) * fft.rfft(block, s.n_fft)
        r = fft.irfft(cross, s.n_fft, overwrite_x=True)
        # Strength: the Hann-windowed autocorrelation, divided by the window's own, at each candidate's lag. The
        # windowed spans come zero-padded to the FFT's length; their peaks go to ac_peak.
        acf = np.empty((nb, s.n_fft_ac))
        _kernels.centred_frames(buf, at + s.ac_offset, s.hop, s.ac_len, s.hann, acf, s.n_fft_ac, ac_peak[out])
        ac = fft.irfft(np.abs(fft.rfft(acf)) ** 2, s.n_fft_ac, overwrite_x=True)
        # The rest frame by frame, compiled (engine/csrc/pitch.c): YIN's d and d' and their dips; its pick and
        # the next deepest dips (numpy's argpartition, whose choice among equal depths the kernel cannot repeat);
        # their lags refined by a parabola, and the cross-correlation and windowed autocorrelation at each.
        d, dn, e_lag = np.empty((nb, lags)), np.empty((nb, lags)), np.empty((nb, lags))
        depth, yin = np.empty((nb, s.tau_max - s.tau_min)), np.empty(nb, dtype=np.intp)
        _kernels.yin_dips(block, r, s.width, s.tau_min, s.tau_max, s.threshold, d, dn, e_lag, depth, yin, power[out])
        others = np.argpartition(depth, _N_DIPS - 1, axis=1)[:, :_N_DIPS]
        idx = np.concatenate([yin[:, None], others], axis=1) + s.tau_min
        _kernels.yin_candidates(
            idx, d, dn, e_lag, r, ac, s.window_ac, _SINC_WEIGHTS, len(_SINC_WEIGHTS), s.sr / s.fmax, s.sr / s.fmin,
            lag[out], ap[out], xcorr[out], strength[out], valid[out],
        )  # fmt: skip
    # strength holds each candidate's windowed-autocorrelation peak; the octave bonus makes it the path's score.
    level_db = 10.0 * np.log10(np.maximum(power / s.frame, 1e-12))
    loud = (level_db > ENERGY_FLOOR_DBFS)[:, None]
    strength = np.where(valid & loud, strength + OCTAVE_COST * np.log2(s.sr / lag / s.fmin), -np.inf)
    return _Candidates(lag, ap, xcorr, strength, level_db, ac_peak)


def _path(setup: _Setup, cand: _Candidates, global_peak: float) -> PitchAnalysis:
    """The voicing decision and F0 of every frame: the best path through the candidates and "unvoiced",
    whose strength grows for frames quiet relative to the input's peak (``global_peak``)."""
    n, k = len(cand), _N_DIPS + 1
    times = (np.arange(n) * setup.hop + setup.centre) / setup.sr
    peak_rel = cand.ac_peak / max(global_peak, 1e-12)
    if n == 0:
        track = PitchTrack(times=times, f0=times.copy(), voiced=np.zeros(0, dtype=np.bool_), periodicity=times.copy())
        return PitchAnalysis(track=track, level_db=cand.level_db, r=peak_rel.copy(), peak=peak_rel)
    relative = peak_rel / (SILENCE_THRESHOLD / (1.0 + VOICING_THRESHOLD))
    strength = np.concatenate([cand.strength, (VOICING_THRESHOLD + np.maximum(0.0, 2.0 - relative))[:, None]], axis=1)
    path = _best_path(strength, np.concatenate([np.log2(setup.sr / cand.lag), np.zeros((n, 1))], axis=1))
    voiced, at = path < k, np.arange(n)
    pick = np.where(voiced, path, 0)  # unvoiced frames report YIN's own pick
    f0 = np.where(voiced, setup.sr / cand.lag[at, pick], np.nan)
    r_frame = np.where(voiced, cand.xcorr[at, pick], np.max(cand.xcorr, axis=1))
    track = PitchTrack(times=times, f0=f0, voiced=voiced, periodicity=1.0 - cand.ap[at, pick])
    return PitchAnalysis(track=track, level_db=cand.level_db, r=r_frame, peak=peak_rel)


def analyse(
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
) -> PitchAnalysis:
    """Pitch analysis of ``x`` on its own (silence before and after it). With ``stream``, the track that
    ``x`` was cut from at sample ``at``, the frames the stream has already analysed are reused."""
    setup = _setup(sr, fmin, fmax, hop_s, frame_s, threshold)
    sig = as_signal(x)
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
    frames that audio completes; ``candidates`` hands ``analyse`` the frames of a span of the track.
    Frames are those of the defaults of ``turn_features``; only the last ``keep_s`` of them are kept.
    Audio queued but not analysed is capped at ``max_queued_s``: past it the stream gives up (``dead``)
    and turns are measured from their own audio as before, so nothing grows without bound.
    ``feed`` is called from one thread; ``catch_up`` and ``candidates`` from any (a lock orders them).
    """

    def __init__(self, origin: int, *, keep_s: float = 8.0, max_queued_s: float = 30.0, sr: int = 8000) -> None:
        self.setup = _setup(sr, *TURN_PITCH)
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
    return analyse(x, sr=sr, fmin=fmin, fmax=fmax, hop_s=hop_s, frame_s=frame_s, threshold=threshold).track
