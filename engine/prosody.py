"""Prosody of one track: per-turn features and per-speaker baselines.

Pure numpy/scipy, no I/O. Audio is mono float in [-1, 1) at 8000 Hz (the telephone band). Levels are dBFS
with 0 dBFS an RMS of 1.0, so a full-scale sine sits at -3.01 dBFS; pitch intervals are semitones.

``turn_features`` measures a turn (``FEATURE_KEYS``): pitch statistics over the track of ``engine.pitch``,
level, speaking rate (syllable nuclei, counted here), voicing, and voice quality (``engine.voice_quality``).
``SpeakerBaseline`` compares a turn with the speaker's earlier turns (``RELATIVE_KEYS``).
"""

from __future__ import annotations

import functools
import importlib
import math
import types
from typing import Final

import numpy as np
import numpy.typing as npt

from engine import costs
from engine.pitch import (
    ENERGY_FLOOR_DBFS,
    TURN_PITCH,
    FloatArray,
    PitchAnalysis,
    PitchStream,
    PitchTrack,
    analyse,
    as_signal,
)
from engine.voice_quality import glottal_marks, hnr_db, jitter_shimmer

ACTIVE_RANGE_DB: Final = 30.0  # active frames are also within this of the turn's loud (99th percentile) frames
MIN_VOICED_FRAMES: Final = 3  # fewer voiced frames: pitch and voice-quality features are None

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


def _signal() -> types.ModuleType:
    """scipy.signal, imported on first use: its import costs ~1.5 s, which a call host (or the directory that
    starts hosts) should not wait for at start. ``warm`` imports it ahead, off the caller's thread."""
    return importlib.import_module("scipy.signal")


def warm() -> None:
    """Import what the first turn's features need (run in a background thread at a host's start)."""
    _nucleus_band(8000)


@functools.lru_cache(maxsize=4)
def _nucleus_band(sr: int) -> FloatArray:
    """The vowel-band filter of ``_speaking_rate`` (second-order sections), designed once per rate."""
    band = [_NUCLEUS_BAND_HZ[0], min(_NUCLEUS_BAND_HZ[1], 0.45 * sr)]
    sos: FloatArray = _signal().butter(2, band, "bandpass", fs=sr, output="sos")
    return sos


def _speaking_rate(sig: FloatArray, sr: int, track: PitchTrack) -> float:
    """Syllable nuclei per second of ``sig``: prominent, voiced peaks of the vowel-band intensity."""
    if len(track.times) < 3:
        return 0.0
    signal = _signal()
    power = np.concatenate([[0.0], np.cumsum(signal.sosfilt(_nucleus_band(sr), sig) ** 2)])
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
    - ``pitch_mean_hz``, ``pitch_std_hz``: over voiced frames of ``engine.pitch.pitch_track`` (default options);
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
    sig = as_signal(x)
    fmin, fmax, hop_s, frame_s, threshold = TURN_PITCH
    with costs.stage("pitch"):
        analysis = analyse(
            sig, sr=sr, fmin=fmin, fmax=fmax, hop_s=hop_s, frame_s=frame_s, threshold=threshold, stream=stream, at=at
        )
    with costs.stage("turn_features"):
        out = _level_features(sig, sr, analysis)
    track = analysis.track
    if np.count_nonzero(track.voiced) < MIN_VOICED_FRAMES:
        return out
    with costs.stage("voice_quality"):
        out["hnr_db"] = hnr_db(analysis.r, analysis.peak, track.voiced)
        centred = sig - np.mean(sig)
        marks = glottal_marks(centred, sr, track)
        out["jitter"], out["shimmer"] = jitter_shimmer(centred, marks, 0.8 * sr / fmax, 1.25 * sr / fmin)
    return out


def _level_features(sig: FloatArray, sr: int, analysis: PitchAnalysis) -> dict[str, float | None]:
    """``turn_features`` but voice quality: pitch statistics, level, speaking rate and voicing."""
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
