"""Play calls to a Mise server exactly as Twilio Media Streams would.

Sources: a ``.jsonl`` capture (one Twilio message per line) or one/two WAV tracks (any format
soundfile reads; mu-law 8 kHz WAVs are sent byte for byte). Messages are paced by their
``media.timestamp`` (real time by default, ``speed`` x faster), and can be sent as many concurrent
copies with fresh SIDs. Twilio may skip silent frames; ``skip_silence`` does the same.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import websockets

from engine.g711 import SAMPLE_RATE, encode_ulaw

FRAME_BYTES = 160  # 20 ms at 8 kHz
SILENT_PAYLOAD = base64.b64encode(b"\xff" * FRAME_BYTES).decode()

Message = dict[str, Any]


def load_jsonl(path: str | Path) -> list[Message]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def read_ulaw_track(path: str | Path) -> bytes:
    """A track as 8 kHz mono mu-law bytes: mu-law WAVs verbatim, anything else decoded, mixed down,
    resampled and encoded."""
    channels = ulaw_wav_channels(Path(path).read_bytes())
    if channels is not None and len(channels) == 1:
        return channels[0]
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return to_ulaw(audio.mean(axis=1), int(rate))


def to_ulaw(audio: np.ndarray, rate: int) -> bytes:
    """Float samples (-1..1, one channel) at ``rate`` as the phone network delivers them: 8 kHz mu-law."""
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = int(np.gcd(rate, SAMPLE_RATE))
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g)
    return encode_ulaw((np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767).astype(np.int16))


def ulaw_wav_channels(data: bytes) -> list[bytes] | None:
    """The channels of a WAV that is 8 kHz mu-law (format tag 7), one or two, byte for byte; else None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, channels = 12, 0
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            if tag != 7 or rate != SAMPLE_RATE or channels not in (1, 2):
                return None
        elif kind == b"data":
            return [body[k::channels] for k in range(channels)] if channels else None
        pos += 8 + size + (size & 1)
    return None


def ulaw_wav(channels: list[bytes]) -> bytes:
    """An 8 kHz mu-law WAV of one or more equally long channels (what ``ulaw_wav_channels`` reads back)."""
    n = len(channels)
    data = bytearray(n * len(channels[0]))
    for k, channel in enumerate(channels):
        data[k::n] = channel
    fmt = struct.pack("<HHIIHH", 7, n, SAMPLE_RATE, SAMPLE_RATE * n, n, 8)
    return (
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVEfmt " + struct.pack("<I", len(fmt))
        + fmt + b"data" + struct.pack("<I", len(data)) + bytes(data)
    )  # fmt: skip


def messages_from_tracks(
    inbound: bytes,
    outbound: bytes | None,
    *,
    call_sid: str | None = None,
    custom_parameters: dict[str, str] | None = None,
) -> list[Message]:
    """The message sequence of a ``<Start><Stream track="both_tracks">`` for these mu-law tracks."""
    sids = new_sids()
    call_sid = call_sid or sids["callSid"]
    tracks = {"inbound": inbound} | ({"outbound": outbound} if outbound is not None else {})
    out: list[Message] = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": sids["accountSid"],
                "streamSid": sids["streamSid"],
                "callSid": call_sid,
                "tracks": list(tracks),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
                "customParameters": dict(custom_parameters or {}),
            },
            "streamSid": sids["streamSid"],
        },
    ]
    frames = max(len(t) for t in tracks.values()) // FRAME_BYTES
    seq = 2
    for k in range(frames):
        for track, audio in tracks.items():
            payload = audio[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
            if len(payload) < FRAME_BYTES:
                continue
            media = {
                "track": track,
                "chunk": str(k + 1),
                "timestamp": str(k * 20),
                "payload": base64.b64encode(payload).decode(),
            }
            out.append({"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": sids["streamSid"]})
            seq += 1
    stop = {"accountSid": sids["accountSid"], "callSid": call_sid}
    out.append({"event": "stop", "sequenceNumber": str(seq), "streamSid": sids["streamSid"], "stop": stop})
    return out


def new_sids() -> dict[str, str]:
    return {
        "callSid": "CA" + secrets.token_hex(16),
        "streamSid": "MZ" + secrets.token_hex(16),
        "accountSid": "AC" + secrets.token_hex(16),
    }


def with_fresh_sids(messages: list[Message], *, api_key: str | None = None) -> list[Message]:
    """A copy of a capture as another call: new call/stream SIDs, and the API key as a custom parameter
    (as Twilio's ``<Parameter name="api_key">`` delivers it)."""
    sids = new_sids()
    out: list[Message] = []
    for msg in messages:
        msg = dict(msg)
        if "streamSid" in msg:
            msg["streamSid"] = sids["streamSid"]
        if msg.get("event") == "start":
            start = dict(msg["start"], callSid=sids["callSid"], streamSid=sids["streamSid"])
            params = dict(start.get("customParameters") or {})
            if api_key:
                params["api_key"] = api_key
            start["customParameters"] = params
            msg["start"] = start
        elif msg.get("event") == "stop":
            msg["stop"] = dict(msg.get("stop") or {}, callSid=sids["callSid"])
        out.append(msg)
    return out


def call_sid_of(messages: list[Message]) -> str:
    return next(str(m["start"]["callSid"]) for m in messages if m.get("event") == "start")


def is_silent(msg: Message) -> bool:
    """Digital silence, which Twilio may leave out of a stream."""
    return msg.get("event") == "media" and msg["media"]["payload"] == SILENT_PAYLOAD


@dataclass
class PlayResult:
    call_sid: str
    sent: int
    media_sent: int
    skipped: int
    seconds: float
    close_code: int | None


async def play(
    url: str,
    messages: list[Message],
    *,
    speed: float = 1.0,
    skip_silence: bool = False,
    close_without_stop: bool = False,
    headers: dict[str, str] | None = None,
) -> PlayResult:
    """Send ``messages`` over one WebSocket, media paced by ``timestamp`` / ``speed`` (0: no pacing)."""
    sent = media_sent = skipped = 0
    t0 = time.perf_counter()
    async with websockets.connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
        for msg in messages:
            event = msg.get("event")
            if event == "stop" and close_without_stop:
                break
            if event == "media":
                if skip_silence and is_silent(msg):
                    skipped += 1
                    continue
                if speed > 0:
                    due = t0 + int(msg["media"]["timestamp"]) / 1000 / speed
                    delay = due - time.perf_counter()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                media_sent += 1
            await ws.send(orjson.dumps(msg).decode())
            sent += 1
        if not close_without_stop:
            # Twilio closes after stop; wait for the server's close so the call is finalized first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), timeout=30)
        close_code = ws.close_code
    return PlayResult(call_sid_of(messages), sent, media_sent, skipped, time.perf_counter() - t0, close_code)
