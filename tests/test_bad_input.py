"""Bad input over the real WebSocket: each case has a defined, counted outcome, and a witness call
streaming at the same time on the same server comes out untouched."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from api.simulate import load_jsonl, play, with_fresh_sids
from tests.support import API_KEY, Server, metric_delta

pytestmark = pytest.mark.integration

WITNESS_FRAMES = 600  # 6 s of both tracks


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server.start(ray_address, tmp_path_factory.mktemp("bad"), MISE_START_TIMEOUT_S="1") as srv:
        yield srv


@pytest.fixture(scope="module")
def source(synthetic_capture: Path) -> list[dict[str, Any]]:
    return load_jsonl(synthetic_capture)


def call(source: list[dict[str, Any]], frames: int, *, key: str | None = API_KEY) -> list[dict[str, Any]]:
    """connected, start, ``frames`` media messages, stop: a short call with fresh SIDs."""
    msgs = with_fresh_sids(source, api_key=key)
    return [*msgs[: 2 + frames], msgs[-1]]


def enc(msg: object) -> str:
    return orjson.dumps(msg).decode()


def witnessed(server: Server, source: list[dict[str, Any]], scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``scenario`` while a good call streams; assert the good call is exact; return the scenario's result."""
    witness = call(source, WITNESS_FRAMES)

    async def both() -> Any:
        outcome, played = await asyncio.gather(scenario(), play(server.ws, witness, speed=10))
        return outcome, played

    outcome, played = asyncio.run(both())
    record = server.wait_call(played.call_sid)
    assert record["end_reason"] == "stop"
    for track in ("inbound", "outbound"):
        assert record["tracks"][track]["frames"] == WITNESS_FRAMES // 2
        assert record["tracks"][track]["missing_ms"] == 0
    return outcome


async def send_all(
    server: Server, messages: list[Any], *, close_first: bool = False, url: str | None = None
) -> int | None:
    async with websockets.connect(url or server.ws, max_size=None) as ws:
        for msg in messages:
            await ws.send(msg if isinstance(msg, str | bytes) else enc(msg))
        if close_first:
            await ws.close()
        await asyncio.wait_for(ws.wait_closed(), 30)
        return ws.close_code


def rejected(reason: str) -> str:
    return f'mise_frames_rejected_total{{reason="{reason}"}}'


def refused(reason: str) -> str:
    return f'mise_connections_rejected_total{{reason="{reason}"}}'


def run_case(
    server: Server, source: list[dict[str, Any]], messages: list[Any], **kw: Any
) -> tuple[dict[str, float], int | None]:
    before = server.metrics()
    code = witnessed(server, source, lambda: send_all(server, messages, **kw))
    after = server.metrics()
    return {k: metric_delta(before, after, k) for k in after}, code


def test_malformed_json_is_refused_and_the_call_goes_on(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 20)
    delta, code = run_case(server, source, [*msgs[:12], "{not json", *msgs[12:]])
    assert delta[rejected("malformed_json")] == 1 and code == 1000
    record = server.wait_call(msgs[1]["start"]["callSid"])
    assert record["tracks"]["inbound"]["frames"] + record["tracks"]["outbound"]["frames"] == 20


def test_unknown_event(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 10)
    delta, _ = run_case(server, source, [*msgs[:5], {"event": "hangup", "streamSid": "x"}, *msgs[5:]])
    assert delta[rejected("unknown_event")] == 1
    assert server.wait_call(msgs[1]["start"]["callSid"])["end_reason"] == "stop"


def test_bad_base64_loses_only_that_frame(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 20)
    broken = dict(msgs[6], media=dict(msgs[6]["media"], payload="@@not-base64@@"))  # inbound frame 3
    delta, _ = run_case(server, source, [*msgs[:6], broken, *msgs[7:]])
    assert delta[rejected("bad_base64")] == 1
    inbound = server.wait_call(msgs[1]["start"]["callSid"])["tracks"]["inbound"]
    assert (inbound["frames"], inbound["missing_ms"], inbound["duration_ms"]) == (9, 20, 200)


def test_payload_over_64_kib(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 10)
    huge = dict(msgs[4], media=dict(msgs[4]["media"], chunk="999", payload=base64.b64encode(bytes(70_000)).decode()))
    bigger = "x" * 300_000  # over the message limit: refused before parsing
    delta, code = run_case(server, source, [*msgs[:5], huge, bigger, *msgs[5:]])
    assert delta[rejected("payload_too_large")] == 1 and delta[rejected("message_too_large")] == 1
    assert code == 1000
    record = server.wait_call(msgs[1]["start"]["callSid"])
    assert record["tracks"]["inbound"]["frames"] + record["tracks"]["outbound"]["frames"] == 10


