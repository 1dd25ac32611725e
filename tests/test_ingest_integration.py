"""Real uvicorn + real Ray + a real WebSocket client replaying Twilio captures.

The actor's per-track audio must equal the decoded source sample for sample, also when 5% of frames
are dropped (exactly those read as silence) and another 5% arrive out of order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import ray
import websockets

from api.simulate import load_jsonl, play, with_fresh_sids
from tests.support import API_KEY, Server, dropped_and_reordered, send_paced, track_audio

pytestmark = pytest.mark.integration

SPEED = 25.0


async def replay_holding_stop(server: Server, messages: list[dict[str, Any]], speed: float) -> dict[str, Any]:
    """Send everything but ``stop`` at ``speed`` x real time, read the call's audio from its actor,
    then send ``stop``. Returns the actor's audio and figures."""
    call_sid = messages[1]["start"]["callSid"]
    media_count = sum(1 for m in messages if m["event"] == "media")
    async with websockets.connect(server.ws) as ws:
        elapsed = await send_paced(ws, messages[:-1], speed)
        host = server.host_of(call_sid)
        snapshot: dict[str, Any] = {}
        for _ in range(200):  # audio lands within a push interval or two
            # None until the API process has opened the call on its host (the directory places it first)
            snapshot = await host.snapshot.remote(call_sid) or {"tracks": {}}
            if sum(t["frames"] + t["duplicate_frames"] for t in snapshot["tracks"].values()) >= media_count:
                break
            await asyncio.sleep(0.05)
        audio = {track: await host.audio.remote(call_sid, track) for track in ("inbound", "outbound")}
        await ws.send(orjson.dumps(messages[-1]).decode())
        await asyncio.wait_for(ws.wait_closed(), 30)
    return {"audio": audio, "snapshot": snapshot, "elapsed": elapsed, "call_sid": call_sid}


