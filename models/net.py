"""The emotion network: a level-normalised log-mel front end and a small dilated 1-D CNN with attentive
statistics pooling (x-vector style). Imports torch: load it only where torch is wanted."""

from __future__ import annotations

from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from models.net_config import FLOOR_DB, FRONT_END, GATE_DB, PITCH_HZ


class LogMel(nn.Module):
    """Waveforms ``(B, N)`` float at 8 kHz -> level-normalised log-mel ``(B, n_mels, (N - n_fft) // hop + 1)``
    in dB (items shorter than n_fft are zero-padded to it); frames past an item's length are zero.

    Level normalisation: every item's log-mel is shifted so that its active level (the 90th percentile
    of its frame energies) is 0 dB. Spectral shape and the dynamics inside the item are kept; the
    absolute loudness (a property of the phone line as much as of the talker) is removed.
    """

    def __init__(self, pitch_bins: int = 0, **cfg: Any) -> None:
        super().__init__()
        self.pitch_bins = pitch_bins
        self.warp: Tensor | None = None  # training only: per-item frequency warp factors (VTLP), ``(B,)``
        self.hop = int(cfg["hop_length"])
        self.n_fft = int(cfg["n_fft"])
        # center=False: a frame depends only on its own samples, so zero-padding an item in a batch
        # leaves its valid frames exactly as they are when it is scored alone.
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, power=2.0, center=False, **cfg)
        if pitch_bins:
            # The autocorrelation at lag tau is a cosine transform of the power spectrum (what irfft computes);
            # only the pooled lags are wanted, so transform, window-bias correction and pooling are one
            # (n_fft // 2 + 1, pitch_bins) matrix, and the normalisation by lag 0 one more column.
            pool = _lag_pool(pitch_bins)
            k = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)[:, None]
            weight = torch.where((k == 0) | (k == self.n_fft // 2), 1.0, 2.0) / self.n_fft
            cosines = weight * torch.cos(2 * torch.pi * k * torch.arange(pool.shape[0])[None, :] / self.n_fft)
            window = torch.hann_window(int(cfg["win_length"]), dtype=torch.float64)  # as self.mel's
            w_acf = torch.fft.irfft(torch.fft.rfft(window, n=self.n_fft).abs().pow(2), n=self.n_fft)[: pool.shape[0]]
            self.lag_matrix = ((cosines / (w_acf / w_acf[0])) @ pool.double()).float()  # (F, pitch_bins)
            self.lag0 = weight[:, 0].float()  # (F,): the autocorrelation at lag 0 (the frame's energy)

    def power_mel(self, wave: Tensor) -> Tensor:
        """torchaudio's MelSpectrogram (its window and filter bank), with |X|^2 taken as re^2 + im^2:
        torch's complex ``abs`` costs as much on the CPU as the FFT itself (and squaring the real view, then
        summing its last axis of 2, ~5x what ``real ** 2 + imag ** 2`` does, bit for bit the same)."""
        return self.power_mel_and_lags(wave)[0]

    def power_mel_and_lags(self, wave: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mel power ``(B, n_mels, T)`` and, with ``pitch_bins``, the lag-gram ``(B, pitch_bins, T)``."""
        spec = self.mel.spectrogram
        stft = torch.stft(
            wave,
            spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            window=spec.window,
            center=False,
            return_complex=True,
        )
        power = (stft.real**2 + stft.imag**2).transpose(1, 2)  # (B, T, n_fft // 2 + 1)
        mel = torch.matmul(power if self.warp is None else _warp(power, self.warp), self.mel.mel_scale.fb)
        mel = mel.transpose(1, 2)
        if not self.pitch_bins:
            return mel, None
        lags = torch.matmul(power, self.lag_matrix) / (torch.matmul(power, self.lag0)[..., None] + 1e-10)
        return mel, lags.clamp(-1.0, 1.0).transpose(1, 2)  # normalised autocorrelation, window bias removed

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns the features and each item's number of valid frames ``(B,)``."""
        if lengths is not None and bool((lengths >= wave.shape[-1]).all()):
            lengths = None  # no padding in this batch: the cheaper path, same result
        if wave.shape[-1] < self.n_fft:
            wave = torch.nn.functional.pad(wave, (0, self.n_fft - wave.shape[-1]))
        power, lags = self.power_mel_and_lags(wave)
        spec = 10.0 * torch.log10(power + 1e-10)
        energy = 10.0 * torch.log10(torch.sum(10.0 ** (spec / 10.0), dim=1) + 1e-10)  # (B, T)
        n_frames = spec.shape[-1]
        if lengths is None:
            frames = torch.full((wave.shape[0],), n_frames, dtype=torch.long)
            level = torch.quantile(energy, 0.9, dim=1)  # (B,)
        else:
            frames = torch.clamp((lengths - self.n_fft) // self.hop + 1, 1, n_frames)
            valid = torch.arange(n_frames)[None, :] < frames[:, None]
            energy = torch.where(valid, energy, torch.full_like(energy, float("nan")))
            level = torch.nan_to_num(torch.nanquantile(energy, 0.9, dim=1), nan=-100.0)
        spec = spec - level[:, None, None]
        spec = torch.clamp(spec, min=-FLOOR_DB) + FLOOR_DB / 2  # centre roughly on 0
        if lags is not None:
            loud = energy - level[:, None] > -GATE_DB  # NaN (padding) compares False
            spec = torch.cat([spec, lags * loud[:, None, :]], dim=1)
        if lengths is not None:
            spec = spec * valid[:, None, :]
        return spec, frames


def _warp(power: Tensor, alpha: Tensor) -> Tensor:
    """Vocal tract length perturbation: each item's spectrum ``(B, T, F)`` with frequencies scaled by its
    ``alpha`` (``(B,)``; > 1 moves formants up), by linear interpolation between bins."""
    n = power.shape[-1]
    src = (torch.arange(n, dtype=power.dtype)[None, :] / alpha[:, None]).clamp(max=n - 1)  # (B, F)
    lo = src.floor().long().clamp(max=n - 2)
    frac = (src - lo)[:, None, :]
    idx = lo[:, None, :].expand(-1, power.shape[1], -1)
    return torch.gather(power, 2, idx) * (1 - frac) + torch.gather(power, 2, idx + 1) * frac


def _lag_pool(bins: int) -> Tensor:
    """``(lags, bins)``: triangular weights from integer lags 0..L onto ``bins`` log-spaced lags spanning
    PITCH_HZ at 8 kHz (each column sums to 1)."""
    lo, hi = 8000.0 / PITCH_HZ[1], 8000.0 / PITCH_HZ[0]
    centres = torch.exp(torch.linspace(float(torch.log(torch.tensor(lo))), float(torch.log(torch.tensor(hi))), bins))
    step = (hi / lo) ** (1 / max(bins - 1, 1))
    lags = torch.arange(int(hi * step) + 2, dtype=torch.float32)[:, None]
    width = torch.clamp(centres * (step - 1), min=1.0)[None, :]
    w = torch.clamp(1 - (lags - centres[None, :]).abs() / width, min=0.0)
    return w / w.sum(dim=0, keepdim=True)


class AttentiveStats(nn.Module):
    """Attention-weighted mean and standard deviation over valid frames: ``(B, C, T)`` -> ``(B, 2C)``."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.attn = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """``valid`` ``(B, T)`` marks each item's frames (None: all frames of every item)."""
        logits = self.attn(x)
        if valid is not None:
            logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
        w = torch.softmax(logits, dim=-1)
        mean = torch.sum(w * x, dim=-1)
        var = torch.sum(w * x * x, dim=-1) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-5))], dim=1)


