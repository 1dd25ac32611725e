"""models.training.recalibrate: the calibration refitted on labelled clips of a new population, the network kept.
Real clips of the shared corpus (EmoDB speakers, which the no-EmoDB model never heard); they skip (or
fail in CI) when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.emotion import NO_EMODB_WEIGHTS, EmotionModel, read_weights, weights_path
from models.training.calibrate import fit_calibration, fit_platt
from models.training.data import Clip, load_clips, read_manifest
from models.training.evaluate import scored_per_caller
from models.training.metrics import expected_calibration_error
from tests.support import data_path, tiny_manifest

SPEAKERS = ("03", "08")  # EmoDB speakers outside the test split


def emodb_clips(
    speakers: tuple[str, ...] = SPEAKERS, per_speaker: int = 24, emotions: tuple[str, ...] = ()
) -> list[Clip]:
    """Real EmoDB clips of ``speakers`` (every emotion, or only ``emotions``), spread over the labels."""
    clips = [c for c in read_manifest(data_path("emotion/manifest.csv")) if c.dataset == "emodb"]
    out = []
    for speaker in speakers:
        mine = [c for c in clips if c.speaker == speaker and (not emotions or c.emotion in emotions)]
        mine = sorted(mine, key=lambda c: (c.path[-6], c.path))  # label letter first: every label in the slice
        out += mine[:: max(1, len(mine) // per_speaker)]
    return out


def recalibrate(tmp_path: Path, rows: list[tuple[str, ...]], *columns: str, weights: Path | None = None) -> Path:
    from models.training import recalibrate as command

    manifest = tiny_manifest(tmp_path, rows, columns) if columns else tiny_manifest(tmp_path, rows)
    out = tmp_path / "recal.pt"
    root = str(data_path("emotion/manifest.csv").parent.parent)
    argv = ["--manifest", str(manifest), "--root", root, "--out", str(out)]
    assert command.main([*argv, "--weights", str(weights or weights_path(NO_EMODB_WEIGHTS))]) == 0
    return out


def scores(weights: dict[str, object], clips: list[Clip]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frustration each clip alone and per caller (random order), and which clips are angry."""
    model = EmotionModel(weights)
    logits, counts = model.logits(load_clips(clips, data_path("emotion/manifest.csv").parent.parent))
    alone = np.array([model.result(z, n)["frustration"] for z, n in zip(logits, counts, strict=True)])
    spec = model.caller_spec()
    assert spec is not None
    caller = scored_per_caller(model, spec, clips, logits, counts, "random", 0).frustration
    return alone, caller, np.array([c.emotion == "angry" for c in clips])


def test_recalibration_refits_the_calibration_and_keeps_the_network(tmp_path: Path) -> None:
    clips = emodb_clips()
    out = recalibrate(tmp_path, [(c.path, c.dataset, c.speaker, c.emotion) for c in clips])
    old, new = read_weights(weights_path(NO_EMODB_WEIGHTS)), read_weights(out)
    assert old["state"].keys() == new["state"].keys()
    assert all(torch.equal(old["state"][k], new["state"][k]) for k in old["state"])  # the network, bit for bit
    assert new["meta"]["recalibrated_on"]["speakers"] == new["meta"]["calibration_speakers"] == ["emodb:03", "emodb:08"]
    assert new["meta"]["recalibrated_on"]["before"]["platt"] == old["platt"]

    # Per turn: the temperature of the clips whose label the model has, Platt on all (boredom: not frustrated).
    model = EmotionModel(old)
    logits, _ = model.logits(load_clips(clips, data_path("emotion/manifest.csv").parent.parent))
    labels = np.array([c.emotion for c in clips])
    assert "boredom" in labels and "boredom" not in model.classes and "angry" in labels
    y = np.array([model.classes.index(x) if x in model.classes else -1 for x in labels])
    temperature, platt = fit_calibration(logits, y, model.frustration_classes)
    assert new["temperature"] == temperature != old["temperature"] and new["platt"] == list(platt)

    # Per caller: these clips' class means as centroids, the model's own for a class without clips here.
    centroids = np.array(new["caller"]["centroids"])
    for i, c in enumerate(model.classes):
        expected = logits[labels == c].mean(axis=0) if (labels == c).any() else np.array(old["caller"]["centroids"][i])
        assert np.allclose(centroids[i], expected)
    assert not (labels == "surprised").any()  # a RAVDESS-only class kept the model's centroid above
    assert new["caller"]["temperature"] != new["temperature"]  # fitted on the adjusted logits, not the raw ones

    # In sample, each clip alone and per caller, the new calibration fits these clips better than RAVDESS's.
    before, after = scores(old, clips), scores(new, clips)
    for i in (0, 1):
        assert expected_calibration_error(after[2], after[i]) < expected_calibration_error(before[2], before[i])


