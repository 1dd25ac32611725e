"""The emotion network: a level-normalised log-mel front end and a small dilated 1-D CNN with attentive
statistics pooling (x-vector style). Imports torch: load it only where torch is wanted."""

from __future__ import annotations

from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

# Front end: 40 ms windows every 10 ms, 48 mel bands inside the telephone band (200-3600 Hz), so the
# model never sees the out-of-band corners where corpora and phone lines differ most.
FRONT_END = {"n_fft": 512, "win_length": 320, "hop_length": 80, "n_mels": 48, "f_min": 200.0, "f_max": 3600.0}
FLOOR_DB = 70.0  # log-mel values are clamped to this many dB under the item's active level


class LogMel(nn.Module):
    """Waveforms ``(B, N)`` float at 8 kHz -> level-normalised log-mel ``(B, n_mels, (N - n_fft) // hop + 1)``
    in dB (items shorter than n_fft are zero-padded to it); frames past an item's length are zero.

    Level normalisation: every item's log-mel is shifted so that its active level (the 90th percentile
    of its frame energies) is 0 dB. Spectral shape and the dynamics inside the item are kept; the
    absolute loudness (a property of the phone line as much as of the talker) is removed.
    """

    def __init__(self, **cfg: Any) -> None:
        super().__init__()
        self.hop = int(cfg["hop_length"])
        self.n_fft = int(cfg["n_fft"])
        # center=False: a frame depends only on its own samples, so zero-padding an item in a batch
        # leaves its valid frames exactly as they are when it is scored alone.
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, power=2.0, center=False, **cfg)

    def power_mel(self, wave: Tensor) -> Tensor:
        """torchaudio's MelSpectrogram (its window and filter bank), with |X|^2 taken as re^2 + im^2:
        torch's complex ``abs`` costs as much on the CPU as the FFT itself."""
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
        power = torch.view_as_real(stft).pow(2).sum(-1)  # (B, n_fft // 2 + 1, T)
        return torch.matmul(power.transpose(1, 2), self.mel.mel_scale.fb).transpose(1, 2)

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns the features and each item's number of valid frames ``(B,)``."""
        if wave.shape[-1] < self.n_fft:
            wave = torch.nn.functional.pad(wave, (0, self.n_fft - wave.shape[-1]))
        spec = 10.0 * torch.log10(self.power_mel(wave) + 1e-10)
        n_frames = spec.shape[-1]
        if lengths is None:
            frames = torch.full((wave.shape[0],), n_frames, dtype=torch.long)
        else:
            frames = torch.clamp((lengths - self.n_fft) // self.hop + 1, 1, n_frames)
        valid = torch.arange(n_frames)[None, :] < frames[:, None]
        energy = 10.0 * torch.log10(torch.sum(10.0 ** (spec / 10.0), dim=1) + 1e-10)  # (B, T)
        if lengths is None:
            level = torch.quantile(energy, 0.9, dim=1)  # (B,)
        else:
            energy = torch.where(valid, energy, torch.full_like(energy, float("nan")))
            level = torch.nan_to_num(torch.nanquantile(energy, 0.9, dim=1), nan=-100.0)
        spec = spec - level[:, None, None]
        spec = torch.clamp(spec, min=-FLOOR_DB) + FLOOR_DB / 2  # centre roughly on 0
        return spec * valid[:, None, :], frames


class AttentiveStats(nn.Module):
    """Attention-weighted mean and standard deviation over valid frames: ``(B, C, T)`` -> ``(B, 2C)``."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.attn = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        logits = self.attn(x).masked_fill(~valid[:, None, :], float("-inf"))
        w = torch.softmax(logits, dim=-1)
        mean = torch.sum(w * x, dim=-1)
        var = torch.sum(w * x * x, dim=-1) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-5))], dim=1)


class DilatedConv1d(nn.Conv1d):
    """``nn.Conv1d`` with dilation d computed as an undilated convolution over the d interleaved
    subsequences (same weights, same output): torch's CPU dilated kernel is ~3x slower than the plain one."""

    def forward(self, x: Tensor) -> Tensor:
        d = int(self.dilation[0])
        if d == 1 or self.stride[0] != 1:
            return super().forward(x)
        b, c, t = x.shape
        pad = (-t) % d
        sub = torch.nn.functional.pad(x, (0, pad)).reshape(b, c, (t + pad) // d, d).permute(0, 3, 1, 2)
        k = int(self.kernel_size[0])
        y = torch.nn.functional.conv1d(sub.reshape(b * d, c, -1), self.weight, self.bias, padding=(k - 1) // 2)
        y = y.reshape(b, d, -1, y.shape[-1]).permute(0, 2, 3, 1).reshape(b, -1, t + pad)
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
        self, n_classes: int, width: int = 128, embed: int = 128, dropout: float = 0.3, cmn: bool = False
    ) -> None:
        super().__init__()
        self.cmn = cmn
        n_mels = int(FRONT_END["n_mels"])
        self.front = LogMel(**FRONT_END)
        self.norm = nn.BatchNorm1d(n_mels)
        self.frames = nn.ModuleList(
            [
                _block(n_mels, width, 5, stride=2),
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

    def features(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        spec, frames = self.front(wave, lengths)
        if self.cmn:  # per-band mean over the item's valid frames removed: long-term timbre of talker and line
            valid = (torch.arange(spec.shape[-1])[None, :] < frames[:, None]).to(spec.dtype)
            mean = (spec * valid[:, None, :]).sum(dim=-1, keepdim=True) / valid.sum(dim=-1)[:, None, None]
            spec = (spec - mean) * valid[:, None, :]
        if self.spec_augment and self.training:
            spec = _mask(spec)
        valid = torch.arange(spec.shape[-1])[None, :] < frames[:, None]
        return self.norm(spec) * valid[:, None, :], frames

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        x, frames = self.features(wave, lengths)
        for i, block in enumerate(self.frames):
            x = block(x)
            if i == 0:
                frames = (frames + 1) // 2
            # zero past each item's end, as the convolutions' own padding is when it is scored alone
            valid = torch.arange(x.shape[-1])[None, :] < frames[:, None]
            x = x * valid[:, None, :]
        return torch.as_tensor(self.head(self.pool(x, valid)))


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
