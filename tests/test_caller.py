"""models.caller: a caller's voice offset on synthetic logits with known answers (pure numpy, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from models.caller import SHRINK, CallerBaseline, class_centroids, in_order, softmax
from models.training.crossval import OutOfFold

NEUTRAL, ANGRY = 0, 1
# Class centroids of a population: confident, well separated.
CENTROIDS = np.array([[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]])
TILT = np.array([0.0, 1.5, 0.0])  # a voice that reads angrier than it is


def test_no_turns_no_offset_and_reset_forgets() -> None:
    caller = CallerBaseline(CENTROIDS)
    assert np.array_equal(caller.adjust(CENTROIDS[0] + TILT), CENTROIDS[0] + TILT)
    caller.update(CENTROIDS[0] + TILT)
    assert caller.turns == 1 and np.abs(caller.offset()).sum() > 0
    caller.reset()
    assert caller.turns == 0 and np.array_equal(caller.offset(), np.zeros(3))


def test_a_caller_who_sounds_like_the_population_is_left_alone() -> None:
    caller = CallerBaseline(CENTROIDS)
    for row in (0, 1, 2, 0, 0):
        caller.update(CENTROIDS[row])
    assert np.abs(caller.offset()).max() < 0.05


@pytest.mark.parametrize("mix", [(0, 0, 0, 0, 0, 0), (1, 1, 1, 1, 1, 1), (0, 1, 2, 0, 1, 2)])
def test_the_offset_does_not_depend_on_the_callers_mix_of_emotions(mix: tuple[int, ...]) -> None:
    """All calm, all angry or mixed: the same tilt is found (a plain mean of the logits would call an
    always-angry caller's anger their voice)."""
    caller = CallerBaseline(CENTROIDS, shrink=0.0)
    for row in mix * 5:
        caller.update(CENTROIDS[row] + TILT)
    assert np.allclose(caller.offset(), TILT, atol=0.1)


def test_shrinkage_and_the_effect_on_a_calm_turn() -> None:
    turn = CENTROIDS[0] + TILT
    caller = CallerBaseline(CENTROIDS)
    caller.update(turn)
    residual = turn - softmax(turn) @ CENTROIDS
    assert np.allclose(caller.offset(), residual / (1 + SHRINK))
    for _ in range(100):
        caller.update(turn)
    assert softmax(caller.adjust(turn))[ANGRY] < softmax(turn)[ANGRY]
    assert np.allclose(caller.adjust(turn), CENTROIDS[0], atol=0.2)


def test_in_order_is_causal() -> None:
    rows = np.stack([CENTROIDS[0] + TILT, CENTROIDS[1] + TILT, CENTROIDS[0], CENTROIDS[2]])
    out = in_order(rows, [2, 0, 3, 1], CENTROIDS)
    assert np.array_equal(out[2], rows[2])  # the first to arrive has nothing to go on
    caller = CallerBaseline(CENTROIDS)
    for i in (2, 0, 3, 1):
        assert np.allclose(out[i], caller.adjust(rows[i]))
        caller.update(rows[i])


def test_class_centroids() -> None:
    logits = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    got = class_centroids(logits, ["neutral", "neutral", "angry"], ("neutral", "angry", "sad"))
    assert np.allclose(got, [[2.0, 0.0], [0.0, 2.0], logits.mean(axis=0)])
    with pytest.raises(ValueError):
        CallerBaseline(np.zeros((2, 3)))


def synthetic_oof(scale: float, seed: int = 0) -> OutOfFold:
    """Out-of-fold logits of two classes, 12 speakers in 4 folds, 1,200 clips, whose confidence grows with ``scale``."""
    rng = np.random.default_rng(seed)
    labels = [("neutral", "angry")[i // 12 % 2] for i in range(1200)]
    y = np.array([lab == "angry" for lab in labels], dtype=np.float64)
    margin = scale * (2 * y - 1 + rng.normal(0, 1.2, len(y)))
    logits = np.stack([-margin / 2, margin / 2], axis=1)
    speakers = [f"s:{i % 12}" for i in range(1200)]
    fold = np.array([i % 12 % 4 for i in range(1200)])
    return OutOfFold(("neutral", "angry"), ("angry",), logits, labels, speakers, fold)


def test_a_calibration_fitted_to_less_confident_fold_models_does_not_transfer() -> None:
    """``models.training.crossval``'s transfer check: calibrated by itself it equals its own cross-fitting; calibrated
    by fold models half as confident, the same logits come out overconfident."""
    from models.training.crossval import cross_fitted, per_caller
    from models.training.evaluate import figures

    oof = synthetic_oof(2.0)
    own = cross_fitted(oof)
    same = cross_fitted(oof, source=oof, source_logits=oof.logits)
    assert np.array_equal(own.frustration, same.frustration)
    assert np.array_equal(per_caller(oof, "random", 0), per_caller(oof, "random", 0, source=oof))
    weaker = synthetic_oof(1.0)
    moved = cross_fitted(oof, source=weaker, source_logits=weaker.logits)
    assert figures(moved)["frustration_ece"] > figures(own)["frustration_ece"] + 0.05
    angry = np.array(oof.labels) == "angry"
    assert moved.frustration[angry].mean() > own.frustration[angry].mean()


def test_speaker_folds_mix_corpora_and_genders_and_never_outnumber_the_speakers() -> None:
    from models.training.crossval import speaker_folds
    from models.training.data import Clip

    clips = [
        Clip(f"{d}/{s}.wav", d, s, "neutral", g)
        for d in ("a", "b")
        for s, g in zip("123", ("male", "female", "male"), strict=True)
    ]
    two = speaker_folds(clips, 2)
    assert sorted(len(f) for f in two) == [3, 3] and set().union(*two) == {(c.dataset, c.speaker) for c in clips}
    assert all({d for d, _ in f} == {"a", "b"} for f in two)
    assert sorted(len(f) for f in speaker_folds(clips, 30)) == [1] * 6  # one fold per speaker
    with pytest.raises(ValueError, match="two or more"):
        speaker_folds(clips[:1], 4)
