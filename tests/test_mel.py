"""Whisper's log-mel features in numpy (engine/mel.py) against torch's STFT and torchaudio's Slaney filters,
computed the way OpenAI's whisper/audio.py does."""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from engine.mel import FRAMES_PER_WINDOW, N_MELS, log_mel, mel_filters


def reference(audio: np.ndarray) -> np.ndarray:
    padded = np.pad(audio, (0, max(0, 480_000 - len(audio))))[:480_000].astype(np.float32)
    stft = torch.stft(torch.from_numpy(padded), 400, 160, window=torch.hann_window(400), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, norm="slaney", mel_scale="slaney")
    logged = torch.clamp(filters.T @ power, min=1e-10).log10()
    logged = torch.maximum(logged, logged.max() - 8.0)
    return ((logged + 4.0) / 4.0).numpy()


def test_filters_match_torchaudios_slaney_filters() -> None:
    ours = mel_filters()
    theirs = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, norm="slaney", mel_scale="slaney")
    assert ours.shape == (N_MELS, 201)
    assert np.allclose(ours, theirs.T.numpy(), atol=1e-6)


def test_features_match_the_reference_on_speech_like_audio() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16_000 * 7) / 16_000
    voice = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    ours, theirs = log_mel(voice.astype(np.float32)), reference(voice)
    assert ours.shape == theirs.shape == (N_MELS, FRAMES_PER_WINDOW)
    assert np.max(np.abs(ours - theirs)) < 1e-3


def test_long_audio_is_cut_and_unpadded_length_is_kept_when_asked() -> None:
    audio = np.zeros(16_000 * 40, dtype=np.float32)
    assert log_mel(audio).shape == (N_MELS, FRAMES_PER_WINDOW)
    assert log_mel(audio[:16_000], frames=None).shape == (N_MELS, 100)
