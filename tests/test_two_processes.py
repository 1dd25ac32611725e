"""Two API processes on one Ray instance and one store: the WebSocket lands on one, the webhook and
the readers on the other, as behind a load balancer. Hosts stay torch-free."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, Server
from tests.test_webhooks import callback

pytestmark = pytest.mark.integration


def test_a_call_streamed_into_one_process_is_served_by_another(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    with Server.pair(ray_address, tmp_path) as (a, b):

        async def run() -> None:
            async with websockets.connect(a.ws) as ws:  # the stream lands on A
                for msg in messages[:1002]:
                    await ws.send(orjson.dumps(msg).decode())
                live = await asyncio.to_thread(b.wait_call, call_sid, live=True)  # read on B
                assert live["live"] and live["stream_sid"] == messages[1]["streamSid"]
                for _ in range(100):
                    live = await asyncio.to_thread(b.wait_call, call_sid, live=True)
                    if live["tracks"] and live["tracks"]["inbound"]["frames"] == 500:
                        break
                    await asyncio.sleep(0.05)
                assert live["tracks"]["inbound"]["frames"] == 500, "B sees the live figures from the call's actor"
                form = callback(call_sid, 1, "in-progress")
                url = b.http + f"/v1/webhook/twilio?api_key={API_KEY}"
                r = await asyncio.to_thread(httpx.post, url, data=form)
                assert r.status_code == 204  # the webhook lands on B while A streams
                for msg in messages[1002:]:
                    await ws.send(orjson.dumps(msg).decode())
                await asyncio.wait_for(ws.wait_closed(), 30)

        asyncio.run(run())
        final = b.wait_call(call_sid)
        assert final["end_reason"] == "stop" and final["status"] == "in-progress"
        assert final["tracks"]["inbound"]["frames"] == 2833
        assert a.wait_call(call_sid) == final


def test_call_hosts_never_load_torch(server: Server, synthetic_capture: Path) -> None:
    """The host holding a live call (after it has analysed turns) never maps libtorch.

    The maps are read while the call is live: spare hosts with no calls may be reclaimed
    at any moment, so only the call's own host is certain to exist then."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]

    async def run() -> str:
        async with websockets.connect(server.ws) as ws:
            for msg in messages[:600]:
                await ws.send(orjson.dumps(msg).decode())
            await asyncio.to_thread(server.wait_call, call_sid, live=True)
            host = await asyncio.to_thread(server.host_of, call_sid)
            pid = (await host.stats.remote())["pid"]
            maps = Path(f"/proc/{pid}/maps").read_text()
            await ws.send(orjson.dumps(messages[-1]).decode())
            await ws.wait_closed()
            return maps

    maps = asyncio.run(run())
    assert "libtorch" not in maps and "libc10" not in maps, "the call's host has torch loaded"
