"""Mise's own models. Importing this package does not import torch: ``load_emotion_model`` does, lazily,
so call hosts can import the torch-free parts (``models.audio``, ``models.caller``). Training and evaluation are in
``models.training``, which no server imports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.emotion import EmotionModel


def load_emotion_model(path: str | Path | None = None, *, threads: int = 1) -> EmotionModel:
    """The speech emotion / frustration model (packaged weights unless ``path``), loaded once per process.
    See ``models.emotion.EmotionModel.score`` and MODEL_CARD.md."""
    from models.emotion import load

    return load(path, threads=threads)


__all__ = ["load_emotion_model"]
