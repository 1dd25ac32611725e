"""The emotion model with its torch network: what training and evaluation score with (``models.training``).
Servers score the same weights with ``models.live`` (numpy, no torch; the same logits to float noise).

    model = models.emotion.load()
    model.score([pcm_int16_turn, ...])  # -> [{"scores": {...}, "label", "frustration", "arousal", "windows"}]
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.audio import Audio
from models.net import EmotionNet
from models.scoring import NO_EMODB_WEIGHTS, WEIGHTS, EmotionScoring, weights_path

BATCH = 64  # windows per forward pass


class EmotionModel(EmotionScoring):
    """``EmotionScoring`` with the torch network (``models.net.EmotionNet``): what training and evaluation
    score with, windows of similar length batched. Servers score with ``models.live`` (numpy, same logits)."""

    def __init__(self, blob: dict[str, Any]) -> None:
        super().__init__(blob)
        self.net = EmotionNet(len(self.classes), **blob.get("net", {}))
        self.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
        self.n_parameters = sum(p.numel() for p in self.net.parameters())  # as trained
        self.net.fuse()  # eval mode, batch norms folded into the layers before them

    def window_logits(self, cut: list[Audio]) -> npt.NDArray[np.float64]:
        """Logits of each window ``(len(cut), n_classes)``; windows of similar length share a batch."""
        order = np.argsort([len(w) for w in cut], kind="stable")
        result = np.zeros((len(cut), len(self.classes)))
        with torch.inference_mode():
            for start in range(0, len(order), BATCH):
                idx = order[start : start + BATCH]
                longest = max(len(cut[i]) for i in idx)
                wave = torch.zeros(len(idx), longest)
                for row, i in enumerate(idx):
                    wave[row, : len(cut[i])] = torch.from_numpy(cut[i])
                lengths = torch.tensor([len(cut[i]) for i in idx])
                result[idx] = self.net(wave, lengths).double().numpy()
        return result


def read_weights(path: Path) -> dict[str, Any]:
    blob = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state" not in blob:
        raise ValueError(f"{path} is not an emotion-model weights file")
    return blob


@functools.cache
def _load_cached(path: str, threads: int) -> EmotionModel:
    torch.set_num_threads(threads)
    return EmotionModel(read_weights(Path(path)))


def load(path: str | Path | None = None, *, threads: int = 1) -> EmotionModel:
    """The model at ``path`` (default: the packaged weights), loaded once per process and path.
    Sets torch's intra-op threads to ``threads`` (one: the live path scales by processes, not threads)."""
    return _load_cached(str(Path(path) if path else weights_path()), threads)


__all__ = ["BATCH", "NO_EMODB_WEIGHTS", "WEIGHTS", "EmotionModel", "load", "read_weights", "weights_path"]
