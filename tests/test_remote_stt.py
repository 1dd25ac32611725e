"""models/remote_stt.py: the OpenAI-style transcription client, against a real HTTP service on a free port.

The service here is a small one of the test's own (stdlib http.server) that speaks the same API and answers
with the built-in Whisper's words: no external speech-to-text service can run here (no network), so this
stands in for one (speaches, whisper.cpp's server, OpenAI, ...), and says so. It checks what the client
sends (multipart WAV at 8 kHz, model, verbose_json, word timestamps, the bearer key).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from engine.asr import Clip, normalise, transcribe, upsample
from models.remote_stt import RemoteStt, RemoteSttError, parse
from models.whisper import Whisper
from tests.support import data_path

seen: list[dict[str, Any]] = []
FIELDS = ("model", "response_format", "timestamp_granularities[]")


class OpenAiStyleStt(BaseHTTPRequestHandler):
    model: Whisper

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
        with wave.open(io.BytesIO(fields["file"].get_content())) as w:
            rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
        seen.append(
            {
                "auth": self.headers.get("Authorization"),
                "rate": rate,
                **{k: fields[k].get_content().strip() for k in FIELDS},
            }
        )
        words = transcribe(self.model.transcribe, [Clip(0, upsample(pcm))])[0]
        reply = {
            "text": " ".join(w.text for w in words),
            "words": [{"word": w.text, "start": w.start_ms / 1000, "end": w.end_ms / 1000} for w in words],
        }
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    OpenAiStyleStt.model = Whisper()
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenAiStyleStt)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/audio/transcriptions"
    server.shutdown()
    server.server_close()


def test_a_turn_posted_to_an_openai_style_service_comes_back_as_timed_words(service: str) -> None:
    x, rate = sf.read(data_path("calls/synthetic_dialogue/outbound.wav"), dtype="float32")
    pcm = (np.clip(signal.resample_poly(x[: rate * 5], 8000, rate), -1, 1) * 32767).astype(np.int16)
    words = RemoteStt(service, model="whisper-tiny.en", api_key="sk-test").words(pcm)
    assert {"thank", "calling"} <= set(normalise(" ".join(w[0] for w in words))), words
    assert all(0 <= start <= end <= 5200 for _, start, end, _ in words)
    assert seen[-1] == {
        "auth": "Bearer sk-test",
        "rate": 8000,
        "model": "whisper-tiny.en",
        "response_format": "verbose_json",
        "timestamp_granularities[]": "word",
    }


def test_a_service_that_is_away_is_an_error_naming_it() -> None:
    with pytest.raises(RemoteSttError, match=r"127\.0\.0\.1:9/"):
        RemoteStt("http://127.0.0.1:9/v1/audio/transcriptions").words(np.zeros(800, np.int16))


def test_replies_without_word_times_spread_their_words() -> None:
    assert parse({"segments": [{"start": 1.0, "end": 2.0, "text": " hello there "}]}, 3000) == [
        ("hello", 1000, 1500, 0.0),
        ("there", 1500, 2000, 0.0),
    ]
    assert parse({"text": "a b c"}, 3000) == [("a", 0, 1000, 0.0), ("b", 1000, 2000, 0.0), ("c", 2000, 3000, 0.0)]
    assert parse({"words": [{"word": " yes", "start": 0.1, "end": 0.4, "probability": 0.8}]}, 900) == [
        ("yes", 100, 400, 0.8)
    ]


def test_a_server_configured_with_a_service_url_gets_its_words_there(
    ray_address: str, tmp_path: Path, service: str
) -> None:
    from tests.support import Server
    from tests.test_words_live import call_with_words, card_call

    before = len(seen)
    env = {"MISE_ASR": "1", "MISE_ASR_URL": service, "MISE_ASR_API_KEY": "sk-live"}
    with Server.start(ray_address, tmp_path, **env) as srv:
        _, events, turns = call_with_words(srv, card_call(tmp_path), 8.0)
    assert len(seen) - before == len(turns) >= 1 and seen[-1]["auth"] == "Bearer sk-live"  # one request a turn
    assert [t["transcript"] for t in turns] == ["done"] * len(turns)
    assert any("[card number]" in (t["text"] or "") for t in turns), turns  # redacted as the built-in words are
    assert [e.data["transcript_source"] for e in events if e.event == "turn.transcribed"] == ["asr"] * len(turns)
