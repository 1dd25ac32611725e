"""Crash recovery: an API process killed (SIGKILL) with a call live leaves nothing live forever.
Real servers on real Ray, a real WebSocket client; the restart uses the same data directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from api.leases import owner_gone
from api.simulate import load_jsonl, with_fresh_sids
from engine.call import CallMeta
from engine.store.sqlite import SqliteStore
from tests.support import API_KEY, Server, send_paced

pytestmark = pytest.mark.integration


def stream_then_kill(server: Server, messages: list[dict[str, Any]], seconds: float) -> None:
    """Stream the call in real time for ``seconds``, then SIGKILL the server with the socket open."""

    async def run() -> None:
        async with websockets.connect(server.ws) as ws:
            media_until = [
                m for m in messages if m["event"] != "media" or int(m["media"]["timestamp"]) < seconds * 1000
            ]
            await send_paced(ws, media_until[:-1], 1.0)
            deadline = time.monotonic() + 10
            while not server.get("/v1/calls", live="true").json()["calls"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            server.process.kill()  # SIGKILL: no finalization of any kind
            server.process.wait()
            with contextlib.suppress(Exception):
                await ws.send(orjson.dumps(messages[-1]).decode())

    asyncio.run(run())


@pytest.mark.parametrize("host_survives", [True, False], ids=["host-alive", "host-gone"])
def test_a_killed_api_process_leaves_its_calls_ended_as_lost_with_what_is_known(
    ray_address: str, tmp_path: Path, synthetic_capture: Path, host_survives: bool
) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    first = Server.launch(ray_address, tmp_path)
    stream_then_kill(first, messages, seconds=20.0)
    # The same Ray namespace: the call's host outlived the API process (a cluster); another: it is gone too.
    namespace = first.namespace if host_survives else None
    if not host_survives:
        first.cleanup_actors()
    second = Server.launch(ray_address, tmp_path, namespace=namespace)
    try:
        call = second.get(f"/v1/calls/{call_sid}").json()
        assert call["live"] is False and call["end_reason"] == "lost", call
        assert "stopped" in call["error"]
        assert second.get("/v1/calls", live="true").json()["calls"] == []
        assert second.get("/healthz").json()["live_calls_cluster"] == 0  # the two views agree
        turns = second.get(f"/v1/calls/{call_sid}/turns").json()["turns"]
        assert len(turns) >= 3  # the turns finished before the kill are kept
        if host_survives:  # its host gave the figures known so far
            assert call["duration_ms"] >= 19_000 and call["tracks"]["inbound"]["frames"] >= 900
            assert call["summary"]["turns"] >= len(turns)
    finally:
        second.stop()
        first.cleanup_actors()


def meta(sid: str) -> CallMeta:
    return CallMeta("acme", sid, "MZ1", "AC1", ("inbound",), {}, "2026-12-02T00:00:00.000Z")


def test_leases_are_renewed_by_their_owner_and_a_lost_call_ends_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.stream_started(meta("CA1"), owner="a", lease_until=100.0)
    store.stream_started(meta("CA2"), owner="b", lease_until=100.0)
    assert store.renew_leases("a", 200.0) == 1
    assert {(x["call_sid"], x["lease_until"]) for x in store.live_leases()} == {("CA1", 200.0), ("CA2", 100.0)}
    assert not store.lose("acme", "CA2", owner="a", ended_at="2026-12-02T00:01:00.000Z", final={})  # not a's
    assert store.lose("acme", "CA2", owner="b", ended_at="2026-12-02T00:01:00.000Z", final={"error": "gone"})
    assert not store.lose("acme", "CA2", owner="b", ended_at="2026-12-02T00:02:00.000Z", final={})  # once
    call = store.get("acme", "CA2")
    assert call is not None and call["end_reason"] == "lost" and call["error"] == "gone" and not call["live"]
    assert [x["call_sid"] for x in store.live_leases()] == ["CA1"]


def test_an_owner_is_gone_when_its_lease_ran_out_or_its_process_on_this_machine_is_not_running() -> None:
    here = socket.gethostname()
    me = f"{here}:{os.getpid()}:mine"
    now = time.time()
    assert not owner_gone(me, now - 100, now, me)  # never this process itself
    assert owner_gone(None, None, now, me)  # a live call from before leases
    assert owner_gone("elsewhere:1:x", now - 1, now, me)  # lease ran out
    assert not owner_gone("elsewhere:1:x", now + 10, now, me)  # another machine, lease valid
    assert not owner_gone(f"{here}:1:x", now + 10, now, me)  # pid 1 runs here
    assert owner_gone(f"{here}:{os.getpid()}:earlier", now + 10, now, me)  # this pid, an earlier process
    dead = 2**22 + 12345  # above pid_max on Linux: no such process
    assert owner_gone(f"{here}:{dead}:x", now + 10, now, me)
