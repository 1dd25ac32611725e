"""The shipped emotion model: real clips of held-out speakers, input edge cases, evaluate's output, a
one-epoch training run. Tests that need the corpus skip (or fail in CI) when it is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import models
from models.audio import SAMPLE_RATE, windows
from models.live import read_weights
from models.scoring import WEIGHTS, weights_path
from models.training.data import read_manifest
from models.training.metrics import chance_ece, confusion, expected_calibration_error, roc_auc, unweighted_accuracy
from tests.support import REPO, data_path, tiny_manifest

KEYS = {"scores", "label", "frustration", "arousal", "windows"}


def corpus_clips(emotion: str, count: int, dataset: str = "ravdess") -> list[str]:
    """Paths of ``count`` clips of ``emotion`` from held-out test speakers (never trained on)."""
    clips = read_manifest(data_path("emotion/manifest.csv"))
    found = [c.path for c in clips if c.split == "test" and c.dataset == dataset and c.emotion == emotion]
    return found[:: max(1, len(found) // count)][:count]


def read(relative: str) -> np.ndarray:
    import soundfile as sf

    pcm, rate = sf.read(str(data_path(relative)), dtype="int16")
    assert rate == SAMPLE_RATE
    return np.asarray(pcm)


def test_importing_models_does_not_import_torch() -> None:
    code = (
        "import sys, numpy, models, models.audio, models.caller, models.training, models.training.data,"
        " models.training.metrics, models.training.augment, models.live, models.scoring;"
        " models.load_emotion_model().score([numpy.ones(8000, numpy.int16)]); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_weights_are_small_and_load_once() -> None:
    assert weights_path(WEIGHTS).stat().st_size < 5_000_000
    model = models.load_emotion_model()
    assert models.load_emotion_model() is model
    assert sum(v.size for v in read_weights(weights_path())["state"].values()) < 1_000_000
    assert {"neutral", "happy", "sad", "angry"} <= set(model.classes)


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(0, dtype=np.int16),
        np.zeros(3 * SAMPLE_RATE, dtype=np.int16),  # digital silence
        (np.random.default_rng(1).standard_normal(120) * 3000).astype(np.int16),  # 15 ms
        (np.sign(np.sin(np.arange(2 * SAMPLE_RATE) * 0.2)) * 32767).astype(np.int16),  # clipped square wave
        np.random.default_rng(2).uniform(-0.5, 0.5, 45 * SAMPLE_RATE).astype(np.float32),  # 45 s, float
        np.full(SAMPLE_RATE, np.nan, dtype=np.float32),
    ],
    ids=["empty", "silent", "short", "clipped", "long-float", "nan"],
)
def test_any_input_gives_sane_scores(audio: np.ndarray) -> None:
    model = models.load_emotion_model()
    [result] = model.score([audio])
    assert set(result) == KEYS
    assert list(result["scores"]) == list(model.classes)
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["label"] == max(result["scores"], key=result["scores"].get)
    assert 0.0 <= result["frustration"] <= 1.0 and 0.0 <= result["arousal"] <= 1.0
    assert result["windows"] == (len(windows(audio)) if len(audio) == 45 * SAMPLE_RATE else result["windows"])


def test_silence_is_neutral_and_unscored() -> None:
    [result] = models.load_emotion_model().score([np.zeros(SAMPLE_RATE, dtype=np.int16)])
    assert result["label"] == "neutral" and result["windows"] == 0 and result["frustration"] == 0.0


def test_batching_does_not_change_scores() -> None:
    """The torch model (training's) batches windows of similar length; each scores as it does alone."""
    from models.emotion import load

    rng = np.random.default_rng(3)
    items = [(rng.standard_normal(n) * 2000).astype(np.int16) for n in (4000, 24000, 24000, 70000)]
    model = load()
    together = model.score(items)
    for item, batched in zip(items, together, strict=True):
        [alone] = model.score([item])
        assert alone["frustration"] == pytest.approx(batched["frustration"], abs=1e-3)
        assert alone["label"] == batched["label"]


def test_windows_cover_a_long_turn() -> None:
    cut = windows(np.zeros(10 * SAMPLE_RATE, dtype=np.float32))
    assert [len(w) for w in cut] == [3 * SAMPLE_RATE] * 4  # starts 0, 3, 6 and 7 (ending at the end)
    assert len(windows(np.zeros(100, dtype=np.float32))[0]) == SAMPLE_RATE // 2


def test_angry_clips_score_above_neutral_ones() -> None:
    """Held-out RAVDESS and EmoDB speakers: angry clips sound frustrated, neutral ones do not."""
    model = models.load_emotion_model()
    for dataset in ("ravdess", "emodb"):
        angry = model.score([read(p) for p in corpus_clips("angry", 8, dataset)])
        neutral = model.score([read(p) for p in corpus_clips("neutral", 8, dataset)])
        f_angry = np.array([r["frustration"] for r in angry])
        f_neutral = np.array([r["frustration"] for r in neutral])
        assert f_angry.mean() > f_neutral.mean() + 0.4, (dataset, f_angry, f_neutral)
        assert np.median(f_angry) > f_neutral.max() - 0.2, (dataset, f_angry, f_neutral)
        p_angry = np.array([r["scores"]["angry"] for r in angry])
        p_neutral = np.array([r["scores"]["angry"] for r in neutral])
        assert p_angry.mean() > p_neutral.mean() + 0.3, dataset
        assert np.mean([r["arousal"] for r in angry]) > np.mean([r["arousal"] for r in neutral]) + 0.2, dataset


def test_evaluate_writes_one_prediction_per_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.training import evaluate

    paths = corpus_clips("angry", 3) + corpus_clips("neutral", 3)
    root = data_path("emotion/manifest.csv").parent.parent
    rows = [(p, "mine", "x", "angry" if i < 3 else "calm") for i, p in enumerate(paths)]
    out = tmp_path / "pred.jsonl"
    argv = ["--manifest", str(tiny_manifest(tmp_path, rows)), "--root", str(root), "--predictions", str(out)]
    assert evaluate.main(argv) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["path"] for line in lines] == paths
    for line in lines:
        assert {"path", "scores", "frustration", "arousal"} <= set(line)
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "ECE" in printed and "recall" in printed


