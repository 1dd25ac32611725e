"""Speech to words by an external service, over HTTP: the OpenAI transcription API, which many speak
(OpenAI, Groq, speaches/faster-whisper-server, whisper.cpp's server, LocalAI, vLLM).

``POST {url}`` (e.g. ``http://stt:8000/v1/audio/transcriptions``), multipart: ``file`` (the turn as a WAV,
16-bit 8 kHz mono), ``model``, ``response_format=verbose_json``, ``timestamp_granularities[]=word``;
``Authorization: Bearer <key>`` given a key (``MISE_ASR_API_KEY``). Words come from the reply's ``words`` (``word``,
``start``, ``end``, and ``probability`` if given); a reply with only ``segments``, or only ``text``, has its
words spread evenly over each segment (or the turn), confidence unknown (0).
"""

from __future__ import annotations

import io
import json
import secrets
import urllib.request
import wave
from typing import Any

import numpy as np
import numpy.typing as npt

TIMEOUT_S = 30.0
WordTuple = tuple[str, int, int, float]  # text, start ms, end ms, confidence


class RemoteSttError(RuntimeError):
    pass


def wav_bytes(pcm: npt.NDArray[np.int16], rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return out.getvalue()


def multipart(fields: list[tuple[str, str]], file: tuple[str, bytes, str]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "mise-" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    name, data, content_type = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def parse(reply: dict[str, Any], duration_ms: int) -> list[WordTuple]:
    """Words from an OpenAI-style ``verbose_json`` reply (times in seconds)."""
    if isinstance(reply.get("words"), list):
        out = []
        for w in reply["words"]:
            text = str(w.get("word", "")).strip()
            if text:
                start, end = round(float(w["start"]) * 1000), round(float(w["end"]) * 1000)
                out.append((text, start, max(start, end), float(w.get("probability", 0.0))))
        return out
    spans = [
        (str(s.get("text", "")), round(float(s["start"]) * 1000), round(float(s["end"]) * 1000))
        for s in reply.get("segments") or []
    ] or [(str(reply.get("text", "")), 0, duration_ms)]
    out = []
    for text, start, end in spans:
        words = text.split()
        step = (end - start) / max(1, len(words))
        out += [(w, round(start + i * step), round(start + (i + 1) * step), 0.0) for i, w in enumerate(words)]
    return out


class RemoteStt:
    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None) -> None:
        self._url = url
        self._model = model or "whisper-1"
        self._key = api_key

    def words(self, pcm: npt.NDArray[np.int16]) -> list[WordTuple]:
        body, content_type = multipart(
            [
                ("model", self._model),
                ("response_format", "verbose_json"),
                ("timestamp_granularities[]", "word"),
                ("language", "en"),
            ],
            ("turn.wav", wav_bytes(pcm), "audio/wav"),
        )
        headers = {"Content-Type": content_type}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                reply = json.loads(response.read())
        except Exception as exc:  # the service is away or answered badly: this batch's turns are skipped
            raise RemoteSttError(f"speech-to-text service at {self._url}: {exc}") from exc
        return parse(reply, len(pcm) // 8)
