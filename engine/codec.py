"""Twilio Media Streams codec: one WebSocket text message in, one typed frame (or a refusal) out.

Pure and total: ``decode`` never raises; anything it cannot accept comes back as ``Rejected`` with a
reason (a stable label for metrics) and a human-readable detail (for logs). Counters arrive as strings
in real captures and as numbers in some docs: both are accepted.
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

from engine.frames import (
    TRACKS,
    Connected,
    Dtmf,
    Frame,
    Mark,
    Media,
    Reason,
    Rejected,
    Start,
    Stop,
)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 128 * 1024  # a 64 KiB payload is ~87 KiB of base64; anything bigger is refused unparsed
MAX_TIMESTAMP_MS = 24 * 3600 * 1000
_TRACK_ALIASES = {
    "inbound": "inbound",
    "outbound": "outbound",
    "inbound_track": "inbound",
    "outbound_track": "outbound",
}


class _Bad(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def decode(message: str | bytes, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> Frame | Rejected:
    """Decode one Media Streams message. Never raises."""
    if len(message) > max_message_bytes:
        return Rejected(Reason.MESSAGE_TOO_LARGE, f"message of {len(message)} bytes > {max_message_bytes}")
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        return Rejected(Reason.MALFORMED_JSON, str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejected(Reason.NOT_AN_OBJECT, f"top level is {type(obj).__name__}")
    try:
        return _frame(obj)
    except _Bad as bad:
        return Rejected(bad.reason, bad.detail)


def _frame(obj: dict[str, Any]) -> Frame:
    event = obj.get("event")
    if event == "media":
        return _media(obj)
    if event == "start":
        return _start(obj)
    if event == "stop":
        return _stop(obj)
    if event == "connected":
        return Connected(protocol=_str(obj, "protocol", default="Call"), version=_str(obj, "version", default=""))
    if event == "dtmf":
        body = _obj(obj, "dtmf")
        return Dtmf(_seq(obj), _str(obj, "streamSid"), _track(body), _str(body, "digit"))
    if event == "mark":
        body = _obj(obj, "mark")
        return Mark(_seq(obj), _str(obj, "streamSid"), _str(body, "name"))
    if event is None:
        raise _Bad(Reason.MISSING_FIELD, "no 'event'")
    raise _Bad(Reason.UNKNOWN_EVENT, f"event {str(event)[:40]!r}")


def _media(obj: dict[str, Any]) -> Media:
    body = _obj(obj, "media")
    fast = _fast_media(obj, body)
    if fast is not None:
        return fast
    timestamp = _int(body, "timestamp", minimum=0)
    if timestamp > MAX_TIMESTAMP_MS:
        raise _Bad(Reason.BAD_FIELD, f"media.timestamp {timestamp} ms is beyond 24 h")
    raw = body.get("payload")
    if not isinstance(raw, str):
        raise _Bad(Reason.MISSING_FIELD, "media.payload missing or not a string")
    if len(raw) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise _Bad(Reason.PAYLOAD_TOO_LARGE, f"payload of {len(raw)} base64 chars > {MAX_PAYLOAD_BYTES} bytes")
    try:
        payload = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise _Bad(Reason.BAD_BASE64, f"media.payload: {exc}") from None
    if not payload:
        raise _Bad(Reason.BAD_FIELD, "media.payload is empty")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Bad(Reason.PAYLOAD_TOO_LARGE, f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    return Media(
        sequence=_seq(obj),
        stream_sid=_str(obj, "streamSid"),
        track=_track(body),
        chunk=_int(body, "chunk", minimum=1),
        timestamp_ms=timestamp,
        payload=payload,
    )


def _fast_media(obj: dict[str, Any], body: dict[str, Any]) -> Media | None:
    """A media message exactly as Twilio sends one (numbers as short digit strings, a sane payload),
    decoded with the fewest checks that prove it so; None for anything else, which ``_media`` then
    checks field by field (and refuses with the precise reason). Same result either way."""
    timestamp, chunk, seq = body.get("timestamp"), body.get("chunk"), obj.get("sequenceNumber")
    raw, sid, name = body.get("payload"), obj.get("streamSid"), body.get("track")
    track = _TRACK_ALIASES.get(name) if type(name) is str else None
    if not (
        type(timestamp) is str
        and type(chunk) is str
        and type(seq) is str
        and type(raw) is str
        and type(sid) is str
        and track is not None
        and 0 < len(timestamp) <= 12
        and 0 < len(chunk) <= 12
        and 0 < len(seq) <= 12
        and len(sid) <= 256
        and 0 < len(raw) <= 4096
        and (timestamp + chunk + seq).isascii()
        and (timestamp + chunk + seq).isdigit()
    ):
        return None
    try:
        payload = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    number, at = int(chunk), int(timestamp)
    if not payload or number < 1 or at > MAX_TIMESTAMP_MS:
        return None
    return Media(int(seq), sid, track, number, at, payload)


def _start(obj: dict[str, Any]) -> Start:
    body = _obj(obj, "start")
    fmt = body.get("mediaFormat") or {}
    if not isinstance(fmt, dict):
        raise _Bad(Reason.BAD_FIELD, "start.mediaFormat is not an object")
    encoding = str(fmt.get("encoding", "audio/x-mulaw"))
    rate = _int(fmt, "sampleRate", minimum=1) if "sampleRate" in fmt else 8000
    channels = _int(fmt, "channels", minimum=1) if "channels" in fmt else 1
    if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
        raise _Bad(Reason.UNSUPPORTED_FORMAT, f"{encoding} {rate} Hz x{channels}; only audio/x-mulaw 8000 Hz mono")
    tracks_raw = body.get("tracks", ["inbound"])
    if not isinstance(tracks_raw, list) or not tracks_raw:
        raise _Bad(Reason.BAD_FIELD, "start.tracks is not a non-empty list")
    tracks = tuple(_track({"track": t}) for t in tracks_raw)
    params = body.get("customParameters") or {}
    if not isinstance(params, dict):
        raise _Bad(Reason.BAD_FIELD, "start.customParameters is not an object")
    stream_sid = _str(body, "streamSid", default="") or _str(obj, "streamSid")
    call_sid = _str(body, "callSid")
    if not call_sid.isascii() or not call_sid.isalnum():
        raise _Bad(Reason.BAD_FIELD, "start.callSid must be a non-empty alphanumeric SID")
    return Start(
        sequence=_seq(obj),
        stream_sid=stream_sid,
        account_sid=_str(body, "accountSid"),
        call_sid=call_sid,
        tracks=tracks,
        custom_parameters={str(k): str(v)[:500] for k, v in params.items()},
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
    )


def _stop(obj: dict[str, Any]) -> Stop:
    body = obj.get("stop") or {}
    if not isinstance(body, dict):
        raise _Bad(Reason.BAD_FIELD, "stop is not an object")
    return Stop(
        sequence=_seq(obj),
        stream_sid=_str(obj, "streamSid", default=""),
        account_sid=_str(body, "accountSid", default=""),
        call_sid=_str(body, "callSid", default=""),
    )


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        raise _Bad(Reason.MISSING_FIELD, f"no {key!r} object")
    if not isinstance(value, dict):
        raise _Bad(Reason.BAD_FIELD, f"{key!r} is not an object")
    return value


_REQUIRED = object()


def _str(obj: dict[str, Any], key: str, *, default: Any = _REQUIRED) -> str:
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            raise _Bad(Reason.MISSING_FIELD, f"no {key!r}")
        return str(default)
    if not isinstance(value, str):
        raise _Bad(Reason.BAD_FIELD, f"{key!r} is not a string")
    if len(value) > 256:
        raise _Bad(Reason.BAD_FIELD, f"{key!r} is longer than 256 characters")
    return value


def _int(obj: dict[str, Any], key: str, *, minimum: int) -> int:
    value = obj.get(key)
    if value is None:
        raise _Bad(Reason.MISSING_FIELD, f"no {key!r}")
    if isinstance(value, bool):
        raise _Bad(Reason.BAD_FIELD, f"{key!r} is a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        number = int(value)
    else:
        raise _Bad(Reason.BAD_FIELD, f"{key!r} is not a non-negative integer: {str(value)[:20]!r}")
    if number < minimum:
        raise _Bad(Reason.BAD_FIELD, f"{key!r} is {number} < {minimum}")
    return number


def _seq(obj: dict[str, Any]) -> int | None:
    return _int(obj, "sequenceNumber", minimum=0) if obj.get("sequenceNumber") is not None else None


def _track(obj: dict[str, Any]) -> str:
    value = obj.get("track")
    if value is None:
        raise _Bad(Reason.MISSING_FIELD, "no 'track'")
    track = _TRACK_ALIASES.get(value) if isinstance(value, str) else None
    if track is None:
        raise _Bad(Reason.BAD_FIELD, f"track {str(value)[:20]!r} is not one of {TRACKS}")
    return track