def test_training_runs_on_a_tiny_manifest(tmp_path: Path) -> None:
    from models.training import train

    rows = []
    for speaker in ("01", "02", "03"):
        for emotion in ("angry", "neutral", "sad"):
            clips = read_manifest(data_path("emotion/manifest.csv"))
            mine = [c for c in clips if c.dataset == "ravdess" and c.speaker == speaker and c.emotion == emotion]
            rows += [(c.path, "mine", speaker, c.emotion) for c in mine[:2]]
    out = tmp_path / "tiny.pt"
    root = str(data_path("emotion/manifest.csv").parent.parent)
    argv = ["--manifest", str(tiny_manifest(tmp_path, rows)), "--root", root, "--out", str(out), "--epochs", "1"]
    assert train.main([*argv, "--batch", "8"]) == 0
    model = models.load_emotion_model(out)
    assert model.classes == ("neutral", "sad", "angry")
    [result] = model.score([read(rows[0][0])])
    assert set(result) == KEYS and 0.0 <= result["frustration"] <= 1.0


def test_refit_trains_on_every_speaker_with_the_first_fits_calibration(tmp_path: Path) -> None:
    import torch

    from models.emotion import read_weights
    from models.training import train

    common = five_speaker_manifest(tmp_path)
    first, refit = tmp_path / "first.pt", tmp_path / "refit.pt"
    assert train.main([*common, "--once", "--out", str(first)]) == 0
    assert train.main([*common, "--first-fit", str(first), "--out", str(refit)]) == 0
    a, b = read_weights(first), read_weights(refit)
    assert len(a["meta"]["val_speakers"]) == 1 and len(a["meta"]["train_speakers"]) == 4
    assert b["meta"]["train_speakers"] == sorted(a["meta"]["train_speakers"] + a["meta"]["val_speakers"])
    assert b["meta"]["calibration_speakers"] == a["meta"]["val_speakers"]
    assert (b["temperature"], b["platt"]) == (a["temperature"], a["platt"])
    assert not all(torch.equal(b["state"][k], a["state"][k]) for k in a["state"])
    assert "caller" not in a and "caller" not in b  # no out-of-fold logits, no per-caller calibration
    # a first fit of another recipe is refused, not silently used
    assert train.main([*common, "--first-fit", str(first), "--width", "64", "--out", str(refit)]) == 1


