"""Whisper's input features: an 80-band log-mel spectrogram of 16 kHz audio, in numpy.

The recogniser (CTranslate2's Whisper, ``actors/asr.py``) takes features, not audio. These are the features
OpenAI's Whisper computes (``whisper/audio.py``, MIT): a 400-point STFT (periodic Hann window, hop 160, centred
with reflect padding, the last frame dropped), its power, Slaney-style mel filters from 0 to 8 kHz, log10
floored at 1e-10, clamped to 8 below the maximum, then scaled as (x + 4) / 4. A 30 s window is 3000 frames.
``tests/test_mel.py`` holds it to torch's STFT with torchaudio's Slaney filters.
"""

from __future__ import annotations

import functools
from typing import Final

import numpy as np
import numpy.typing as npt

SR: Final = 16_000
N_FFT: Final = 400
HOP: Final = 160
N_MELS: Final = 80
FRAMES_PER_WINDOW: Final = 3000  # 30 s

FloatArray = npt.NDArray[np.float32]


def _hz_to_mel(f: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f < min_log_hz, f / f_sp, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep)


def _mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m < min_log_mel, m * f_sp, min_log_hz * np.exp(logstep * (m - min_log_mel)))


@functools.cache
def mel_filters() -> npt.NDArray[np.float64]:
    """(80, 201) triangular filters on the Slaney mel scale, area-normalised (librosa's default)."""
    freqs = np.linspace(0, SR / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SR / 2)), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@functools.cache
def _window() -> npt.NDArray[np.float64]:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def log_mel(audio: FloatArray, frames: int | None = FRAMES_PER_WINDOW) -> FloatArray:
    """(80, frames) features of ``audio`` (16 kHz float32), zero-padded or cut to ``frames`` (None: as long
    as the audio)."""
    x = np.asarray(audio, dtype=np.float64)
    if frames is not None:
        x = np.pad(x[: frames * HOP], (0, max(0, frames * HOP - len(x))))
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    view = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:-1]
    power = np.abs(np.fft.rfft(view * _window(), axis=1)) ** 2
    mel = mel_filters() @ power.T
    logged = np.log10(np.maximum(mel, 1e-10))
    logged = np.maximum(logged, logged.max() - 8.0)
    out: FloatArray = ((logged + 4.0) / 4.0).astype(np.float32)
    return out
