"""Failover: a call host killed (SIGKILL) mid-call; its calls go on on another host from the next frame,
the lost span is recorded as missing audio with an error note, and no new call goes to the dead host.
The audio reaches the host over its local socket (actors/channel.py) until the kill closes it.
Real server, real Ray, real WebSocket clients speaking Twilio's protocol."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import ray
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, Server, metric_delta, send_paced

pytestmark = pytest.mark.integration
SPEED = 4.0


def test_a_killed_host_s_calls_go_on_elsewhere_and_say_what_was_lost(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    captures = [with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY) for _ in range(2)]
    sids = [c[1]["start"]["callSid"] for c in captures]
    with Server.start(ray_address, tmp_path) as srv:
        before = srv.metrics()

        async def one(messages: list[dict[str, Any]]) -> None:
            async with websockets.connect(srv.ws) as ws:
                await send_paced(ws, messages, SPEED)
                await asyncio.wait_for(ws.wait_closed(), 60)

        def kill_their_host() -> int:
            hosts = ray.get(srv.directory().hosts.remote())
            busy = [h for h in hosts if h["calls"]]
            assert len(busy) == 1, hosts  # both calls share one host (not busy)
            pid = ray.get(busy[0]["handle"].stats.remote())["pid"]
            os.kill(pid, signal.SIGKILL)
            return int(pid)

        async def run() -> None:
            calls = [asyncio.create_task(one(m)) for m in captures]
            await asyncio.sleep(20 / SPEED)  # 20 s into the calls
            await asyncio.to_thread(kill_their_host)
            await asyncio.gather(*calls)

        asyncio.run(run())
        after = srv.metrics()
        assert metric_delta(before, after, "mise_failovers_total") == 2
        # The pushes went over the host's local socket; the kill closed it, Ray then said the host was dead.
        assert metric_delta(before, after, "mise_actor_pushes_local_total") > 100
        assert metric_delta(before, after, "mise_push_channels_lost_total") >= 1
        assert metric_delta(before, after, "mise_frames_dropped_total") == 0  # no accepted audio dropped
        for sid in sids:
            call = srv.wait_call(sid)
            assert call["end_reason"] == "stop" and "went on on another host" in call["error"], call
            inbound = call["tracks"]["inbound"]
            assert inbound["missing_ms"] >= 15_000  # the dead host's span: missing audio, said so
            assert call["duration_ms"] >= 55_000  # the call went on to its end
            turns = srv.get(f"/v1/calls/{sid}/turns").json()["turns"]
            ids = [t["turn_id"] for t in turns]
            assert ids == sorted(set(ids)), "turn ids continue after the move, none reused"
            assert any(t["start_ms"] > 25_000 for t in turns) and any(t["end_ms"] < 20_000 for t in turns)
        # A new call goes to a live host and ends whole.
        fresh = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
        asyncio.run(one([*fresh[:300], fresh[-1]]))
        call = srv.wait_call(fresh[1]["start"]["callSid"])
        assert call["end_reason"] == "stop" and call["error"] is None
        assert metric_delta(after, srv.metrics(), "mise_frames_dropped_total") == 0
