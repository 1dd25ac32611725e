"""Phone-channel augmentation for training: level, band-limiting, noise, clipping, the G.711 round trip.

Loudness is confounded with emotion and corpus in the acted corpora (RAVDESS calm near -56 dBFS, angry
near -35 dBFS; EmoDB peak-normalised), so each training example gets a fresh active level drawn
independently of its label: the model cannot learn "loud means angry" from level, only from delivery.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from engine.g711 import decode_ulaw, encode_ulaw
from models.audio import SAMPLE_RATE, Audio, active_level_db

SPEEDS = ((10, 9), (20, 19), (19, 20), (9, 10))  # resampling ratios: 0.9x .. 1.11x speed


class PhoneChannel:
    """Random telephone channels drawn from a seeded generator: ``channel(x)`` returns a new array."""

    def __init__(self, rng: np.random.Generator, *, level_db: tuple[float, float] = (-45.0, -10.0)) -> None:
        self.rng = rng
        self.level_db = level_db
        # A small bank of band-pass filters (high-pass 150-450 Hz, low-pass 2.8-3.7 kHz): designing
        # one per example would cost more than the rest of the augmentation.
        self.filters = [
            signal.butter(
                int(rng.integers(2, 7)),
                [float(rng.uniform(150, 450)), float(rng.uniform(2800, 3700))],
                btype="bandpass",
                fs=SAMPLE_RATE,
                output="sos",
            )
            for _ in range(24)
        ]

    def noise(self, n: int) -> Audio:
        """Unit-RMS noise: white, pink or brown."""
        white = self.rng.standard_normal(n)
        kind = int(self.rng.integers(3))
        if kind > 0:
            spectrum = np.fft.rfft(white)
            f = np.maximum(np.arange(len(spectrum)), 1.0)
            spectrum /= f ** (0.5 * kind)
            white = np.fft.irfft(spectrum, n)
        return (white / max(float(np.sqrt(np.mean(white**2))), 1e-9)).astype(np.float32)

    def __call__(self, x: Audio) -> Audio:
        rng = self.rng
        y = x.astype(np.float64)
        if rng.random() < 0.5:  # speed perturbation: another vocal tract and pitch, as another talker
            up, down = SPEEDS[int(rng.integers(len(SPEEDS)))]
            y = signal.resample_poly(y, up, down)
        if rng.random() < 0.5:
            sos = self.filters[int(rng.integers(len(self.filters)))]
            y = signal.sosfilt(sos, y)
        level = active_level_db(y.astype(np.float32))
        if level > -100:
            y = y * 10 ** ((rng.uniform(*self.level_db) - level) / 20)
            level = active_level_db(y.astype(np.float32))
        if rng.random() < 0.5 and len(y) > 0:
            snr = rng.uniform(8.0, 40.0)
            y = y + self.noise(len(y)) * 10 ** ((level - snr) / 20)
        pcm = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)  # loud draws clip, as phones do
        if rng.random() < 0.8:
            pcm = decode_ulaw(encode_ulaw(pcm))
        return pcm.astype(np.float32) / 32768.0
