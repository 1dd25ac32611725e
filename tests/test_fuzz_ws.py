"""Hypothesis fuzz of the real WebSocket endpoint: any sequence of messages, valid, broken or
hostile, ending with stop or a dropped socket. The server never crashes and no call stays live."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.simulate import messages_from_tracks
from tests.support import API_KEY, Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server.start(ray_address, tmp_path_factory.mktemp("fuzz"), MISE_START_TIMEOUT_S="0.5") as srv:
        yield srv


BASE = messages_from_tracks(
    bytes(range(256)) * 5, bytes(range(255, -1, -1)) * 5, custom_parameters={"api_key": API_KEY}
)
GOOD = [json.dumps(m) for m in BASE]  # connected, start, 16 media, stop

garbage = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    st.sampled_from(
        ['{"event":"media"}', '{"event":"start","start":{}}', '{"event":"stop"}', "[]", "null", "{", '{"event":1}']
    ),
    st.builds(
        lambda ts, chunk, track, payload: json.dumps(
            {
                "event": "media",
                "streamSid": BASE[1]["streamSid"],
                "media": {"track": track, "chunk": chunk, "timestamp": ts, "payload": payload},
            }
        ),
        st.one_of(st.integers(-5, 10**9), st.text(max_size=5)),
        st.one_of(st.integers(-1, 40), st.text(max_size=3)),
        st.sampled_from(["inbound", "outbound", "inbound_track", "both", ""]),
        st.one_of(st.just(base64.b64encode(b"\x7f" * 160).decode()), st.text(alphabet="AB=/+%", max_size=20)),
    ),
)
message = st.one_of(st.sampled_from(GOOD), garbage)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.lists(message, max_size=30), st.booleans(), st.booleans())
def test_fuzz_the_stream_endpoint(server: Server, messages: list[Any], with_start: bool, end_with_stop: bool) -> None:
    sequence = ([GOOD[0], GOOD[1]] if with_start else []) + messages + ([GOOD[-1]] if end_with_stop else [])

    async def run() -> None:
        async with websockets.connect(server.ws, max_size=None) as ws:
            for msg in sequence:
                try:
                    await ws.send(msg)
                except websockets.ConnectionClosed:
                    return  # the server may refuse the stream (no key, no start) and close

    asyncio.run(run())
    assert httpx.get(server.http + "/healthz", timeout=10).status_code == 200


def test_after_the_fuzzing_no_call_is_left_live(server: Server) -> None:
    test_fuzz_the_stream_endpoint(server)  # run the examples first when this test is selected alone
    server.wait_no_live_calls()
    hosts = ray.get(server.directory().hosts.remote())
    assert all(h["calls"] == 0 for h in hosts) and len(hosts) <= 2
    for h in hosts:
        assert ray.get(h["handle"].stats.remote())["calls"] == 0, "a host still holds a call"
    assert server.process.poll() is None, server.log()
    assert "Exception in ASGI application" not in server.log_path.read_text()
