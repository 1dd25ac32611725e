"""The built-in recogniser (models/whisper.py: Whisper tiny.en on CTranslate2, int8, CPU) on a real call's turns,
through the same packing the live path uses (engine/asr.py) and ``mise analyze --transcribe``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from api.analyze import analyze_tracks, load_tracks, transcribe_turns
from engine.asr import SR, normalise, upsample, word_error_rate
from models.whisper import Whisper
from tests.support import REPO, data_path


@pytest.fixture(scope="module")
def model() -> Whisper:
    return Whisper(threads=2)


@pytest.fixture(scope="module")
def synthetic() -> Path:
    return data_path("calls/synthetic_dialogue/turns.csv").parent


def reference(folder: Path, track: str) -> list[str]:
    with (folder / "turns.csv").open(newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["track"] == track), key=lambda r: float(r["start_s"]))
    return [w for r in rows for w in normalise(r["text"])]


def heard(model: Whisper, folder: Path, *, packed: bool = True) -> tuple[list[dict[str, object]], dict[str, float]]:
    """The call's turns with their words, and the word error rate per track against turns.csv."""
    caller, agent = load_tracks(folder / "inbound.wav", folder / "outbound.wav")
    result = analyze_tracks(caller, agent, call_sid=folder.name)
    if packed:
        transcribe_turns(result, caller, agent, model.transcribe, redact=False)
    else:  # one turn per recogniser window
        tracks = {"inbound": caller, "outbound": agent}
        for t in result["turns"]:
            audio = upsample(tracks[t["track"]][t["start_ms"] * 8 : t["end_ms"] * 8])
            t["text"] = " ".join(w[0] for w in model.transcribe([audio])[0])
    rates = {}
    for track in ("inbound", "outbound"):
        said = [w for t in result["turns"] if t["track"] == track for w in normalise(t["text"])]
        edits, words = word_error_rate(reference(folder, track), said)
        rates[track] = edits / words
    return result["turns"], rates


def test_every_turn_gets_its_words_within_its_own_time(model: Whisper, synthetic: Path) -> None:
    """Regression bounds, well above what bench/asr.py measures (synthetic 0.3-0.5, AMI 0.2-0.3 per track):
    a broken feature, decoding or packing step gives ~1.0."""
    ami = data_path("calls/ami_es2004_a/turns.csv").parent
    for folder, bound in ((synthetic, 0.6), (ami, 0.4)):
        turns, rates = heard(model, folder)
        assert max(rates.values()) <= bound, (folder.name, rates)
        for t in turns:
            assert t["transcript"] == "done" and t["transcript_source"] == "asr", t
            words: list[dict[str, float]] = t["words"]
            starts = [w["start_ms"] for w in words]
            assert starts == sorted(starts)
            assert all(t["start_ms"] <= w["start_ms"] <= w["end_ms"] <= t["end_ms"] for w in words), words
            assert all(0.0 <= w["confidence"] <= 1.0 for w in words)


def test_packing_hears_as_well_as_one_turn_per_window(model: Whisper, synthetic: Path) -> None:
    _, packed = heard(model, synthetic)
    _, alone = heard(model, synthetic, packed=False)
    # Over both tracks (~100 words each way: one track alone moves by several words from run to run of packing)
    assert sum(packed.values()) / 2 <= sum(alone.values()) / 2 + 0.1, (packed, alone)


def test_silence_and_noise_give_no_words(model: Whisper) -> None:
    rng = np.random.default_rng(1)
    quiet = [np.zeros(SR * 5, dtype=np.float32), (0.001 * rng.standard_normal(SR * 3)).astype(np.float32)]
    assert model.transcribe(quiet) == [[], []]


def test_mise_analyze_transcribe_prints_the_words(synthetic: Path) -> None:
    cmd = [sys.executable, "-m", "api.cli", "analyze", "--inbound", str(synthetic / "inbound.wav")]
    cmd += ["--outbound", str(synthetic / "outbound.wav"), "--transcribe", "--no-emotion", "--json"]
    out = json.loads(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=300).stdout)
    first = sorted(out["turns"], key=lambda t: t["start_ms"])[0]
    assert {"thank", "calling"} <= set(normalise(first["text"])) and first["redactions"] == []
    assert first["words"][0]["start_ms"] >= first["start_ms"]
