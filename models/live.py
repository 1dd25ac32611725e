"""The emotion model as servers run it: the weights file read without torch (``models.ptfile``) and the network
in numpy (``models.numpy_net``), so each call host scores its own turns on its measuring thread, with no
torch in any server process. Training and evaluation use the torch network (``models.emotion``); the two
give the same logits to float noise (tests/test_live_model.py).

    model = models.load_emotion_model()
    model.score([pcm_int16_turn, ...])  # -> [{"scores": {...}, "label", "frustration", "arousal", "windows"}]
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models import ptfile
from models.audio import Audio
from models.numpy_net import NumpyEmotionNet
from models.scoring import EmotionScoring, weights_path


class LiveEmotionModel(EmotionScoring):
    """``EmotionScoring`` with the numpy network: each window scored alone (as the torch model's batches do)."""

    def __init__(self, blob: dict[str, Any]) -> None:
        super().__init__(blob)
        self.net = NumpyEmotionNet(blob["state"], **blob.get("net", {}))

    def window_logits(self, cut: list[Audio]) -> npt.NDArray[np.float64]:
        result = np.zeros((len(cut), len(self.classes)))
        for i, window in enumerate(cut):
            result[i] = self.net(np.asarray(window, dtype=np.float32))
        return result


def read_weights(path: str | Path) -> dict[str, Any]:
    """A weights file (``mise train``'s or the packaged one) as plain data, its tensors numpy arrays."""
    blob = ptfile.load(path)
    if not isinstance(blob, dict) or not {"state", "classes", "frustration", "arousal"} <= blob.keys():
        raise ptfile.WeightsFileError(f"{path} is not an emotion-model weights file")
    return blob


@functools.cache
def _load_cached(path: str) -> LiveEmotionModel:
    return LiveEmotionModel(read_weights(path))


def load(path: str | Path | None = None) -> LiveEmotionModel:
    """The model at ``path`` (default: the packaged weights), loaded once per process and path."""
    return _load_cached(str(Path(path) if path else weights_path()))
