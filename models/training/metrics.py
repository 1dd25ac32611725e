"""Classification and calibration figures (numpy only): confusion, recall, UA, ROC-AUC, ECE (and its
chance level)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def confusion(y_true: Ints, y_pred: Ints, n: int) -> Ints:
    """``m[i, j]``: clips of true class ``i`` predicted as ``j``; shape ``(n, n)``."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def recalls(m: Ints) -> Floats:
    """Recall of each class of a confusion matrix (NaN for classes with no clips)."""
    totals = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.diag(m) / np.where(totals > 0, totals, np.nan), dtype=np.float64)


def unweighted_accuracy(m: Ints) -> float:
    """UA: the mean recall over the classes that have clips (= balanced accuracy)."""
    r = recalls(m)
    return float(np.nanmean(r)) if np.any(~np.isnan(r)) else float("nan")


def roc_auc(positive: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half): P(score of a positive > score of a negative)."""
    pos = np.asarray(positive, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(positive: npt.ArrayLike, prob: npt.ArrayLike, bins: int = 10) -> float:
    """ECE of a binary probability: the clip-weighted mean |observed rate - mean prob| over ``bins``
    equal-width probability bins."""
    y = np.asarray(positive, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(y[sel].mean() - p[sel].mean())
    return total / len(p)


def chance_ece(prob: npt.ArrayLike, draws: int = 1000, seed: int = 0, bins: int = 10) -> Floats:
    """The ECE an exactly calibrated model with these probabilities would still show on this many clips:
    ``draws`` values, each with the labels drawn from the probabilities themselves (label-free; an ECE
    of a few hundred clips is never 0)."""
    p = np.asarray(prob, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return np.array([expected_calibration_error(rng.random(len(p)) < p, p, bins) for _ in range(draws)])


def format_confusion(m: Ints, names: tuple[str, ...] | list[str], cols: tuple[str, ...] | list[str]) -> str:
    """A confusion matrix as text (rows true, columns predicted), with each row's recall."""
    width = max(8, *(len(c) + 1 for c in cols))
    head = " " * 11 + "".join(f"{c[:width]:>{width}}" for c in cols) + "   recall"
    lines = [head]
    for i, name in enumerate(names):
        total = m[i].sum()
        recall = f"{m[i, i] / total:.3f}" if total and i < m.shape[1] else "  -"
        lines.append(f"{name[:10]:<11}" + "".join(f"{v:>{width}d}" for v in m[i]) + f"   {recall}")
    return "\n".join(lines)
