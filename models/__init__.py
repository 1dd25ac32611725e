"""Mise's own models. Nothing here imports torch but ``models.net`` and ``models.emotion`` (the torch network,
for training and evaluation): servers score with ``load_emotion_model`` (numpy, ``models.live``). Training and
evaluation are in ``models.training``, which no server imports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.live import LiveEmotionModel


def load_emotion_model(path: str | Path | None = None) -> LiveEmotionModel:
    """The speech emotion / frustration model (packaged weights unless ``path``), loaded once per process, torch-free.
    See ``models.scoring.EmotionScoring.score`` and MODEL_CARD.md."""
    from models.live import load

    return load(path)


__all__ = ["load_emotion_model"]