class DilatedConv1d(nn.Conv1d):
    """``nn.Conv1d`` with dilation d computed as undilated convolutions over the d interleaved subsequences
    (same weights, same output): torch's CPU dilated kernel is ~3x slower than the plain one.

    Training convolves the subsequences as a batch (the arithmetic the shipped weights were trained with);
    inference lays them end to end, ``(k - 1) // 2`` zeros apart, as one sequence, which avoids torch's
    slower path for small batches (a lone 1 s turn costs ~0.1 ms less per dilated layer)."""

    def forward(self, x: Tensor) -> Tensor:
        d = int(self.dilation[0])
        if d == 1 or self.stride[0] != 1:
            return super().forward(x)
        b, c, t = x.shape
        k = int(self.kernel_size[0])
        g = (k - 1) // 2
        n = (t + d - 1) // d  # frames per subsequence
        sub = torch.nn.functional.pad(x, (0, n * d - t)).reshape(b, c, n, d)  # sub[..., j] = x[..., j::d]
        if self.training:
            flat = sub.permute(0, 3, 1, 2).reshape(b * d, c, n)
            y = torch.nn.functional.conv1d(flat, self.weight, self.bias, padding=g)
            y = y.reshape(b, d, -1, n).permute(0, 2, 3, 1).reshape(b, -1, n * d)
        else:
            flat = torch.nn.functional.pad(sub.transpose(2, 3), (0, g)).reshape(b, c, d * (n + g))
            y = torch.nn.functional.conv1d(flat, self.weight, self.bias, padding=g)  # (b, out, d * (n + g))
            y = y.reshape(b, -1, d, n + g)[..., :n].transpose(2, 3).reshape(b, -1, n * d)
        return y[:, :, :t]