def test_without_speaker_names_each_clip_is_a_caller_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No speaker column: every clip is scored alone, so the per-caller fit sees raw logits and must equal
    the per-turn fit."""
    clips = emodb_clips(per_speaker=12)
    new = read_weights(recalibrate(tmp_path, [(c.path, c.emotion) for c in clips], "path", "emotion"))
    assert (new["caller"]["temperature"], new["caller"]["platt"]) == (new["temperature"], new["platt"])
    assert new["meta"]["recalibrated_on"]["speakers"] == []
    assert "turns scored alone: the clips name no speakers" in capsys.readouterr().out


def test_one_speaker_keeps_the_models_centroids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = emodb_clips(("03",))
    new = read_weights(recalibrate(tmp_path, [(c.path, c.dataset, c.speaker, c.emotion) for c in clips]))
    assert new["caller"]["centroids"] == read_weights(weights_path(NO_EMODB_WEIGHTS))["caller"]["centroids"]
    assert "against the model's class centroids (one speaker)" in capsys.readouterr().out


def test_silent_clips_are_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = emodb_clips(per_speaker=12)
    rows = [(c.path, c.dataset, c.speaker, c.emotion) for c in clips]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.int16), 8000)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    without = read_weights(recalibrate(tmp_path / "a", rows))
    with_silence = read_weights(recalibrate(tmp_path / "b", [*rows, (str(silent), "emodb", "03", "angry")]))
    assert "skipped 1 silent clip(s)" in capsys.readouterr().out
    assert {k: with_silence[k] for k in ("temperature", "platt", "caller")} == {
        k: without[k] for k in ("temperature", "platt", "caller")
    }


def test_recalibration_refuses_clips_without_frustration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.training import recalibrate as command

    clips = emodb_clips(per_speaker=4, emotions=("neutral", "sad"))
    manifest = tiny_manifest(tmp_path, [(c.path, c.dataset, c.speaker, c.emotion) for c in clips])
    root = str(data_path("emotion/manifest.csv").parent.parent)
    out = tmp_path / "w.pt"
    assert command.main(["--manifest", str(manifest), "--root", root, "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert "needs angry clips and other clips; got 0 of " in printed.err
    assert "emotion.pt trained on emodb:03, emodb:08" in printed.out  # the shipped model heard them: warned
    assert not out.exists()


def test_the_study_needs_a_per_caller_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.training import recalibrate as command

    data_path("emotion/manifest.csv")  # skips without the shared corpus
    blob = read_weights(weights_path(NO_EMODB_WEIGHTS))
    del blob["caller"]  # as `models.training.train --once` writes them
    torch.save(blob, tmp_path / "once.pt")
    assert command.main(["--study", "--weights", str(tmp_path / "once.pt")]) == 1
    assert "needs weights with a per-caller calibration" in capsys.readouterr().err


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
    under the shifted scores' (what ``models.training.evaluate`` prints under each ECE)."""
    from models.training.evaluate import platt_refit

    rng = np.random.default_rng(5)
    log_odds = rng.normal(0.0, 2.0, 4000)
    positive = rng.random(4000) < 1 / (1 + np.exp(-log_odds))
    shifted = 1 / (1 + np.exp(-(log_odds + 1.0)))
    a, b, refitted = platt_refit(positive, shifted)
    assert a == pytest.approx(1.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.15)
    assert refitted < 0.03 < expected_calibration_error(positive, shifted) - 0.05


def test_a_model_recalibrated_in_memory_scores_as_the_written_file(tmp_path: Path) -> None:
    clips = emodb_clips(per_speaker=8)
    new = read_weights(recalibrate(tmp_path, [(c.path, c.dataset, c.speaker, c.emotion) for c in clips]))
    model = EmotionModel(read_weights(weights_path(NO_EMODB_WEIGHTS)))
    in_memory = model.recalibrated({k: new[k] for k in ("temperature", "platt", "caller")})
    logits, counts = model.logits(load_clips(clips, data_path("emotion/manifest.csv").parent.parent))
    written = EmotionModel(new)
    assert [in_memory.result(z, n) for z, n in zip(logits, counts, strict=True)] == [
        written.result(z, n) for z, n in zip(logits, counts, strict=True)
    ]
    assert in_memory.caller_spec() == written.caller_spec() and in_memory.net is model.net
