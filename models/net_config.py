"""The emotion network's front-end settings, torch-free: shared by the torch network (``models.net``) and its
numpy twin (``models.numpy_net``)."""

from __future__ import annotations

from typing import Any

# Front end: 40 ms windows every 10 ms, 48 mel bands inside the telephone band (200-3600 Hz), so the
# model never sees the out-of-band corners where corpora and phone lines differ most.
FRONT_END: dict[str, Any] = {
    "n_fft": 512,
    "win_length": 320,
    "hop_length": 80,
    "n_mels": 48,
    "f_min": 200.0,
    "f_max": 3600.0,
}
FLOOR_DB = 70.0  # log-mel values are clamped to this many dB under the item's active level
# Periodicity ("lag-gram") channels: the normalised autocorrelation of each frame, read from the same
# power spectrum at lags of 2.5-16.6 ms (400-60 Hz), pooled onto log-spaced lags (about a semitone
# apart). Pitch height and movement, and voicing, which the 48 mel bands above 200 Hz resolve poorly.
PITCH_HZ = (60.0, 400.0)
GATE_DB = 50.0  # frames this far under the item's active level have no periodicity (zeros)
