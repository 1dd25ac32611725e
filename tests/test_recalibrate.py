"""models.recalibrate: the calibration refitted on labelled clips of a new population, the network kept.
Real clips of the shared corpus (EmoDB speakers, which the no-EmoDB model never heard); they skip (or
fail in CI) when it is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models.calibrate import fit_platt, fit_temperature
from models.caller import frustration_log_odds, softmax
from models.data import load_clips, read_manifest
from models.emotion import NO_EMODB_WEIGHTS, EmotionModel, read_weights, weights_path
from models.metrics import expected_calibration_error
from tests.support import data_path

SPEAKERS = ("03", "08")  # EmoDB speakers outside the test split


def emodb_manifest(tmp_path: Path, *, per_speaker: int = 24, emotions: tuple[str, ...] = ()) -> Path:
    """A manifest of real EmoDB clips of SPEAKERS (every emotion, or only ``emotions``), spread over labels."""
    clips = [c for c in read_manifest(data_path("emotion/manifest.csv")) if c.dataset == "emodb"]
    rows = []
    for speaker in SPEAKERS:
        mine = [c for c in clips if c.speaker == speaker and (not emotions or c.emotion in emotions)]
        mine = sorted(mine, key=lambda c: (c.path[-6], c.path))  # label letter first: every label in the slice
        rows += [(c.path, c.dataset, c.speaker, c.emotion) for c in mine[:: max(1, len(mine) // per_speaker)]]
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "dataset", "speaker", "emotion"])
        w.writerows(rows)
    return path


def test_recalibration_refits_the_calibration_and_keeps_the_network(tmp_path: Path) -> None:
    from models import recalibrate

    manifest = emodb_manifest(tmp_path)
    root = data_path("emotion/manifest.csv").parent.parent
    source = weights_path(NO_EMODB_WEIGHTS)
    out = tmp_path / "recal.pt"
    argv = ["--manifest", str(manifest), "--root", str(root), "--weights", str(source), "--out", str(out)]
    assert recalibrate.main(argv) == 0

    old, new = read_weights(source), read_weights(out)
    assert old["state"].keys() == new["state"].keys()
    assert all(torch.equal(old["state"][k], new["state"][k]) for k in old["state"])  # the network, bit for bit
    assert new["meta"]["recalibrated_on"]["speakers"] == [f"emodb:{s}" for s in SPEAKERS]
    assert new["meta"]["recalibrated_on"]["before"]["platt"] == old["platt"]

    # Independently: the temperature fitted on the clips of the model's classes, Platt on every clip
    # (boredom, which the model lacks, counts as not frustrated).
    clips = read_manifest(manifest)
    model = EmotionModel(old)
    logits, _ = model.logits(load_clips(clips, root))
    labels = np.array([c.emotion for c in clips])
    assert "boredom" in labels and "boredom" not in model.classes and "angry" in labels
    known = np.isin(labels, model.classes)
    temperature = fit_temperature(logits[known], np.array([model.classes.index(x) for x in labels[known]]))
    positive = labels == "angry"
    frustration = model.frustration_classes
    platt = fit_platt(frustration_log_odds(softmax(logits / temperature), frustration), positive)
    assert new["temperature"] == temperature and new["platt"] == list(platt)
    assert new["temperature"] != old["temperature"]

    # The per-caller centroids: these clips' class means, the model's own for a class without clips here.
    centroids = np.array(new["caller"]["centroids"])
    for i, c in enumerate(model.classes):
        expected = logits[labels == c].mean(axis=0) if (labels == c).any() else np.array(old["caller"]["centroids"][i])
        assert np.allclose(centroids[i], expected)
    assert not (labels == "surprised").any()  # a RAVDESS-only class kept the model's centroid above

    # In sample, the refitted Platt fits these clips better than the RAVDESS calibration did.
    before = np.array([r["frustration"] for r in models.load_emotion_model(source).score(load_clips(clips, root))])
    after = np.array([r["frustration"] for r in models.load_emotion_model(out).score(load_clips(clips, root))])
    assert expected_calibration_error(positive, after) < expected_calibration_error(positive, before)


def test_recalibration_refuses_clips_without_frustration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models import recalibrate

    manifest = emodb_manifest(tmp_path, per_speaker=4, emotions=("neutral", "sad"))
    root = str(data_path("emotion/manifest.csv").parent.parent)
    out = tmp_path / "w.pt"
    assert recalibrate.main(["--manifest", str(manifest), "--root", root, "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert "needs angry clips and other clips; got 0 of " in printed.err
    assert "emotion.pt trained on emodb:03, emodb:08" in printed.out  # the shipped model heard them: warned
    assert not out.exists()


def test_platt_converges_on_saturated_scores() -> None:
    """Log-odds of saturated probabilities (|score| up to 40) made plain Newton overshoot and diverge; the
    fit must reach the penalised maximum likelihood, checked against a fine grid search of the same loss."""
    rng = np.random.default_rng(3)
    score = rng.uniform(-40, 40, 600)
    positive = rng.random(600) < 1 / (1 + np.exp(-(0.15 * score - 0.5)))
    a, b = fit_platt(score, positive)

    def loss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = a[..., None] * score + b[..., None]
        return np.sum(np.logaddexp(0, z) - positive * z, axis=-1) + 0.5e-2 * ((a - 1) ** 2 + b**2)

    ga, gb = np.meshgrid(np.linspace(0.05, 0.3, 251), np.linspace(-1.5, 0.5, 201))
    best = np.unravel_index(np.argmin(loss(ga, gb)), ga.shape)
    assert a == pytest.approx(ga[best], abs=0.002) and b == pytest.approx(gb[best], abs=0.02)
    assert loss(np.array(a), np.array(b)) <= loss(ga, gb).min() + 1e-9


def test_the_in_sample_platt_refit_finds_a_block_shift() -> None:
    """Scores one log-odds too high as a block: the refit's slope is ~1, its intercept ~-1, and its ECE is far
    under the shifted scores' (what ``models.evaluate`` prints under each ECE)."""
    from models.evaluate import platt_refit

    rng = np.random.default_rng(5)
    log_odds = rng.normal(0.0, 2.0, 4000)
    positive = rng.random(4000) < 1 / (1 + np.exp(-log_odds))
    shifted = 1 / (1 + np.exp(-(log_odds + 1.0)))
    a, b, refitted = platt_refit(positive, shifted)
    assert a == pytest.approx(1.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.15)
    assert refitted < 0.03 < expected_calibration_error(positive, shifted) - 0.05