def _block(c_in: int, c_out: int, k: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        DilatedConv1d(c_in, c_out, k, stride=stride, dilation=dilation, padding=dilation * (k - 1) // 2),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
    )


class EmotionNet(nn.Module):
    """Log-mel -> dilated 1-D convolutions over time (stride 2 after the first) -> attentive statistics
    pooling -> class logits. ``forward(wave, lengths)`` takes waveforms ``(B, N)`` and sample counts ``(B,)``."""

    def __init__(
        self,
        n_classes: int,
        width: int = 128,
        embed: int = 128,
        dropout: float = 0.3,
        cmn: bool = False,
        pitch_bins: int = 0,
    ) -> None:
        super().__init__()
        self.cmn = cmn
        n_mels = int(FRONT_END["n_mels"])
        self.n_mels = n_mels
        self.front = LogMel(pitch_bins=pitch_bins, **FRONT_END)
        self.norm = nn.BatchNorm1d(n_mels + pitch_bins)
        self.frames = nn.ModuleList(
            [
                _block(n_mels + pitch_bins, width, 5, stride=2),
                _block(width, width, 3, dilation=2),
                _block(width, width, 3, dilation=3),
                _block(width, width * 3 // 2, 1),
            ]
        )
        self.pool = AttentiveStats(width * 3 // 2)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(width * 3, embed),
            nn.BatchNorm1d(embed),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(embed, n_classes),
        )
        self.spec_augment = False  # time/frequency masking, on while training
        self.vtlp = 0.0  # while training: frequency warps drawn uniformly in 1 -/+ vtlp per item

    def features(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.vtlp and self.training:
            self.front.warp = 1.0 + self.vtlp * (2 * torch.rand(wave.shape[0]) - 1)
        try:
            spec, frames = self.front(wave, lengths)
        finally:
            self.front.warp = None
        padded = bool((frames < spec.shape[-1]).any())
        valid = torch.arange(spec.shape[-1])[None, :] < frames[:, None]
        if self.cmn:  # per-band mean over the item's valid frames removed: long-term timbre of talker and line
            mel = spec[:, : self.n_mels]
            mean = (mel * valid[:, None, :]).sum(dim=-1, keepdim=True) / frames[:, None, None]
            spec = torch.cat([(mel - mean) * valid[:, None, :], spec[:, self.n_mels :]], dim=1)
        if self.spec_augment and self.training:
            spec = _mask(spec)
        spec = self.norm(spec)
        return (spec * valid[:, None, :] if padded else spec), frames

    @torch.no_grad()
    def fuse(self) -> EmotionNet:
        """For inference (eval mode): fold every batch norm that follows a convolution or linear layer
        into that layer's weights and drop it (same outputs, fewer operations per call). In place."""
        self.eval()
        for block in self.frames:
            assert isinstance(block, nn.Sequential) and isinstance(block[0], nn.Conv1d)
            _fold(block[0], block[1])
            block[1] = nn.Identity()
        assert isinstance(self.head[1], nn.Linear)
        _fold(self.head[1], self.head[2])
        self.head[2] = nn.Identity()
        return self

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        return torch.as_tensor(self.head(self.embed(wave, lengths)))

    def embed(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled statistics ``(B, 3 * width)`` that ``head`` turns into logits."""
        x, frames = self.features(wave, lengths)
        padded = bool((frames < x.shape[-1]).any())  # else every frame is valid: no masking needed
        for i, block in enumerate(self.frames):
            x = block(x)
            if i == 0:
                frames = (frames + 1) // 2
            if padded:  # zero past each item's end, as the convolutions' own padding is when it is scored alone
                x = x * (torch.arange(x.shape[-1])[None, :] < frames[:, None])[:, None, :]
        valid = torch.arange(x.shape[-1])[None, :] < frames[:, None] if padded else None
        return torch.as_tensor(self.pool(x, valid))


def _fold(layer: nn.Conv1d | nn.Linear, bn: nn.Module) -> None:
    """``layer`` followed by the (eval-mode) batch norm ``bn`` as one layer: ``layer`` is changed in place."""
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    layer.weight.mul_(scale.reshape(shape))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    layer.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def _mask(spec: Tensor) -> Tensor:
    """SpecAugment: one band of up to 6 mel bins and one span of up to 20 frames zeroed per item."""
    b, f, t = spec.shape
    f0 = torch.randint(0, f, (b, 1, 1))
    fw = torch.randint(0, 7, (b, 1, 1))
    t0 = torch.randint(0, max(t, 1), (b, 1, 1))
    tw = torch.randint(0, 21, (b, 1, 1))
    fi = torch.arange(f)[None, :, None]
    ti = torch.arange(t)[None, None, :]
    drop = ((fi >= f0) & (fi < f0 + fw)) | ((ti >= t0) & (ti < t0 + tw))
    return spec.masked_fill(drop, 0.0)
