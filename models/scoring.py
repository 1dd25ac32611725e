"""The emotion model's scoring around its network, torch-free: a turn trimmed of silence, cut into windows,
each window's logits from the network, averaged, and calibrated (``models.caller.Calibration``). Subclasses
supply the network: ``models.live.LiveEmotionModel`` (numpy: what call hosts, imports and ``mise analyze``
run) and ``models.emotion.EmotionModel`` (torch: training and evaluation). Both give the same logits to float
noise (tests/test_live_model.py).
"""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from models.audio import Audio, as_float, is_silent, trim, windows
from models.caller import Calibration

WEIGHTS = "emotion.pt"
NO_EMODB_WEIGHTS = "emotion_no_emodb.pt"  # the same recipe trained without EmoDB: the cross-corpus check


def weights_path(name: str = WEIGHTS) -> Path:
    return Path(str(importlib.resources.files("models") / "weights" / name))


class EmotionScoring:
    """Scores 8 kHz mono turns. Stateless between calls: one instance serves every call in a process.
    ``blob`` is a weights file's content (``read_weights``); ``window_logits`` is the network's part."""

    def __init__(self, blob: dict[str, Any]) -> None:
        self.classes: tuple[str, ...] = tuple(blob["classes"])
        self.temperature = float(blob.get("temperature", 1.0))
        self.platt = tuple(float(v) for v in blob.get("platt", (1.0, 0.0)))
        self.frustration_classes = [i for i, c in enumerate(self.classes) if c in blob["frustration"]]
        arousal = blob["arousal"]
        self.arousal = np.array([float(arousal.get(c, 0.5)) for c in self.classes])
        self.meta: dict[str, Any] = dict(blob.get("meta", {}))
        self.calibration = Calibration.of(self.calibration_spec())
        # Per-caller scoring (models.caller): class centroids and a calibration of their own; None in weights
        # calibrated on a validation split only (``models.training.train --once``).
        self.caller: dict[str, Any] | None = blob.get("caller")

    def calibration_spec(self, *, caller: bool = False) -> dict[str, Any]:
        """Plain data for ``models.caller.Calibration.of`` (per clip, or per caller with ``caller``)."""
        temperature, platt = self.temperature, list(self.platt)
        if caller and self.caller:
            temperature, platt = float(self.caller["temperature"]), [float(v) for v in self.caller["platt"]]
        return {
            "classes": list(self.classes),
            "temperature": temperature,
            "platt": platt,
            "frustration": list(self.frustration_classes),
            "arousal": [float(a) for a in self.arousal],
        }

    def caller_spec(self) -> dict[str, Any] | None:
        """What ``models.caller.CallerScorer`` needs (plain data), or None without per-caller scoring."""
        if self.caller is None:
            return None
        return self.calibration_spec(caller=True) | {
            "centroids": [[float(v) for v in row] for row in self.caller["centroids"]],
            "shrink": float(self.caller["shrink"]),
        }

    # --- the live API --------------------------------------------------------------------------------
    def score(self, items: list[npt.ArrayLike]) -> list[dict[str, Any]]:
        """One result per item (int16 PCM or float in [-1, 1), 8 kHz mono, any length):
        ``{"scores": {class: prob}, "label", "frustration": 0..1, "arousal": 0..1, "windows": n}``.
        Leading/trailing silence is trimmed; long items are scored in 3 s windows tiling the item and the
        window logits averaged (weighted by window length). Silent or empty items score ``neutral``
        with frustration and arousal 0 and ``windows`` 0."""
        logits, counts = self.logits([as_float(x) for x in items])
        return [self.result(z, n) for z, n in zip(logits, counts, strict=True)]

    def score_with_logits(self, items: list[npt.ArrayLike]) -> list[dict[str, Any]]:
        """``score``, each result with the raw ``logits`` a speaker's scorer needs to score the turn again
        (``engine.pending.PendingTurn.rescore``): what call hosts, imports and ``mise analyze`` use."""
        logits, counts = self.logits([as_float(x) for x in items])
        return [self.result(z, n) | {"logits": [float(v) for v in z]} for z, n in zip(logits, counts, strict=True)]

    def recalibrated(self, calibration: Mapping[str, Any]) -> Self:
        """This model's network (shared, not copied) under another calibration: a weights file's
        ``temperature``, ``platt`` and ``caller`` keys (a key left out keeps this model's)."""
        other = copy.copy(self)
        other.temperature = float(calibration.get("temperature", self.temperature))
        other.platt = tuple(float(v) for v in calibration.get("platt", self.platt))
        other.caller = calibration.get("caller", self.caller)
        other.calibration = Calibration.of(other.calibration_spec())
        return other

    def result(self, logits: npt.NDArray[np.float64], n_windows: int) -> dict[str, Any]:
        """Calibrated scores from one item's aggregated logits."""
        return self.calibration.result(logits, n_windows)

    def logits(self, items: list[Audio]) -> tuple[npt.NDArray[np.float64], list[int]]:
        """Raw (uncalibrated) logits per item, averaged over its windows: ``(len(items), n_classes)``,
        and the number of windows each item had (0: silent)."""
        owner: list[int] = []
        cut: list[Audio] = []
        counts = [0] * len(items)
        for i, x in enumerate(items):
            x = trim(x)
            if len(x) == 0 or is_silent(x):
                continue
            for w in windows(x):
                owner.append(i)
                cut.append(w)
                counts[i] += 1
        out = np.zeros((len(items), len(self.classes)))
        if cut:
            window_logits = self.window_logits(cut)
            weight = np.array([len(w) for w in cut], dtype=np.float64)
            sums = np.zeros_like(out)
            np.add.at(sums, owner, window_logits * weight[:, None])
            totals = np.zeros(len(items))
            np.add.at(totals, owner, weight)
            scored = totals > 0
            out[scored] = sums[scored] / totals[scored, None]
        return out, counts

    def window_logits(self, cut: list[Audio]) -> npt.NDArray[np.float64]:
        """Logits of each window ``(len(cut), n_classes)``: the network's part."""
        raise NotImplementedError
