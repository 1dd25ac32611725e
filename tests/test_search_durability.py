"""Nothing lost, nothing twice: a real OpenSearch node is stopped (SIGSTOP: every request hangs) for
30 s while 10 simulated calls run, and the server is restarted once mid-run, during the outage. Every
turn of every call must end up indexed exactly once: ids and counts checked against the calls' turns.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from tests.opensearch_node import find_home, opensearch_node
from tests.support import API_KEY, Server, send_paced, unavailable

pytestmark = pytest.mark.integration

SPEED = 4.0
OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A node of this module's own (it gets stopped): its URL and the pid of its JVM."""
    home = find_home()
    if home is None:
        unavailable("no OpenSearch install: run `make opensearch` (or set MISE_OPENSEARCH_HOME)")
        return
    with opensearch_node(home, tmp_path_factory.mktemp("os-durability")) as url:
        nodes = httpx.get(url + "/_nodes/_local/process", timeout=10).json()["nodes"]
        pid = int(next(iter(nodes.values()))["process"]["id"])
        yield url, pid


def play_in_background(server: Server, captures: list[list[dict[str, Any]]], stagger_s: float) -> threading.Thread:
    async def one(i: int, messages: list[dict[str, Any]]) -> None:
        await asyncio.sleep(i * stagger_s)
        try:
            async with websockets.connect(server.ws) as ws:
                await send_paced(ws, messages, SPEED)
                await asyncio.wait_for(ws.wait_closed(), 30)
        except (OSError, websockets.ConnectionClosed):
            pass  # the restart closes live streams (1012): their turns so far must still be indexed

    def run() -> None:
        async def all_calls() -> None:
            await asyncio.gather(*(one(i, m) for i, m in enumerate(captures)))

        asyncio.run(all_calls())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def indexed(server: Server, call_sid: str) -> list[str]:
    r = httpx.post(
        server.http + "/v1/search",
        json={"where": {"call_sid": call_sid}, "sort": "turn_index", "limit": 200},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=15,
    )
    r.raise_for_status()
    body = r.json()
    assert body["total"] == len(body["hits"])
    return [h["id"] for h in body["hits"]]


def test_an_outage_and_a_restart_lose_and_duplicate_nothing(
    ray_address: str, node: tuple[str, int], synthetic_capture: Path, tmp_path: Path
) -> None:
    url, pid = node
    env = {"MISE_OPENSEARCH_URL": url, "MISE_OPENSEARCH_PREFIX": "dur" + secrets.token_hex(3)}
    base = load_jsonl(synthetic_capture)
    captures = [with_fresh_sids(base, api_key=API_KEY) for _ in range(10)]
    sids = [c[1]["start"]["callSid"] for c in captures]

    first = Server.launch(ray_address, tmp_path, **env)
    second: Server | None = None
    stopped_at: float | None = None
    try:
        before = play_in_background(first, captures[:5], stagger_s=0.5)
        time.sleep(3.0)
        os.kill(pid, signal.SIGSTOP)  # the search backend stops answering
        stopped_at = time.monotonic()
        time.sleep(5.0)
        first.stop()  # restarted mid-run, with turns spooled and not yet indexed
        before.join(60)
        second = Server.launch(ray_address, tmp_path, **env)
        after = play_in_background(second, captures[5:], stagger_s=0.5)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
        os.kill(pid, signal.SIGCONT)
        stopped_at = None
        after.join(60)
        deadline = time.monotonic() + 60
        expected: dict[str, list[str]] = {}
        for sid in sids:
            turns = second.get(f"/v1/calls/{sid}/turns").json()["turns"]
            expected[sid] = [f"{sid}:{t['turn_id']}" for t in sorted(turns, key=lambda t: t["turn_id"])]
        assert all(expected.values()), "every call stored turns"
        while time.monotonic() < deadline and any(indexed(second, s) != ids for s, ids in expected.items()):
            time.sleep(0.5)
        for sid, ids in expected.items():
            assert indexed(second, sid) == ids, f"{sid}: indexed ids differ from its turns:\n{second.log()}"
        total = httpx.post(
            second.http + "/v1/search", json={"limit": 0}, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
        ).json()["total"]
        assert total == sum(len(ids) for ids in expected.values())  # and nothing twice, anywhere
        first_log, second_log = first.log_path.read_text(), second.log_path.read_text()
        assert "retrying" in first_log + second_log, "the outage was noticed and retried"
        assert "replaying 1 spool(s)" in second_log, "the second process adopted the first one's spool"
    finally:
        if stopped_at is not None:
            os.kill(pid, signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()
