"""Twilio codec: every message type of TWILIO.md becomes a typed frame; bad ones a reason."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import MAX_PAYLOAD_BYTES, decode
from engine.frames import Connected, Dtmf, Frame, Mark, Media, Reason, Rejected, Start, Stop
from tests.support import data_path

PAYLOAD = base64.b64encode(bytes(range(160))).decode()


def media(**over: object) -> dict[str, object]:
    body = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": PAYLOAD} | over
    return {"event": "media", "sequenceNumber": "2", "media": body, "streamSid": "MZ1"}


def enc(obj: object) -> str:
    return json.dumps(obj)  # stdlib: also writes integers beyond 64 bits, which orjson refuses


def test_connected() -> None:
    assert decode(enc({"event": "connected", "protocol": "Call", "version": "1.0.0"})) == Connected("Call", "1.0.0")


def test_start_as_in_the_synthetic_capture(synthetic_capture: Path) -> None:
    line = synthetic_capture.read_text().splitlines()[1]
    frame = decode(line)
    assert isinstance(frame, Start)
    assert frame.call_sid.startswith("CA") and frame.stream_sid.startswith("MZ") and frame.account_sid.startswith("AC")
    assert frame.tracks == ("inbound", "outbound") and frame.sequence == 1 and frame.custom_parameters == {}


def test_every_message_of_the_synthetic_capture_decodes(synthetic_capture: Path) -> None:
    frames = [decode(line) for line in synthetic_capture.read_text().splitlines()]
    assert not [f for f in frames if isinstance(f, Rejected)]
    assert isinstance(frames[0], Connected) and isinstance(frames[-1], Stop)
    media_frames = [f for f in frames if isinstance(f, Media)]
    assert {len(f.payload) for f in media_frames} == {160}
    assert {f.track for f in media_frames} == {"inbound", "outbound"}


def test_the_real_2020_capture_start_and_media() -> None:
    """The real capture is a Node console dump: rebuild its start and first media message as JSON."""
    text = data_path("twilio/real_capture_connect_basic.txt").read_text()
    payload = re.search(r"payload: '([^']+)'", text)
    assert payload is not None
    frame = decode(enc(media(chunk="1", timestamp="52", payload=payload.group(1))))
    assert isinstance(frame, Media) and frame.timestamp_ms == 52 and len(frame.payload) == 160
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC18fbd524d33614fba208030751dffdca",
            "streamSid": "9e7ee906-377b-408f-a852-eebfb834422a",
            "callSid": "CA3c95a2a6bba5fde93a5dea01e388e8fb",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"aCutomParameter": "aCustomValue that was set in TwiML"},
        },
        "streamSid": "9e7ee906-377b-408f-a852-eebfb834422a",
    }
    frame = decode(enc(start))
    assert isinstance(frame, Start) and frame.tracks == ("inbound",)
    assert frame.custom_parameters == {"aCutomParameter": "aCustomValue that was set in TwiML"}


def test_media_with_numbers_instead_of_strings() -> None:
    frame = decode(enc(media(chunk=7, timestamp=120)))
    assert isinstance(frame, Media) and (frame.chunk, frame.timestamp_ms) == (7, 120)


def test_dtmf_mark_stop() -> None:
    dtmf = decode(
        enc(
            {
                "event": "dtmf",
                "streamSid": "MZ1",
                "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": "1"},
            }
        )
    )
    assert dtmf == Dtmf(5, "MZ1", "inbound", "1")
    mark = decode(enc({"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": {"name": "m0"}}))
    assert mark == Mark(4, "MZ1", "m0")
    stop = decode(
        enc(
            {
                "event": "stop",
                "sequenceNumber": "9",
                "streamSid": "MZ1",
                "stop": {"accountSid": "AC1", "callSid": "CA1"},
            }
        )
    )
    assert stop == Stop(9, "MZ1", "AC1", "CA1")


def reason(message: str | bytes) -> Reason:
    frame = decode(message)
    assert isinstance(frame, Rejected), frame
    assert frame.detail
    return frame.reason


def test_refusals_have_reasons() -> None:
    assert reason("{not json") is Reason.MALFORMED_JSON
    assert reason(b"\xff\xfe") is Reason.MALFORMED_JSON
    assert reason("[1, 2]") is Reason.NOT_AN_OBJECT
    assert reason(enc({"event": "hangup"})) is Reason.UNKNOWN_EVENT
    assert reason(enc({"protocol": "Call"})) is Reason.MISSING_FIELD
    assert reason(enc(media(payload="%%%notbase64"))) is Reason.BAD_BASE64
    assert reason(enc(media(payload="AAA"))) is Reason.BAD_BASE64  # bad padding
    assert reason(enc(media(payload=""))) is Reason.BAD_FIELD
    assert reason(enc(media(track="both"))) is Reason.BAD_FIELD
    assert reason(enc(media(chunk="0"))) is Reason.BAD_FIELD
    assert reason(enc(media(timestamp="-20"))) is Reason.BAD_FIELD
    assert reason(enc(media(timestamp="²"))) is Reason.BAD_FIELD  # a unicode digit is not a number
    assert reason(enc(media(timestamp=True))) is Reason.BAD_FIELD
    assert reason(enc({"event": "media", "streamSid": "MZ1"})) is Reason.MISSING_FIELD
    big = base64.b64encode(bytes(MAX_PAYLOAD_BYTES + 1)).decode()
    assert reason(enc(media(payload=big))) is Reason.PAYLOAD_TOO_LARGE
    assert reason("x" * 200_000) is Reason.MESSAGE_TOO_LARGE
    pcm = {
        "event": "start",
        "start": {
            "callSid": "CA1",
            "accountSid": "AC1",
            "streamSid": "MZ1",
            "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1},
        },
    }
    assert reason(enc(pcm)) is Reason.UNSUPPORTED_FORMAT


def test_payload_at_the_limit_is_accepted() -> None:
    exact = base64.b64encode(bytes(MAX_PAYLOAD_BYTES)).decode()
    frame = decode(enc(media(payload=exact)))
    assert isinstance(frame, Media) and len(frame.payload) == MAX_PAYLOAD_BYTES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "stop", "dtmf", "mark", "x"])},
    optional={
        "sequenceNumber": st.one_of(st.text(max_size=5), st.integers()),
        "streamSid": st.text(max_size=8),
        "media": st.dictionaries(
            st.sampled_from(["track", "chunk", "timestamp", "payload"]),
            json_values | st.text(alphabet="AQgw=/+", max_size=12),
        ),
        "start": st.dictionaries(
            st.sampled_from(["callSid", "accountSid", "streamSid", "tracks", "mediaFormat", "customParameters"]),
            json_values,
        ),
        "stop": json_values,
        "dtmf": json_values,
        "mark": json_values,
    },
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), json_values.map(enc), message_like.map(enc)))
def test_fuzz_decode_never_raises(message: str | bytes) -> None:
    frame: Frame | Rejected = decode(message)
    assert isinstance(frame, Connected | Start | Media | Dtmf | Mark | Stop | Rejected)
    if isinstance(frame, Rejected):
        assert isinstance(frame.reason, Reason) and frame.detail


# A media message as Twilio sends one takes a fast path (engine.codec._fast_media); everything else the
# field-by-field checks. Both must give the same frame: here the fast path is compared with the checks alone.
digits = st.one_of(
    st.integers(0, 10**13).map(str), st.text(alphabet="0123456789٣²x -", max_size=14), st.integers(-5, 99)
)
media_like = st.fixed_dictionaries(
    {
        "event": st.just("media"),
        "sequenceNumber": st.one_of(digits, st.none()),
        "streamSid": st.one_of(st.just("MZ1"), st.text(max_size=300), st.integers()),
        "media": st.fixed_dictionaries(
            {
                "track": st.one_of(
                    st.sampled_from(["inbound", "outbound", "inbound_track", "both"]), st.lists(st.none())
                ),
                "chunk": digits,
                "timestamp": st.one_of(digits, st.just("86400001"), st.just("86400000")),
                "payload": st.one_of(st.just(PAYLOAD), st.text(alphabet="AQgw=/+", max_size=12), st.none()),
            }
        ),
    }
)


@settings(max_examples=1500, deadline=None)
@given(media_like)
def test_the_fast_media_path_decodes_exactly_as_the_field_checks(obj: dict[str, object]) -> None:
    from unittest import mock

    from engine import codec

    fast = decode(enc(obj))
    with mock.patch.object(codec, "_fast_media", lambda obj, body: None):  # the checks alone, no mock of anything else
        checked = decode(enc(obj))
    assert fast == checked
