"""The `mise` command line, run as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import soundfile

from api.cli import render_twiml
from tests.support import API_KEY, REPO, Server, data_path, free_port

pytestmark = pytest.mark.integration


def mise(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_twiml() -> None:
    out = mise("twiml", "--url", "wss://mise.example.com/v1/stream/twilio", "--api-key", "k-123")
    assert out.returncode == 0
    assert '<Stream url="wss://mise.example.com/v1/stream/twilio" track="both_tracks">' in out.stdout
    assert '<Parameter name="api_key" value="k-123"/>' in out.stdout
    assert "https://mise.example.com/v1/webhook/twilio?api_key=k-123" in out.stdout
    assert "<Start>" in out.stdout and "</Response>" in out.stdout


def test_twiml_is_well_formed_xml_whatever_the_key() -> None:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(render_twiml("wss://h/v1/stream/twilio", 'a"b<&', "inbound_track"))
    stream = root.find("Start/Stream")
    assert stream is not None and stream.get("track") == "inbound_track"
    param = stream.find("Parameter")
    assert param is not None and param.get("value") == 'a"b<&'


def test_simulate_wav_tracks_and_jsonl_copies(server: Server, synthetic_capture: Path) -> None:
    inbound = data_path("calls/ami_es2004_a/inbound.wav")
    outbound = data_path("calls/ami_es2004_a/outbound.wav")
    out = mise(
        "simulate",
        "--inbound",
        str(inbound),
        "--outbound",
        str(outbound),
        "--url",
        server.ws,
        "--api-key",
        API_KEY,
        "--speed",
        "0",
    )
    assert out.returncode == 0, out.stderr
    call_sid = out.stdout.split()[1].rstrip(":")
    call = server.wait_call(call_sid)
    assert call["tracks"]["inbound"]["duration_ms"] == call["tracks"]["outbound"]["duration_ms"] == 30000
    out = mise(
        "simulate",
        str(synthetic_capture),
        "--url",
        server.ws,
        "--api-key",
        API_KEY,
        "--speed",
        "50",
        "--calls",
        "3",
        "--skip-silence",
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("call ")]
    assert len(lines) == 3
    for line in lines:
        skipped = int(line.split(" media frames sent, ")[1].split()[0])
        assert skipped > 0, "the synthetic call has digital silence between turns"
        call = server.wait_call(line.split()[1].rstrip(":"))
        # Skipped silence is placed by timestamp: the call keeps its true length, gaps read as silence.
        assert call["tracks"]["inbound"]["duration_ms"] <= 56660
        assert call["tracks"]["inbound"]["missing_ms"] > 0


def test_simulate_resamples_other_formats(server: Server, tmp_path: Path) -> None:
    import numpy as np

    t = np.arange(16000 * 2) / 16000
    path = tmp_path / "tone16k.wav"
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, subtype="PCM_16")
    out = mise("simulate", "--inbound", str(path), "--url", server.ws, "--api-key", API_KEY, "--speed", "0")
    assert out.returncode == 0, out.stderr
    call = server.wait_call(out.stdout.split()[1].rstrip(":"))
    assert call["tracks"]["inbound"]["duration_ms"] == 2000 and call["tracks_declared"] == ["inbound"]


def test_serve_demo_as_make_run_does(tmp_path: Path) -> None:
    """`make run` is `mise serve --demo`: embedded Ray, the bundled call through the real endpoint."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISE_", "RAY_ADDRESS"))}
    ray_tmp = tempfile.mkdtemp(prefix="mr")  # short: Ray's socket paths must fit 107 bytes
    env |= {"MISE_PORT": str(port), "MISE_DATA_DIR": str(tmp_path / "data"), "RAY_TMPDIR": ray_tmp}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--demo", "--demo-speed", "10"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        key = None
        deadline = time.monotonic() + 90
        calls: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            key_file = tmp_path / "data" / "api_key"
            if key is None and key_file.exists() and key_file.read_text().strip():
                key = key_file.read_text().strip()
                assert oct(key_file.stat().st_mode & 0o777) == "0o600"
            if key:
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/v1/calls", params={"api_key": key}, timeout=5)
                    calls = r.json()["calls"] if r.status_code == 200 else []
                except httpx.HTTPError:
                    calls = []
                if calls and not calls[0]["live"]:
                    break
            time.sleep(0.2)
        assert calls, (tmp_path / "serve.log").read_text()[-3000:]
        demo = calls[0]
        audio_ms = soundfile.info(str(REPO / "api" / "demo" / "inbound.wav")).duration * 1000
        for track in ("inbound", "outbound"):
            assert abs(demo["tracks"][track]["duration_ms"] - audio_ms) <= 20  # type: ignore[index]
        assert demo["end_reason"] == "stop" and demo["custom_parameters"] == {
            "demo": "true",
            "customer": "Contoso Internet",
        }
        # Words by default: every turn of the demo call gets them from the built-in transcriber.
        turns: list[dict[str, object]] = []
        while time.monotonic() < deadline + 60:
            turns = httpx.get(
                f"http://127.0.0.1:{port}/v1/calls/{demo['call_sid']}/turns", params={"api_key": key}
            ).json()["turns"]
            if turns and all(t.get("transcript") != "pending" for t in turns):
                break
            time.sleep(0.5)
        assert [t.get("transcript") for t in turns] == ["done"] * 10, turns
        assert sum(1 for t in turns if t["text"]) >= 8 and all(t["transcript_source"] == "asr" for t in turns)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_analyze_prints_the_turns_of_the_scripted_call_as_json(tmp_path: Path) -> None:
    import csv

    import orjson
    from scipy.signal import resample_poly

    call = data_path("calls/synthetic_dialogue")
    out = mise("analyze", "--inbound", str(call / "inbound.wav"), "--outbound", str(call / "outbound.wav"), "--json")
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    # The emotion model on, as by default: every turn scored (tests/test_emotion_live.py: as the live path).
    assert all(0 <= t["frustration"] <= 1 and t["emotion"]["label"] for t in result["turns"])
    with open(call / "turns.csv", newline="") as f:
        reference = list(csv.DictReader(f))
    assert [(t["track"], round(t["start_ms"] / 1000, 1)) for t in result["turns"]] == [
        (r["track"], round(float(r["start_s"]), 1)) for r in reference
    ]
    assert result["summary"]["turns"] == 10 and result["summary"]["interruptions"]["caller"] == 2
    # Another rate and encoding (16 kHz float, as a studio recording might be): resampled to the phone band.
    for track in ("inbound", "outbound"):
        x, sr = soundfile.read(call / f"{track}.wav", dtype="float32")
        soundfile.write(tmp_path / f"{track}.wav", resample_poly(x, 2, 1), sr * 2, subtype="FLOAT")
    wide = mise("analyze", "--inbound", str(tmp_path / "inbound.wav"), "--outbound", str(tmp_path / "outbound.wav"))
    assert wide.returncode == 0, wide.stderr
    table = wide.stdout.splitlines()
    assert table[0].split()[:4] == ["#", "speaker", "start", "end"]
    assert sum(1 for line in table if line.split()[1:2] in (["caller"], ["agent"])) == 10
    assert "summary: 10 turns" in table[-1]


def test_analyze_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "notes.wav").write_text("not audio")
    out = mise("analyze", "--inbound", str(tmp_path / "notes.wav"))
    assert out.returncode == 2 and "cannot read the audio" in out.stderr and "Traceback" not in out.stderr
    missing = mise("analyze", "--inbound", str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_mise_train_is_the_model_trainer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mise train ...` hands its arguments to models.training.train (trained for real in tests/test_model.py)."""
    from api.cli import main

    assert main(["train", "--manifest", str(tmp_path / "none.csv")]) == 2
    assert "none.csv not found" in capsys.readouterr().err


def test_mise_recalibrate_is_the_model_recalibrator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mise recalibrate ...` hands its arguments to models.training.recalibrate (run for real in
    tests/test_recalibrate.py)."""
    from api.cli import main

    assert main(["recalibrate", "--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "w.pt")]) == 2
    assert "none.csv not found" in capsys.readouterr().err
