"""Typed frames decoded from Twilio Media Streams messages, and the reasons a message is refused.

One type, one meaning: every message the codec accepts becomes exactly one of these frozen values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

TRACKS = ("inbound", "outbound")
SPEAKER_OF_TRACK = {"inbound": "caller", "outbound": "agent"}


class Reason(StrEnum):
    """Why a message or frame was refused. Values are stable: they label the /metrics counters."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_EVENT = "unknown_event"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    BAD_BASE64 = "bad_base64"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    # Stream-level: the message is well formed but does not fit the stream's state.
    MEDIA_BEFORE_START = "media_before_start"
    DUPLICATE_START = "duplicate_start"
    DUPLICATE_CHUNK = "duplicate_chunk"
    STREAM_MISMATCH = "stream_mismatch"
    AFTER_STOP = "after_stop"


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence: int | None
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(hash=False)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class Media(NamedTuple):
    """A tuple, not a frozen dataclass like the others: one is made per 20 ms of each track of every call,
    and a NamedTuple is built several times faster (frozen dataclasses set each field through a call)."""

    sequence: int | None
    stream_sid: str
    track: str  # "inbound" | "outbound"
    chunk: int  # per track, from 1
    timestamp_ms: int  # since the stream started
    payload: bytes  # raw G.711 mu-law, one byte per sample


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence: int | None
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence: int | None
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence: int | None
    stream_sid: str
    account_sid: str
    call_sid: str


Frame = Connected | Start | Media | Dtmf | Mark | Stop


def redact_parameters(params: dict[str, Any]) -> dict[str, str]:
    """Custom parameters as stored and shown: the API key never leaves the ingest edge."""
    return {str(k): str(v) for k, v in params.items() if k != "api_key"}
