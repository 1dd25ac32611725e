"""A caller's voice offset for the emotion model, learned from the caller's own turns as the call goes.
numpy only: no torch, so it runs beside the call.

Voices differ more between speakers than one speaker's emotions differ: a caller with a naturally tense or
bright voice scores angrier than they are, turn after turn. ``CallerBaseline`` estimates that offset in the
model's logits and removes it from the caller's next turns.

Each scored turn is compared with what the model gives, on average, for the emotion it thinks the turn
carries: its residual is its logits minus the class centroids (the mean logits of each labelled emotion on
speakers the model never trained on, ``centroids`` ``(classes, classes)``) weighted by the turn's own
probabilities. The caller's offset is the mean residual of their earlier turns, shrunk while there are few:
``sum(residuals) / (turns + shrink)``. Because each turn is compared with the centroid of its own emotion,
the offset does not depend on the caller's mix of emotions, which a plain per-speaker mean does (that
assumes every speaker is as often angry as calm, as acted corpora are, and turns a calm caller's calm into
the corpus average). MODEL_CARD.md ("Per-caller scoring") has the measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
SHRINK = 3.0  # pseudo-turns of zero offset: the first turns move the offset a little, many turns fully


def softmax(z: Floats) -> Floats:
    """Softmax over the last axis."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def frustration_log_odds(probs: Floats, frustration: Sequence[int]) -> Floats:
    """The log-odds of the frustration classes' summed probability, per row of ``probs`` ``(n, classes)``."""
    p = np.clip(probs[:, list(frustration)].sum(axis=1), 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def platt_frustration(probs: Floats, frustration: Sequence[int], platt: tuple[float, float]) -> Floats:
    """The calibrated frustration of each row of ``probs``: Platt scaling ``(a, b)`` of its log-odds."""
    a, b = platt
    return np.asarray(1 / (1 + np.exp(-(a * frustration_log_odds(probs, frustration) + b))))


def class_centroids(
    logits: Floats, labels: Sequence[str], classes: Sequence[str], *, fallback: Floats | None = None
) -> Floats:
    """The mean logits of each class's clips ``(len(classes), n_classes)``; a class without clips gets its row
    of ``fallback`` if given (e.g. a model's own centroids), else the mean of all clips."""
    labels_ = np.asarray(labels)
    rows = []
    for i, c in enumerate(classes):
        if (labels_ == c).any():
            rows.append(logits[labels_ == c].mean(axis=0))
        else:
            rows.append(logits.mean(axis=0) if fallback is None else np.asarray(fallback, dtype=np.float64)[i])
    return np.stack(rows).astype(np.float64)


class CallerBaseline:
    """One caller's state: ``adjust`` a turn's raw logits, then ``update`` with them, in turn order."""

    def __init__(self, centroids: Floats | Sequence[Sequence[float]], *, shrink: float = SHRINK) -> None:
        self.centroids = np.asarray(centroids, dtype=np.float64)
        if self.centroids.ndim != 2 or self.centroids.shape[0] != self.centroids.shape[1]:
            raise ValueError(f"centroids must be (classes, classes), got {self.centroids.shape}")
        self.shrink = shrink
        self.reset()

    def reset(self) -> None:
        self._sum = np.zeros(self.centroids.shape[1])
        self._turns = 0

    @property
    def turns(self) -> int:
        """Scored turns counted so far."""
        return self._turns

    def offset(self) -> Floats:
        """The caller's estimated offset, which ``adjust`` subtracts (zeros before any turn)."""
        return np.asarray(self._sum / (self._turns + self.shrink))

    def adjust(self, logits: Floats) -> Floats:
        """The turn's logits with this caller's offset removed (raw logits in, raw logits out)."""
        return np.asarray(np.asarray(logits, dtype=np.float64) - self.offset())

    def update(self, logits: Floats) -> None:
        """Count a scored turn (its raw, unadjusted logits) into the caller's offset."""
        z = np.asarray(logits, dtype=np.float64)
        self._sum += z - softmax(z) @ self.centroids
        self._turns += 1


def in_order(logits: Floats, order: Sequence[int], centroids: Floats, *, shrink: float = SHRINK) -> Floats:
    """Each row of ``logits`` (one speaker's clips) adjusted as a live call would, the clips arriving in
    ``order``: row i is adjusted by the offset learned from the rows before it in ``order``."""
    caller = CallerBaseline(centroids, shrink=shrink)
    out = np.array(logits, dtype=np.float64)
    for i in order:
        out[i] = caller.adjust(logits[i])
        caller.update(logits[i])
    return out


@dataclass(frozen=True)
class Calibration:
    """Raw logits -> calibrated result: softmax at ``temperature``, then Platt scaling of the log-odds of
    the frustration classes (indices ``frustration``); arousal is the probability-weighted class arousal."""

    classes: tuple[str, ...]
    temperature: float
    platt: tuple[float, float]
    frustration: tuple[int, ...]
    arousal: tuple[float, ...]

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Calibration:
        """From ``EmotionModel.calibration_spec``'s dict (plain data: it crosses process boundaries)."""
        return cls(
            tuple(spec["classes"]),
            float(spec["temperature"]),
            (float(spec["platt"][0]), float(spec["platt"][1])),
            tuple(int(i) for i in spec["frustration"]),
            tuple(float(a) for a in spec["arousal"]),
        )

    def result(self, logits: Floats, n_windows: int) -> dict[str, Any]:
        """``{"scores": {class: prob}, "label", "frustration", "arousal", "windows"}`` for one item's
        window-averaged raw logits (``n_windows`` 0: a silent item, scored neutral, frustration 0)."""
        if n_windows == 0:
            probs = np.array([1.0 if c == "neutral" else 0.0 for c in self.classes])
            frustration = 0.0
        else:
            probs = softmax(np.asarray(logits, dtype=np.float64) / self.temperature)
            frustration = float(platt_frustration(probs[None], self.frustration, self.platt)[0])
        return {
            "scores": {c: round(float(p), 6) for c, p in zip(self.classes, probs, strict=True)},
            "label": self.classes[int(np.argmax(probs))],
            "frustration": round(frustration, 6),
            "arousal": round(float(probs @ np.array(self.arousal)), 6) if n_windows else 0.0,
            "windows": n_windows,
        }


class CallerScorer:
    """One speaker's turns scored in order with their voice offset removed (``CallerBaseline``) and the
    per-caller calibration; built from ``EmotionModel.caller_spec()``. ``score`` takes the raw logits the
    emotion model gave a turn."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.calibration = Calibration.of(spec)
        self.baseline = CallerBaseline(spec["centroids"], shrink=float(spec["shrink"]))

    def score(self, logits: Sequence[float], n_windows: int) -> dict[str, Any]:
        """The turn's result with the offset learned from the earlier turns; a silent turn is not counted."""
        if n_windows == 0:
            return self.calibration.result(np.zeros(len(self.calibration.classes)), 0)
        z = np.asarray(logits, dtype=np.float64)
        out = self.calibration.result(self.baseline.adjust(z), n_windows)
        out["baseline_turns"] = self.baseline.turns  # the earlier turns behind the offset (0: scored alone)
        self.baseline.update(z)
        return out


def arrival_order(
    rows: npt.NDArray[np.int64], calm: npt.NDArray[np.bool_], order: str, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """One speaker's clips (indices ``rows``) in the order a study lets them arrive as a caller's turns:
    shuffled (``random``), then with the calm ones (``calm``, a mask over all clips) moved to the front
    (``calm first``, the usual call) or the back (``calm last``), shuffled within each part."""
    rows = rows[rng.permutation(len(rows))]
    if order == "random":
        return rows
    first = calm[rows] if order == "calm first" else ~calm[rows]
    return np.asarray(np.r_[rows[first], rows[~first]], dtype=np.int64)