def test_a_frame_over_the_socket_limit_closes_only_that_socket_and_keeps_its_audio(
    server: Server, source: list[dict[str, Any]]
) -> None:
    msgs = call(source, 10)
    delta, code = run_case(server, source, [*msgs[:-1], "x" * (2 << 20)])
    assert code == 1009  # message too big for the WebSocket layer (1 MiB)
    record = server.wait_call(msgs[1]["start"]["callSid"])
    assert record["end_reason"] == "disconnect"
    assert record["tracks"]["inbound"]["frames"] + record["tracks"]["outbound"]["frames"] == 10
    assert delta['mise_streams_total{end_reason="disconnect"}'] == 1


def test_media_before_start(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 10)
    delta, _ = run_case(server, source, [msgs[0], msgs[2], msgs[3], *msgs[1:]])
    assert delta[rejected("media_before_start")] == 2
    assert delta.get(rejected("duplicate_chunk"), 0) == 0  # refused early frames do not count as seen
    record = server.wait_call(msgs[1]["start"]["callSid"])
    assert record["tracks"]["inbound"]["frames"] == 5


def test_missing_key_is_refused_before_any_work(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 5, key=None)
    delta, code = run_case(server, source, msgs)
    assert code == 1008 and delta[refused("missing_key")] == 1
    assert server.get(f"/v1/calls/{msgs[1]['start']['callSid']}").status_code == 404


def test_wrong_key_in_custom_parameters(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 5, key="wrong-key-0000")
    delta, code = run_case(server, source, msgs)
    assert code == 1008 and delta[refused("bad_key")] == 1
    assert server.get(f"/v1/calls/{msgs[1]['start']['callSid']}").status_code == 404


def test_wrong_key_in_the_query_fails_the_handshake(server: Server, source: list[dict[str, Any]]) -> None:
    before = server.metrics()

    async def connect() -> int:
        with pytest.raises(InvalidStatus) as info:
            await send_all(server, call(source, 5), url=server.ws + "?api_key=wrong-key-0000")
        return int(info.value.response.status_code)

    assert witnessed(server, source, connect) == 403
    assert metric_delta(before, server.metrics(), refused("bad_key")) == 1


def test_no_start_in_time(server: Server, source: list[dict[str, Any]]) -> None:
    async def idle() -> int | None:
        async with websockets.connect(server.ws) as ws:
            await ws.send(enc(source[0]))  # connected, then nothing
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code

    before = server.metrics()
    assert witnessed(server, source, idle) == 1008
    assert metric_delta(before, server.metrics(), refused("no_start")) == 1


def test_duplicate_chunk_changes_nothing(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 10)
    twin = dict(msgs[5], media=dict(msgs[5]["media"], payload=base64.b64encode(b"\x00" * 160).decode()))
    delta, _ = run_case(server, source, [*msgs[:6], msgs[5], twin, *msgs[6:]])
    assert delta[rejected("duplicate_chunk")] == 2
    inbound = server.wait_call(msgs[1]["start"]["callSid"])["tracks"]["inbound"]
    assert (inbound["frames"], inbound["missing_ms"]) == (5, 0)


def test_stop_without_media(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 0)
    delta, code = run_case(server, source, msgs)
    record = server.wait_call(msgs[1]["start"]["callSid"])
    assert code == 1000 and record["end_reason"] == "stop" and record["duration_ms"] == 0
    assert delta['mise_streams_total{end_reason="stop"}'] == 2  # this one and the witness


def test_socket_closed_without_stop_still_finalizes(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 10)
    delta, _ = run_case(server, source, msgs[:-1], close_first=True)
    record = server.wait_call(msgs[1]["start"]["callSid"])
    assert record["end_reason"] == "disconnect" and not record["live"]
    assert record["tracks"]["inbound"]["frames"] == 5 and record["tracks"]["outbound"]["frames"] == 5
    assert delta['mise_streams_total{end_reason="disconnect"}'] == 1


def test_a_second_stream_for_a_live_call_is_refused(server: Server, source: list[dict[str, Any]]) -> None:
    msgs = call(source, 10)

    async def twice() -> int | None:
        async with websockets.connect(server.ws) as first:
            for m in msgs[:5]:
                await first.send(enc(m))
            server_ready = await asyncio.to_thread(server.wait_call, msgs[1]["start"]["callSid"], live=True)
            assert server_ready["live"]
            code = await send_all(server, msgs)
            for m in msgs[5:]:
                await first.send(enc(m))
            await first.wait_closed()
            return code

    before = server.metrics()
    assert witnessed(server, source, twice) == 1008
    assert metric_delta(before, server.metrics(), refused("call_already_live")) == 1
    assert server.wait_call(msgs[1]["start"]["callSid"])["tracks"]["inbound"]["frames"] == 5
