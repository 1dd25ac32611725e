"""engine._wire (engine/csrc/wire.c) held to the Python code it stands in for: a media message it takes
decodes to exactly what engine.codec.decode gives (field for field), one it does not take is left for the
codec whole, and its frame walk stops where api/wsprotocol.py's own parser would hand a frame on."""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import codec
from engine._wire import HAND_OVER, NEED_MORE, OTHER, scan
from engine.frames import Media

LIMIT = 1 << 20  # ws_max_size in these tests
MAX_MESSAGE = codec.MAX_MESSAGE_BYTES
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def frame(data: bytes, opcode: int = 1, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame, masked with a random key."""
    n = len(data)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + data
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def media_message(chunk: int = 1, payload: bytes = b"\xff" * 160, **extra: Any) -> dict[str, Any]:
    body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * (chunk - 1)), "payload": ""}
    body["payload"] = base64.b64encode(payload).decode()
    return {"event": "media", "sequenceNumber": str(chunk + 1), "media": body, "streamSid": "MZ1"} | extra


def scanned(text: str) -> tuple[int, Any]:
    """(how many media messages the scan took, what it decoded them to) for one framed message."""
    at, found, stopped = scan(frame(text.encode()), 0, LIMIT, MAX_MESSAGE)
    assert stopped in (NEED_MORE, OTHER)
    if found:
        assert stopped == NEED_MORE
        return len(found), found[0]
    assert stopped == OTHER and at == 0  # left whole, for the codec
    return 0, None


def check_same_as_codec(text: str) -> bool:
    """The scan's media message, if it took one, is codec.decode's. True if it took it."""
    taken, item = scanned(text)
    if taken:
        decoded = codec.decode(text)
        assert type(decoded) is Media, f"the scan took a message the codec refuses: {decoded}"
        assert item == tuple(decoded)
        assert [type(v) for v in item] == [int, str, str, int, int, bytes]
    return bool(taken)


def test_a_message_as_twilio_sends_one_is_taken_and_decoded() -> None:
    payload = os.urandom(160)
    text = json.dumps(media_message(7, payload), separators=(",", ":"))
    assert check_same_as_codec(text)
    assert scanned(text)[1] == (8, "MZ1", "inbound", 7, 120, payload)
    # Key order, whitespace and the _track forms are JSON's and the codec's business, not Twilio's layout.
    spaced = json.dumps({"streamSid": "MZ1", **media_message(7, payload)}, indent=2)
    assert check_same_as_codec(spaced)
    outbound = media_message(3, payload)
    outbound["media"]["track"] = "outbound_track"
    assert check_same_as_codec(json.dumps(outbound))
    assert scanned(json.dumps(outbound))[1][2] == "outbound"


def test_anything_else_is_left_for_the_codec() -> None:
    def variant(change: Any) -> str:
        message = media_message(5)
        change(message)
        return json.dumps(message)

    left = [
        variant(lambda m: m.update(event="mark")),
        variant(lambda m: m.update(extra="x")),  # a member it does not know
        variant(lambda m: m.update(sequenceNumber=6)),  # a number, not a string
        variant(lambda m: m["media"].update(chunk="0")),  # the codec refuses it
        variant(lambda m: m["media"].update(chunk="1" * 13)),
        variant(lambda m: m["media"].update(timestamp=str(codec.MAX_TIMESTAMP_MS + 1))),
        variant(lambda m: m["media"].update(track="both")),
        variant(lambda m: m["media"].update(payload="")),
        variant(lambda m: m["media"].update(payload="AAA")),  # not a multiple of 4
        variant(lambda m: m["media"].update(payload="A===")),
        variant(lambda m: m["media"].update(payload="AA=A")),
        variant(lambda m: m["media"].update(payload="AA==AAAA")),  # data after padding
        variant(lambda m: m["media"].update(payload="A" * 4100)),
        variant(lambda m: m["media"].pop("timestamp")),
        variant(lambda m: m.update(streamSid="M" * 257)),
        variant(lambda m: m.update(streamSid='M"Z')),  # an escape
        variant(lambda m: m.update(streamSid="MZé")),  # not ASCII
        json.dumps(media_message(5)) + "x",
        json.dumps(media_message(5))[:-1],
        json.dumps(media_message(5)).replace('"chunk"', '"chunk", "chunk": "9"', 1).replace(':", "9"', ':"9"'),
        '{"event": "media", "event": "media"}',
        "[]",
        "",
    ]
    for text in left:
        assert not check_same_as_codec(text), text


def test_a_message_over_the_codecs_limit_is_left_for_it_to_refuse() -> None:
    text = json.dumps(media_message(2)).encode()
    assert scan(frame(text), 0, LIMIT, len(text))[1]
    at, found, stopped = scan(frame(text), 0, LIMIT, len(text) - 1)
    assert (at, found, stopped) == (0, [], OTHER)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else ``bad``: many drawn messages are media, the others near misses."""
    return st.integers(0, 9).flatmap(lambda k: good if k else bad)


_digits = mostly(
    st.one_of(st.integers(0, 10**8).map(str), st.from_regex(r"\A[0-9]{1,12}\Z")),
    st.one_of(st.from_regex(r"\A[0-9]{13}\Z"), st.text(max_size=4), st.integers()),
)
_payloads = mostly(
    st.binary(min_size=1, max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.one_of(st.text(alphabet=B64 + "= \n", max_size=24), st.integers(), st.just("")),
)


@st.composite
def near_media(draw: st.DrawFn) -> str:
    """Media messages and near misses: every field drawn from good and bad values, members dropped, added,
    reordered, and the JSON laid out in several ways."""
    body = {
        "track": draw(
            mostly(
                st.sampled_from(["inbound", "outbound", "inbound_track", "outbound_track"]),
                st.sampled_from(["both", "", "Inbound"]),
            )
        ),
        "chunk": draw(_digits),
        "timestamp": draw(_digits),
        "payload": draw(_payloads),
    }
    top: dict[str, Any] = {
        "event": draw(mostly(st.just("media"), st.sampled_from(["Media", "stop"]))),
        "sequenceNumber": draw(_digits),
        "media": body,
        "streamSid": draw(mostly(st.from_regex(r"\A[A-Za-z0-9]{0,40}\Z"), st.text(max_size=300))),
    }
    for target in (top, body):
        for key in list(target):
            if draw(st.integers(0, 40)) == 0:
                del target[key]
        if draw(st.integers(0, 40)) == 0:
            target[draw(st.sampled_from(["extra", "chunk", "x\\y"]))] = draw(st.sampled_from(["1", 1, None]))
    order = draw(st.permutations(list(top)))
    shaped = {key: top[key] for key in order}
    layout = draw(st.sampled_from([{"separators": (",", ":")}, {}, {"indent": 1}, {"ensure_ascii": False}]))
    return json.dumps(shaped, **layout)


@settings(max_examples=1500, deadline=None)
@given(near_media())
def test_whatever_the_scan_takes_decodes_as_the_codec_decodes_it(text: str) -> None:
    check_same_as_codec(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_payloads_decode_as_strict_binascii(payload: bytes) -> None:
    encoded = base64.b64encode(payload).decode()
    message = media_message(1)
    message["media"]["payload"] = encoded
    taken, item = scanned(json.dumps(message))
    assert bool(taken) == bool(payload)  # every non-empty payload in canonical base64 is taken
    if taken:
        assert item[5] == binascii.a2b_base64(encoded, strict_mode=True) == payload


# --- the frame walk -------------------------------------------------------------------------------------------
KINDS = ("media", "text", "binary", "ping", "pong", "close", "fragment", "unmasked", "rsv", "too_big", "huge")


def build(kind: str, n: int) -> tuple[bytes, Any]:
    """A frame of ``kind`` and what a scan reaching it does: a media tuple, OTHER or HAND_OVER."""
    if kind == "media":
        payload = random.Random(n).randbytes(160)
        data = json.dumps(media_message(n + 1, payload)).encode()
        return frame(data), (n + 2, "MZ1", "inbound", n + 1, 20 * n, payload)
    if kind == "text":
        return frame(b'{"event": "stop"}'), OTHER
    if kind == "binary":
        return frame(b"\x00\x01", 2), OTHER
    if kind == "ping":
        return frame(b"hi", 9), OTHER
    if kind == "pong":
        return frame(b"", 10), OTHER
    if kind == "close":
        return frame((1000).to_bytes(2, "big"), 8), HAND_OVER
    if kind == "fragment":
        return frame(b"part", fin=False), HAND_OVER
    if kind == "unmasked":
        return frame(b"{}", masked=False), HAND_OVER
    if kind == "rsv":
        return frame(b"{}", rsv=4), HAND_OVER
    if kind == "too_big":  # over ws_max_size, as a 16-bit length
        return frame(b"x" * 2000), HAND_OVER
    return frame(b"x" * 70000), HAND_OVER  # a 64-bit length


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(KINDS), max_size=8), st.integers(0, 200), st.integers(0, 3))
def test_the_walk_stops_where_the_python_parser_takes_over(kinds: list[str], cut: int, start: int) -> None:
    frames = [build(kind, n) for n, kind in enumerate(kinds)]
    lead = os.urandom(start)  # bytes before the offset the scan starts from are never read
    buf = bytearray(lead + b"".join(f for f, _ in frames))
    if cut and frames:
        del buf[-min(cut, len(buf) - start) :]  # a read that ends inside a frame
    at, found, stopped = scan(buf, start, 1000, MAX_MESSAGE)
    expected_at, expected, expected_stop = start, [], NEED_MORE
    for data, outcome in frames:
        available = len(buf) - expected_at
        header = 8 if data[1] & 0x7F == 126 else 6  # with the mask; a 64-bit length is refused at 6
        if available < header:
            break  # not even the header: wait
        if outcome == HAND_OVER:  # refused from its header, whole or not
            expected_stop = outcome
            break
        if available < len(data):
            break
        if outcome == OTHER:
            expected_stop = outcome
            break
        expected.append(outcome)
        expected_at += len(data)
    assert stopped == expected_stop
    assert (at, found) == (expected_at, expected)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 20))
def test_any_bytes_are_walked_without_reading_past_them(data: bytes, start: int) -> None:
    start = min(start, len(data))
    at, found, stopped = scan(data, start, 1000, MAX_MESSAGE)
    assert start <= at <= len(data)
    assert stopped in (NEED_MORE, OTHER, HAND_OVER)
    assert all(type(item) is tuple and len(item) == 6 for item in found)


def test_an_offset_outside_the_buffer_is_refused() -> None:
    for at in (-1, 5):
        try:
            scan(b"abcd", at, LIMIT, MAX_MESSAGE)
        except ValueError as exc:
            assert "offset" in str(exc)
        else:
            raise AssertionError(f"offset {at} was taken")