def test_the_default_refit_is_calibrated_by_speaker_cross_validation(tmp_path: Path) -> None:
    """``models.training.train`` cross-validates over speaker folds, refits on every speaker and calibrates with the
    out-of-fold logits (per clip, and per caller with class centroids); ``--oof`` reuses that run."""
    import torch

    from models.emotion import EmotionModel, read_weights
    from models.training import train
    from models.training.crossval import read_oof

    common = five_speaker_manifest(tmp_path)
    out, oof = tmp_path / "cv.pt", tmp_path / "oof.npz"
    assert train.main([*common, "--jobs", "2", "--save-oof", str(oof), "--out", str(out)]) == 0
    blob = read_weights(out)
    logits = read_oof(oof)
    assert sorted(set(logits.speakers)) == blob["meta"]["calibration_speakers"] == blob["meta"]["train_speakers"]
    assert len(blob["meta"]["train_speakers"]) == 5 and len(set(logits.fold.tolist())) == 4
    assert np.asarray(blob["caller"]["centroids"]).shape == (2, 2)
    spec = EmotionModel(blob).caller_spec()
    assert spec is not None and spec["classes"] == ["neutral", "angry"]
    again = tmp_path / "again.pt"
    assert train.main([*common, "--oof", str(oof), "--out", str(again)]) == 0
    same = read_weights(again)
    assert all(torch.equal(same["state"][k], blob["state"][k]) for k in blob["state"])
    assert (same["temperature"], same["platt"], same["caller"]) == (blob["temperature"], blob["platt"], blob["caller"])
    # out-of-fold logits of another recipe are refused
    assert train.main([*common, "--oof", str(oof), "--width", "64", "--out", str(again)]) == 1


def test_crossval_keeps_each_fold_model_calibrated_like_the_refit(tmp_path: Path) -> None:
    """``models.training.crossval --keep-models`` writes one model per fold, trained without its fold's speakers and
    carrying the calibration the refit gets from the same out-of-fold logits, ready for ``models.training.evaluate``."""
    from models.emotion import EmotionModel, read_weights
    from models.training import crossval

    common = five_speaker_manifest(tmp_path)
    oof = tmp_path / "oof.npz"
    assert crossval.main([*common, "--folds", "2", "--keep-models", "--out", str(oof)]) == 0
    logits = crossval.read_oof(oof)
    calibration = crossval.calibrate(logits)
    for k in (0, 1):
        blob = read_weights(tmp_path / "oof-logs" / f"fold{k}.pt")
        held = sorted(set(np.array(logits.speakers)[logits.fold == k]))
        assert sorted(set(logits.speakers) - set(held)) == blob["meta"]["train_speakers"]
        assert (blob["temperature"], blob["platt"], blob["caller"]) == (
            calibration["temperature"],
            calibration["platt"],
            calibration["caller"],
        )
        assert blob["meta"]["calibration_speakers"] == sorted(set(logits.speakers))
        assert EmotionModel(blob).caller_spec() is not None


def test_corpus_balance_weighs_every_dataset_and_class_cell_alike() -> None:
    """``--balance corpus``: each (dataset, class) cell carries the same total loss weight, whatever the
    corpora's class mixes; one dataset trains with the class weights alone (the option changes nothing)."""
    from models.training.data import Clip
    from models.training.fit import corpus_balanced_weights

    mix = {("a", "angry"): 6, ("a", "happy"): 2, ("b", "angry"): 1, ("b", "happy"): 3}
    clips = [Clip(f"{d}{e}{i}.wav", d, "01", e) for (d, e), n in mix.items() for i in range(n)]
    w = corpus_balanced_weights(clips)
    assert w is not None and w.mean() == pytest.approx(1.0)
    totals = {cell: sum(x for x, c in zip(w, clips, strict=True) if (c.dataset, c.emotion) == cell) for cell in mix}
    assert totals == pytest.approx(dict.fromkeys(mix, len(clips) / len(mix)))
    assert corpus_balanced_weights([c for c in clips if c.dataset == "a"]) is None


def test_out_of_fold_logits_from_before_a_new_option_still_match_its_default() -> None:
    """Out-of-fold logits written before a recipe option existed are that option's default recipe."""
    import argparse

    from models.training.crossval import same_recipe
    from models.training.fit import add_recipe_arguments, recipe_of

    default = recipe_of(add_recipe_arguments(argparse.ArgumentParser()).parse_args([]))
    older = {k: v for k, v in default.items() if k != "balance"}
    assert same_recipe(repr(older), default) and same_recipe(repr(default), default)
    assert not same_recipe(repr(older), default | {"balance": "corpus"})
    assert not same_recipe(repr(older | {"vtlp": 0.1}), default)


