"""Two `mise serve` processes index into one real OpenSearch cluster: calls stream into both, each
call's status callback lands on the other process (which re-indexes the call's turns with the new
status), and every turn is in the index exactly once."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, Server, send_paced
from tests.test_webhooks import callback

pytestmark = pytest.mark.integration


def _search(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(server.http + "/v1/search", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)
    r.raise_for_status()
    return dict(r.json())


def test_two_processes_index_into_one_cluster_without_duplicates(
    ray_address: str, opensearch_url: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    env = {"MISE_OPENSEARCH_URL": opensearch_url, "MISE_OPENSEARCH_PREFIX": "pair" + secrets.token_hex(3)}
    base = load_jsonl(synthetic_capture)
    captures = [with_fresh_sids(base, api_key=API_KEY) for _ in range(4)]
    sids = [c[1]["start"]["callSid"] for c in captures]
    with Server.pair(ray_address, tmp_path, **env) as (a, b):
        targets = [a, b, a, b]

        async def stream_all() -> None:
            async def one(server: Server, messages: list[dict[str, Any]]) -> None:
                async with websockets.connect(server.ws) as ws:
                    await send_paced(ws, messages, 10.0)
                    await asyncio.wait_for(ws.wait_closed(), 30)

            await asyncio.gather(*(one(s, m) for s, m in zip(targets, captures, strict=True)))

        asyncio.run(stream_all())
        for sid, streamed_on in zip(sids, targets, strict=True):
            other = b if streamed_on is a else a
            url = other.http + f"/v1/webhook/twilio?api_key={API_KEY}"
            assert httpx.post(url, data=callback(sid, 3, "completed", CallDuration="57"), timeout=10).status_code == 204
        expected: dict[str, list[str]] = {}
        for sid in sids:
            a.wait_call(sid)  # ended
            expected[sid] = sorted(f"{sid}:{t['turn_id']}" for t in a.get(f"/v1/calls/{sid}/turns").json()["turns"])
        want = sum(len(ids) for ids in expected.values())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = _search(a, {"where": {"call_status": "completed"}, "last_s": 10**6, "limit": 0})["total"]
            if done == want:
                break
            time.sleep(0.2)
        for sid, ids in expected.items():
            got = _search(b, {"where": {"call_sid": sid}, "limit": 200})
            assert sorted(h["id"] for h in got["hits"]) == ids
            assert {h["call"]["call_status"] for h in got["hits"]} == {"completed"}, (
                "the callback's status reached every turn"
            )
        assert _search(a, {"limit": 0})["total"] == want == done  # nothing twice, from either process
