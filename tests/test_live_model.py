"""The emotion model servers run (numpy, ``models.live``) against the torch network it was trained as
(``models.emotion``): the same weights read without torch, the same logits and scores on real speech, for the
shipped weights and for networks of every option ``mise train`` has. Needs the emotion corpus (skips without
it, fails in CI)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from api.simulate import read_ulaw_track
from engine.g711 import decode_ulaw
from models import emotion, live, ptfile
from models.net import EmotionNet
from models.numpy_net import NumpyEmotionNet
from models.scoring import NO_EMODB_WEIGHTS, WEIGHTS, weights_path
from models.training.data import read_manifest
from tests.support import REPO, data_path

LOGIT_TOLERANCE = 1e-4  # float32 arithmetic in another order: observed 7.5e-6 at most


def speech() -> list[np.ndarray]:
    """Turn-like pieces of the demo call (0.4-7 s, some silent) and held-out corpus clips of every emotion."""
    pcm = decode_ulaw(read_ulaw_track(REPO / "api/demo/inbound.wav"))
    lengths = [3200, 8000, 12000, 16000, 24000, 30000, 56000]
    pieces = [pcm[s : s + lengths[i % 7]] for i, s in enumerate(range(0, len(pcm) - 56000, 9000))]
    import soundfile as sf

    clips = read_manifest(data_path("emotion/manifest.csv"))
    test = [c for c in clips if c.split == "test"]
    for clip in test[:: max(1, len(test) // 24)][:24]:
        audio, _ = sf.read(str(data_path(clip.path)), dtype="int16")
        pieces.append(np.asarray(audio))
    return pieces


def assert_same(numpy_results: list[dict], torch_results: list[dict]) -> None:
    for a, b in zip(numpy_results, torch_results, strict=True):
        assert a["windows"] == b["windows"]
        assert np.abs(np.subtract(a["logits"], b["logits"])).max() < LOGIT_TOLERANCE, (a["logits"], b["logits"])
        assert a["frustration"] == pytest.approx(b["frustration"], abs=1e-5)
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


@pytest.mark.parametrize("name", [WEIGHTS, NO_EMODB_WEIGHTS])
def test_the_weights_read_without_torch_are_torchs(name: str) -> None:
    mine, theirs = live.read_weights(weights_path(name)), emotion.read_weights(weights_path(name))
    assert mine.keys() == theirs.keys() and mine["state"].keys() == theirs["state"].keys()
    for key, tensor in theirs["state"].items():
        assert np.array_equal(mine["state"][key], tensor.numpy()) and mine["state"][key].dtype == tensor.numpy().dtype
    for key in ("classes", "temperature", "platt", "frustration", "arousal", "caller"):
        assert mine[key] == theirs[key]


@pytest.mark.parametrize("name", [WEIGHTS, NO_EMODB_WEIGHTS])
def test_the_numpy_model_scores_real_speech_as_the_torch_model_does(name: str) -> None:
    items = speech()
    numpy_results = live.load(weights_path(name)).score_with_logits(items)
    torch_results = emotion.load(weights_path(name)).score_with_logits(items)
    assert sum(r["windows"] for r in torch_results) > 30 and any(r["windows"] == 0 for r in torch_results)
    assert_same(numpy_results, torch_results)


@pytest.mark.parametrize(
    "config", [{"cmn": True, "pitch_bins": 40}, {"cmn": False, "pitch_bins": 24, "width": 64}, {"width": 32}]
)
def test_every_network_option_gives_the_torch_networks_logits(config: dict) -> None:
    """Networks ``mise train`` can make (``--cmn``, ``--pitch-bins``, ``--width``), with random weights and
    batch-norm statistics, so no option's arithmetic goes untested by the shipped weights' defaults."""
    torch.manual_seed(7)
    net = EmotionNet(5, **config)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    twin = NumpyEmotionNet(state, **config)
    with pytest.raises(ValueError, match="not supported"):  # an option it does not know is refused, not ignored
        NumpyEmotionNet(state, **config, spectral_gate=True)
    net.fuse()
    for item in speech()[:12]:
        x = (item[:24000] / 32768.0).astype(np.float32)
        if len(x) < 4000:
            continue
        with torch.inference_mode():
            expected = net(torch.from_numpy(x)[None], torch.tensor([len(x)]))[0].double().numpy()
        assert np.abs(twin(x) - expected).max() < LOGIT_TOLERANCE


def test_a_weights_file_holding_code_or_no_weights_is_refused(tmp_path: Path) -> None:
    class Payload:  # what a malicious file could carry: anything but plain data and tensors is refused
        def __reduce__(self) -> tuple:
            return (print, ("this must not run",))

    evil = tmp_path / "evil.pt"
    torch.save({"state": {}, "hook": Payload()}, evil)
    with pytest.raises(ptfile.WeightsFileError, match="may not hold"):
        live.read_weights(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"state": {"w": torch.ones(2)}}, plain)
    with pytest.raises(ptfile.WeightsFileError, match="not an emotion-model weights file"):
        live.read_weights(plain)
    for junk in (b"", b"not a zip", _zip_without_pickle()):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(junk)
        with pytest.raises(ptfile.WeightsFileError):
            live.read_weights(bad)


def _zip_without_pickle() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x/data/0", b"\0" * 8)
    return out.getvalue()


def test_a_server_given_a_bad_weights_file_stops_with_the_variable_named(tmp_path: Path) -> None:
    from api.app import _emotion_model
    from api.settings import ConfigError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    for path in (str(bad), str(tmp_path / "missing.pt")):
        with pytest.raises(ConfigError, match="MISE_EMOTION_WEIGHTS"):
            _emotion_model(path)
    assert _emotion_model(None).classes == live.load().classes  # the packaged weights