def five_speaker_manifest(tmp_path: Path) -> list[str]:
    """Two angry and two neutral clips of five RAVDESS speakers; one-epoch training options."""
    rows = []
    clips = read_manifest(data_path("emotion/manifest.csv"))
    for speaker in ("01", "02", "03", "04", "05"):
        for emotion in ("angry", "neutral"):
            mine = [c for c in clips if c.dataset == "ravdess" and c.speaker == speaker and c.emotion == emotion]
            rows += [(c.path, "mine", speaker, c.emotion) for c in mine[:2]]
    root = str(data_path("emotion/manifest.csv").parent.parent)
    return ["--manifest", str(tiny_manifest(tmp_path, rows)), "--root", root, "--epochs", "1", "--batch", "8"]


def test_metrics_on_known_answers() -> None:
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert expected_calibration_error([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert expected_calibration_error([1, 1], [0.0, 0.0]) == 1.0
    m = confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert unweighted_accuracy(m) == pytest.approx(0.75)  # class 2 has no clips: not averaged


def test_the_chance_level_of_the_ece_is_that_of_an_exactly_calibrated_model() -> None:
    # certain scores leave nothing to chance; a coin's 400 tosses miss 0.5 by a half-normal of sd 0.025
    assert not chance_ece(np.r_[np.zeros(50), np.ones(50)]).any()
    coin = chance_ece(np.full(400, 0.5), draws=2000)
    assert np.median(coin) == pytest.approx(0.6745 * 0.025, abs=0.002)
    assert np.array_equal(chance_ece(np.full(400, 0.5), draws=2000), coin)  # seeded: the same every run
    # fewer clips, a higher floor: what the ECE of one speaker's clips is up against
    assert np.median(chance_ece(np.full(60, 0.2))) > 2 * np.median(chance_ece(np.full(600, 0.2)))


def test_folded_batch_norms_and_dilated_convolutions_compute_the_same() -> None:
    """The inference shortcuts (batch norms folded into the layers, dilated convolutions as one plain
    convolution over the interleaved subsequences) give the network's own outputs."""
    import torch

    from models.net import DilatedConv1d, EmotionNet

    torch.manual_seed(0)
    for d, k, t, b in ((2, 3, 48, 1), (3, 3, 47, 2), (3, 5, 100, 3), (2, 3, 1, 1)):
        conv = DilatedConv1d(8, 6, k, dilation=d, padding=d * (k - 1) // 2)
        x = torch.randn(b, 8, t)
        plain = torch.nn.functional.conv1d(x, conv.weight, conv.bias, padding=d * (k - 1) // 2, dilation=d)
        assert torch.allclose(conv.train()(x), plain, atol=1e-5)  # subsequences as a batch
        assert torch.allclose(conv.eval()(x), plain, atol=1e-5)  # subsequences end to end
    net = EmotionNet(4, width=16, embed=8, pitch_bins=8)
    net.train()
    for _ in range(3):  # give the batch norms non-trivial running statistics
        net(torch.randn(4, 9000) * 0.1, torch.tensor([9000, 7000, 5000, 3000]))
    net.eval()
    wave, lengths = torch.randn(3, 20000) * 0.1, torch.tensor([20000, 9000, 3000])
    with torch.inference_mode():
        before = net(wave, lengths)
        after = net.fuse()(wave, lengths)
    assert torch.allclose(before, after, atol=1e-4)


def test_periodicity_channels_find_the_pitch() -> None:
    """The lag-gram of a harmonic tone peaks at its period (to within a log-spaced bin)."""
    import torch

    from models.net import LogMel
    from models.net_config import FRONT_END, PITCH_HZ

    front = LogMel(pitch_bins=32, **FRONT_END)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    lags = np.geomspace(SAMPLE_RATE / PITCH_HZ[1], SAMPLE_RATE / PITCH_HZ[0], 32)
    for f0 in (90.0, 150.0, 280.0):
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20) if f0 * k < 3400) * 0.1
        with torch.inference_mode():
            spec, _ = front(torch.tensor(tone, dtype=torch.float32)[None])
        gram = spec[0, int(FRONT_END["n_mels"]) :, 50].numpy()
        assert gram.max() > 0.8
        assert abs(np.log(lags[int(np.argmax(gram))] * f0 / SAMPLE_RATE)) < 0.05


def test_the_model_card_quotes_evaluate_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """The numbers printed by ``python -m models.training.evaluate`` and those in MODEL_CARD.md agree: the card's
    full-output block is exactly what the command prints for the shipped weights."""
    from models.training import evaluate

    data_path("emotion/manifest.csv")  # skips without the shared corpus
    assert evaluate.main([]) == 0
    printed = capsys.readouterr().out
    card = (REPO / "models" / "MODEL_CARD.md").read_text()
    block = card.split("Full output of `python -m models.training.evaluate`", 1)[1].split("```\n")[1]
    assert block == printed
