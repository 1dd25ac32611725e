"""The emotion network (``models.net.EmotionNet``) in numpy, for inference: the same weights, the same arithmetic
in float32, one window at a time, no torch (tests/test_live_model.py holds it to the torch network's logits).

Why not torch: a call host scoring its own turns keeps torch (~500 MiB of RSS per process) out of every host,
and a turn costs ~1 ms of CPU per second of audio here (``bench/model.py``), where the separate torch process
it replaces spent ~9 ms per turn, most of it on its Ray call (docs/density.md). Batch norms are folded into
the layers before them, as ``EmotionNet.fuse`` does. Its matrix products are small: they want one BLAS thread,
which Ray's workers have (Ray sets OMP_NUM_THREADS to their CPUs, 1 for a call host, and OpenBLAS obeys it);
two threads cost ~2x the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import fft

from models.net_config import FLOOR_DB, FRONT_END, GATE_DB, PITCH_HZ

F32 = npt.NDArray[np.float32]
_EPS = 1e-5  # torch's BatchNorm1d default, which the network uses


class NumpyEmotionNet:
    """``__call__(window)``: a window of 8 kHz audio (float32 in [-1, 1)) -> its logits ``(n_classes,)``."""

    def __init__(self, state: dict[str, npt.NDArray[Any]], *, cmn: bool = False, pitch_bins: int = 0, **other: Any):
        """``state``: the torch network's state dict as arrays; then its options (``EmotionNet``'s). ``width``
        and ``embed`` are read from the weights' shapes and ``dropout`` does nothing at inference; any other
        option would change the arithmetic, so it is refused rather than ignored."""
        unknown = sorted(set(other) - {"width", "embed", "dropout"})
        if unknown:
            raise ValueError(f"network option(s) {unknown} are not supported by the numpy model (models/numpy_net.py)")
        s = {k: np.asarray(v, dtype=np.float32) for k, v in state.items() if np.asarray(v).dtype.kind == "f"}
        self.cmn, self.pitch_bins = cmn, pitch_bins
        self.n_fft, self.hop = int(FRONT_END["n_fft"]), int(FRONT_END["hop_length"])
        window = s["front.mel.spectrogram.window"]  # torch.stft centres a shorter window in n_fft
        left = (self.n_fft - len(window)) // 2
        self.window = np.zeros(self.n_fft, np.float32)
        self.window[left : left + len(window)] = window
        self.fb = s["front.mel.mel_scale.fb"]  # (n_fft // 2 + 1, n_mels)
        if pitch_bins:
            self.lag_matrix, self.lag0 = lag_transform(pitch_bins, self.n_fft, len(window))
        self.norm = _affine(s, "norm")
        self.convs: list[tuple[F32, F32, int, int, int]] = []  # (weight (O, C * K), bias, K, stride, dilation)
        for i, (stride, dilation) in enumerate([(2, 1), (1, 2), (1, 3), (1, 1)]):
            w, b = _fold(s[f"frames.{i}.0.weight"], s[f"frames.{i}.0.bias"], _affine(s, f"frames.{i}.1"))
            self.convs.append((w.reshape(w.shape[0], -1), b, w.shape[2], stride, dilation))
        self.attn = [(s[f"pool.attn.{i}.weight"][:, :, 0], s[f"pool.attn.{i}.bias"]) for i in (0, 2)]
        hidden = _fold(s["head.1.weight"], s["head.1.bias"], _affine(s, "head.2"))
        self.head = [hidden, (s["head.5.weight"], s["head.5.bias"])]

    def features(self, x: F32) -> F32:
        """``LogMel`` then the input batch norm: ``(n_mels + pitch_bins, T)``."""
        if len(x) < self.n_fft:
            x = np.pad(x, (0, self.n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop] * self.window
        spectrum = fft.rfft(frames, axis=1)  # scipy's: in float32, ~6x numpy's (float64) for these frames
        power = spectrum.real**2 + spectrum.imag**2  # (T, n_fft // 2 + 1), float32
        mel = power @ self.fb
        mel += np.float32(1e-10)
        spec = np.log10(mel)
        spec *= np.float32(10.0)  # (T, n_mels), dB
        # The torch network takes the frame's energy as 10 log10 of the sum of 10 ** (spec / 10): the mel powers
        # again, to rounding (float noise; tests/test_live_model.py). Summed directly, without a power per value.
        energy = 10.0 * np.log10(mel.sum(axis=1) + np.float32(1e-10))
        level = np.float32(np.quantile(energy, 0.9))
        spec = np.maximum(spec - level, np.float32(-FLOOR_DB)) + np.float32(FLOOR_DB / 2)
        if self.cmn:
            spec = spec - spec.mean(axis=0)
        if self.pitch_bins:
            lags = np.clip((power @ self.lag_matrix) / ((power @ self.lag0)[:, None] + np.float32(1e-10)), -1.0, 1.0)
            spec = np.concatenate([spec, lags * (energy - level > -GATE_DB)[:, None]], axis=1)
        scale, shift = self.norm
        return np.asarray((spec * scale + shift).T, dtype=np.float32)

    def __call__(self, x: F32) -> npt.NDArray[np.float64]:
        h = self.features(x)
        for w, b, k, stride, dilation in self.convs:
            h = _conv_relu(h, w, b, k, stride, dilation)
        (w1, b1), (w2, b2) = self.attn
        hidden = w1 @ h
        hidden += b1[:, None]
        weights = w2 @ np.tanh(hidden, out=hidden)  # attention logits, then (in place) their softmax over time
        weights += b2[:, None]
        weights -= weights.max(axis=1, keepdims=True)
        np.exp(weights, out=weights)
        weights /= weights.sum(axis=1, keepdims=True)
        weighted = weights * h
        mean = weighted.sum(axis=1)
        weighted *= h
        var = weighted.sum(axis=1) - mean * mean
        z = np.concatenate([mean, np.sqrt(np.maximum(var, np.float32(1e-5)))])
        (w1, b1), (w2, b2) = self.head
        return np.asarray(w2 @ np.maximum(w1 @ z + b1, 0.0) + b2, dtype=np.float64)


def _affine(s: dict[str, F32], name: str) -> tuple[F32, F32]:
    """An eval-mode batch norm as ``x * scale + shift``."""
    scale = s[f"{name}.weight"] / np.sqrt(s[f"{name}.running_var"] + np.float32(_EPS))
    return scale, s[f"{name}.bias"] - s[f"{name}.running_mean"] * scale


def _fold(w: F32, b: F32, norm: tuple[F32, F32]) -> tuple[F32, F32]:
    """A convolution or linear layer followed by the batch norm ``norm``, as one layer."""
    scale, shift = norm
    return w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), b * scale + shift


def _conv_relu(x: F32, w: F32, b: F32, k: int, stride: int, dilation: int) -> F32:
    """``relu(conv1d(x))`` of ``x`` ``(C, T)`` with padding ``dilation * (k - 1) // 2``, as one matrix product
    over the shifted copies of ``x`` (written straight into one array: ``np.pad`` and ``np.stack`` cost more
    than the copying here)."""
    c, t = x.shape
    pad = dilation * (k - 1) // 2
    t_out = (t + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    if k == 1 and stride == 1:
        cols = x
    else:
        xp = np.zeros((c, t + 2 * pad), np.float32)
        xp[:, pad : pad + t] = x
        span = stride * (t_out - 1) + 1
        shifted = np.empty((c, k, t_out), np.float32)  # row c * K + j, as the weight's (O, C, K) flattens
        for j in range(k):
            shifted[:, j] = xp[:, j * dilation : j * dilation + span : stride]
        cols = shifted.reshape(c * k, t_out)
    out: F32 = w @ cols
    out += b[:, None]
    np.maximum(out, 0.0, out=out)
    return out


def lag_transform(bins: int, n_fft: int, win_length: int) -> tuple[F32, F32]:
    """``LogMel``'s periodicity transform ``(n_fft // 2 + 1, bins)`` and its lag-0 column: the power spectrum's
    cosine transform at the pooled lags, the Hann window's bias removed (see ``models.net.LogMel``)."""
    pool = lag_pool(bins)
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)[:, None]
    weight = np.where((k == 0) | (k == n_fft // 2), 1.0, 2.0) / n_fft
    cosines = weight * np.cos(2 * np.pi * k * np.arange(pool.shape[0])[None, :] / n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)  # torch's periodic Hann
    w_acf = np.fft.irfft(np.abs(np.fft.rfft(window, n=n_fft)) ** 2, n=n_fft)[: pool.shape[0]]
    matrix = (cosines / (w_acf / w_acf[0])) @ pool.astype(np.float64)
    return matrix.astype(np.float32), weight[:, 0].astype(np.float32)


def lag_pool(bins: int) -> F32:
    """``(lags, bins)``: triangular weights from integer lags onto ``bins`` log-spaced lags spanning PITCH_HZ
    at 8 kHz (each column sums to 1); ``models.net._lag_pool`` in numpy."""
    lo, hi = 8000.0 / PITCH_HZ[1], 8000.0 / PITCH_HZ[0]
    centres = np.exp(np.linspace(np.log(np.float32(lo)), np.log(np.float32(hi)), bins, dtype=np.float32))
    step = (hi / lo) ** (1 / max(bins - 1, 1))
    lags = np.arange(int(hi * step) + 2, dtype=np.float32)[:, None]
    width = np.maximum(centres * np.float32(step - 1), np.float32(1.0))[None, :]
    w = np.maximum(1 - np.abs(lags - centres[None, :]) / width, np.float32(0.0))
    return np.asarray(w / w.sum(axis=0, keepdims=True), dtype=np.float32)