def test_replay_is_sample_exact(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    result = asyncio.run(replay_holding_stop(server, messages, SPEED))
    assert result["elapsed"] < 56.66 / 20, "the replay must run at >= 20x real time"
    for track in ("inbound", "outbound"):
        expected = track_audio(messages, track)
        assert len(expected) == 56.66 * 8000
        assert np.array_equal(result["audio"][track], expected), f"{track} differs from the source"
    call = server.wait_call(result["call_sid"])
    assert call["end_reason"] == "stop" and call["status"] == "completed"
    for track in ("inbound", "outbound"):
        figures = call["tracks"][track]
        assert figures["duration_ms"] == 56660 and figures["missing_ms"] == 0 and figures["frames"] == 2833


def test_drops_and_reordering_leave_exactly_the_dropped_frames_silent(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    sent, dropped = dropped_and_reordered(messages, seed=20261124)
    assert sent[-1]["event"] == "stop"
    result = asyncio.run(replay_holding_stop(server, sent, SPEED))
    for track in ("inbound", "outbound"):
        expected = track_audio(messages, track)
        dropped_here = [messages[i]["media"] for i in dropped if messages[i]["media"]["track"] == track]
        for media in dropped_here:
            at = int(media["timestamp"]) * 8
            expected[at : at + 160] = 0
        assert np.array_equal(result["audio"][track], expected), f"{track} differs"
        figures = result["snapshot"]["tracks"][track]
        assert figures["missing_ms"] == 20 * len(dropped_here)
        assert figures["duration_ms"] == 56660


def test_connect_stream_with_only_the_inbound_track(server: Server, synthetic_capture: Path) -> None:
    """<Connect><Stream> carries the caller leg only; first timestamp not 0, as in the real capture."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    inbound_only = [m for m in messages if m["event"] != "media" or m["media"]["track"] == "inbound"]
    inbound_only[1]["start"]["tracks"] = ["inbound"]
    for m in inbound_only:
        if m["event"] == "media":
            m["media"] = dict(m["media"], timestamp=str(int(m["media"]["timestamp"]) + 52))
    result = asyncio.run(play(server.ws, inbound_only, speed=0))
    call = server.wait_call(result.call_sid)
    assert call["tracks_declared"] == ["inbound"]
    assert call["tracks"]["inbound"]["duration_ms"] == 56660 + 52
    assert call["tracks"]["inbound"]["missing_ms"] == 52  # before the first frame: silence, by timestamp
    assert call["tracks"]["outbound"]["duration_ms"] == 0


def test_calls_run_side_by_side_and_are_scoped_by_tenant(server: Server, synthetic_capture: Path) -> None:
    source = load_jsonl(synthetic_capture)

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(play(server.ws, with_fresh_sids(source, api_key=API_KEY), speed=SPEED) for _ in range(3))
        )

    results = asyncio.run(both())
    for r in results:
        call = server.wait_call(r.call_sid)
        assert call["tracks"]["inbound"]["frames"] == call["tracks"]["outbound"]["frames"] == 2833
    listed = {c["call_sid"] for c in server.get("/v1/calls", limit=100).json()["calls"]}
    assert {r.call_sid for r in results} <= listed
    from tests.support import OTHER_KEY

    assert server.get(f"/v1/calls/{results[0].call_sid}", key=OTHER_KEY).status_code == 404
    assert not {r.call_sid for r in results} & {
        c["call_sid"] for c in server.get("/v1/calls", key=OTHER_KEY).json()["calls"]
    }
    assert server.get("/v1/calls", key="not-a-key").status_code == 401
    server.wait_no_live_calls()


def test_a_live_call_shows_live_figures(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]

    async def run() -> dict[str, Any]:
        async with websockets.connect(server.ws) as ws:
            for msg in messages[:1000]:
                await ws.send(orjson.dumps(msg).decode())
            for _ in range(100):
                call = await asyncio.to_thread(server.wait_call, call_sid, live=True)
                if call["tracks"] and call["tracks"]["inbound"]["frames"] >= 499:
                    return call
                await asyncio.sleep(0.05)
            raise AssertionError("live figures never caught up")

    call = asyncio.run(run())
    assert call["live"] and call["status"] == "in-progress"
    assert call["tracks"]["inbound"]["duration_ms"] == 499 * 20
    # The socket closed without stop: the call is still finalized, from what arrived.
    final = server.wait_call(call_sid)
    assert final["end_reason"] == "disconnect" and final["tracks"]["inbound"]["frames"] == 499


def test_records_survive_a_restart(ray_address: str, tmp_path: Path, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    with Server.start(ray_address, tmp_path) as first:
        result = asyncio.run(play(first.ws, messages, speed=0))
        before = first.wait_call(result.call_sid)
    with Server.start(ray_address, tmp_path) as second:
        after = second.wait_call(result.call_sid)
    assert after == before


def test_one_ray_process_per_call_when_calls_per_actor_is_1(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    source = load_jsonl(synthetic_capture)
    with Server.start(ray_address, tmp_path, MISE_CALLS_PER_ACTOR="1", MISE_SPARE_HOSTS="1") as srv:
        sids = [with_fresh_sids(source, api_key=API_KEY) for _ in range(3)]

        async def run() -> set[int]:
            sockets = [await websockets.connect(srv.ws) for _ in sids]
            for ws, msgs in zip(sockets, sids, strict=True):
                for msg in msgs[:50]:
                    await ws.send(orjson.dumps(msg).decode())
            pids = set()
            for msgs in sids:
                for _ in range(100):
                    found = await srv.directory().lookup.remote(msgs[1]["start"]["callSid"])
                    if found:
                        break
                    await asyncio.sleep(0.05)
                pids.add(await found[2].ready.remote())
            for ws, msgs in zip(sockets, sids, strict=True):
                await ws.send(orjson.dumps(msgs[-1]).decode())
                await ws.wait_closed()
            return pids

        pids = asyncio.run(run())
        assert len(pids) == 3, "each call must live in its own Ray actor process"
        srv.wait_no_live_calls()
        hosts = ray.get(srv.directory().hosts.remote())
        assert len(hosts) <= 1 and all(h["calls"] == 0 for h in hosts), "hosts of ended calls are cleaned up"
        for msgs in sids:
            assert srv.wait_call(msgs[1]["start"]["callSid"])["end_reason"] == "stop"


def test_stopping_the_server_finalizes_live_calls(ray_address: str, tmp_path: Path, synthetic_capture: Path) -> None:
    import signal

    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    with Server.start(ray_address, tmp_path) as srv:

        async def run() -> int | None:
            async with websockets.connect(srv.ws) as ws:
                for msg in messages[:402]:  # connected, start, 200 frames per track
                    await ws.send(orjson.dumps(msg).decode())
                await asyncio.to_thread(srv.wait_call, call_sid, live=True)
                # Stopped once every frame is in the server: what still waits in the client's or the kernel's
                # buffers was never accepted, and a stopping server cannot read it (one CI run stopped early and
                # finalized 136 frames of 200).
                for _ in range(300):
                    received = await asyncio.to_thread(srv.metrics)
                    if received.get('mise_frames_received_total{track="outbound"}', 0) >= 200:
                        break
                    await asyncio.sleep(0.05)
                srv.process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(ws.wait_closed(), 30)
                return ws.close_code

        assert asyncio.run(run()) == 1012
        assert srv.process.wait(timeout=30) in (0, -signal.SIGTERM), srv.log()  # uvicorn re-raises the signal
    with Server.start(ray_address, tmp_path) as again:
        call = again.wait_call(call_sid)
    assert call["end_reason"] == "server_shutdown"
    assert call["tracks"]["inbound"]["frames"] == call["tracks"]["outbound"]["frames"] == 200


def test_api_keys_never_reach_the_logs(server: Server, synthetic_capture: Path) -> None:
    fresh = with_fresh_sids(load_jsonl(synthetic_capture), api_key=None)
    messages = [*fresh[:40], fresh[-1]]
    result = asyncio.run(play(server.ws + f"?api_key={API_KEY}", messages, speed=0))
    server.wait_call(result.call_sid)
    assert server.get("/v1/calls", api_key=API_KEY).status_code == 200
    import httpx

    assert httpx.get(server.http + "/v1/calls", params={"api_key": API_KEY}).status_code == 200
    log = server.log_path.read_text()
    assert "api_key=***" in log, "the requests above should have been logged, key masked"
    assert API_KEY not in log


def test_a_dead_host_s_call_moves_to_another_and_new_calls_go_elsewhere(
    server: Server, synthetic_capture: Path
) -> None:
    source = load_jsonl(synthetic_capture)
    doomed = with_fresh_sids(source, api_key=API_KEY)
    call_sid = doomed[1]["start"]["callSid"]

    async def run() -> None:
        async with websockets.connect(server.ws) as ws:
            for msg in doomed[:100]:
                await ws.send(orjson.dumps(msg).decode())
            await asyncio.to_thread(server.wait_call, call_sid, live=True)
            ray.kill(server.host_of(call_sid))
            for msg in doomed[100:300]:
                await ws.send(orjson.dumps(msg).decode())
            await ws.send(orjson.dumps(doomed[-1]).decode())
            await asyncio.wait_for(ws.wait_closed(), 60)

    asyncio.run(run())
    record = server.wait_call(call_sid, timeout=90)
    assert record["end_reason"] == "stop" and not record["live"]
    assert "went on on another host" in record["error"]  # moved (tests/test_failover.py), and said so
    assert server.metrics().get("mise_actor_push_errors_total", 0) >= 1
    after = asyncio.run(play(server.ws, with_fresh_sids(source, api_key=API_KEY), speed=0))
    assert server.wait_call(after.call_sid)["tracks"]["inbound"]["frames"] == 2833
