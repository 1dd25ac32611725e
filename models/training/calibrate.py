"""Post-hoc calibration fitted on validation speakers (numpy): softmax temperature, Platt scaling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.caller import frustration_log_odds, softmax


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature minimising validation NLL (grid over 0.5..5)."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(np.log(0.5), np.log(5.0), 200))
    return float(grid[int(np.argmin([nll(t) for t in grid]))])


def fit_platt(score: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Logistic regression of ``positive`` on ``score`` (Newton steps, slight L2 pull towards (1, 0)); a step
    that would raise the penalised loss is halved until it does not (scores far out, e.g. log-odds of
    saturated probabilities, otherwise make Newton overshoot and diverge)."""
    a, b = 1.0, 0.0
    y = positive.astype(np.float64)

    def loss(a: float, b: float) -> float:
        z = a * score + b
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5e-2 * ((a - 1) ** 2 + b**2))

    for _ in range(50):
        with np.errstate(over="ignore"):
            p = 1 / (1 + np.exp(-(a * score + b)))
        grad = np.array([np.sum((p - y) * score) + 1e-2 * (a - 1), np.sum(p - y) + 1e-2 * b])
        w = p * (1 - p)
        hess = np.array([[np.sum(w * score * score) + 1e-2, np.sum(w * score)], [np.sum(w * score), np.sum(w) + 1e-2]])
        step = np.linalg.solve(hess, grad)
        now = loss(a, b)
        worse = now + 1e-9 * max(1.0, abs(now))  # not rounding noise near the optimum
        while loss(a - step[0], b - step[1]) > worse and np.abs(step).max() > 1e-12:
            step = step / 2
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def fit_calibration(logits: np.ndarray, y: np.ndarray, frustration: Sequence[int]) -> tuple[float, tuple[float, float]]:
    """What ``models.training.train`` ships: the softmax temperature, then Platt coefficients of the frustration
    log-odds at that temperature ((1, 0) when the clips lack frustrated or other examples). A label of -1 (a clip whose
    label the model lacks, e.g. when recalibrating on another corpus) is left out of the temperature fit and
    counts as not frustrated in the Platt fit."""
    known = y >= 0
    temperature = fit_temperature(logits[known], y[known])
    positive = np.isin(y, list(frustration))
    if not frustration or positive.all() or not positive.any():
        return temperature, (1.0, 0.0)
    return temperature, fit_platt(frustration_log_odds(softmax(logits / temperature), frustration), positive)
