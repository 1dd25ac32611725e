"""Erasure and retention on a real server (uvicorn, Ray, the embedded index, the folder recordings).

After ``DELETE /v1/calls/{sid}`` (and after retention finds a call past its age) the call's audio, turns,
record, search documents and the event hub's copies of its events are gone: checked through every API,
through the hub actor, and in the storage itself (the call store's tables, the recordings folder).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import ray
import websockets

from api.simulate import load_jsonl, play, with_fresh_sids
from engine.store.audio import call_prefix
from tests.support import API_KEY, OTHER_KEY, Server, wait_searchable

pytestmark = pytest.mark.integration

SPEED = 25.0


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = {"MISE_TENANT_RETENTION_DAYS": "globex:30", "MISE_RETENTION_SWEEP_S": "1"}
    with Server.start(ray_address, tmp_path_factory.mktemp("erasure"), **env) as srv:
        yield srv


def stream(server: Server, capture: Path, *, key: str = API_KEY, seconds: int = 20) -> str:
    messages = with_fresh_sids(load_jsonl(capture), api_key=key)
    kept = [m for m in messages if m["event"] != "media" or int(m["media"]["timestamp"]) < seconds * 1000]
    return asyncio.run(play(server.ws, kept, speed=SPEED)).call_sid


def hub_events(server: Server, tenant: str, call_sid: str) -> list[Any]:
    hub = ray.get_actor("mise-hub", namespace=server.namespace)
    return list(ray.get(hub.replay.remote(tenant, call_sid, -1))[2])


def stored_rows(server: Server, call_sid: str) -> dict[str, int]:
    db = sqlite3.connect(server.data_dir / "mise.db")
    try:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE call_sid = ?", (call_sid,)).fetchone()[0]
            for table in ("calls", "lifecycle", "turns", "segments")
        }
    finally:
        db.close()


def searched(server: Server, call_sid: str, key: str = API_KEY) -> int:
    query = {"where": {"call_sid": call_sid}, "limit": 0}
    r = httpx.post(server.http + "/v1/search", json=query, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return int(r.json()["total"])


def assert_gone(server: Server, tenant: str, call_sid: str, key: str) -> None:
    for path in ("", "/turns", "/audio", "/events"):
        assert server.get(f"/v1/calls/{call_sid}{path}", key=key).status_code == 404, path
    assert call_sid not in {c["call_sid"] for c in server.get("/v1/calls", key=key, limit=500).json()["calls"]}
    assert searched(server, call_sid, key) == 0
    assert hub_events(server, tenant, call_sid) == []
    assert stored_rows(server, call_sid) == {"calls": 0, "lifecycle": 0, "turns": 0, "segments": 0}
    assert not (server.data_dir / "recordings" / call_prefix(tenant, call_sid)).exists()


def test_delete_erases_a_call_everywhere_and_answers_when_done(server: Server, synthetic_capture: Path) -> None:
    call_sid = stream(server, synthetic_capture)
    keep = stream(server, synthetic_capture)
    turns = wait_searchable(server, call_sid)
    wait_searchable(server, keep)
    assert len(turns) >= 3
    assert server.get(f"/v1/calls/{call_sid}/audio").status_code == 200
    assert hub_events(server, "acme", call_sid)
    assert stored_rows(server, call_sid)["turns"] == len(turns)

    headers = {"Authorization": f"Bearer {OTHER_KEY}"}
    assert httpx.delete(server.http + f"/v1/calls/{call_sid}", headers=headers).status_code == 404  # not theirs
    r = httpx.delete(server.http + f"/v1/calls/{call_sid}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200, r.text
    erased = r.json()["erased"]
    assert erased["calls"] == 1 and erased["turns"] == len(turns) and erased["recording_files"] == 2
    assert erased["hub_events"] >= len(turns)
    assert_gone(server, "acme", call_sid, API_KEY)  # at once: the DELETE answered only when all was done
    r = httpx.delete(server.http + f"/v1/calls/{call_sid}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 404
    assert f"call {call_sid} of tenant acme erased (request)" in server.log_path.read_text()
    # The other call is untouched.
    assert server.get(f"/v1/calls/{keep}/audio").status_code == 200
    assert searched(server, keep) == len(server.get(f"/v1/calls/{keep}/turns").json()["turns"]) > 0


def test_a_live_call_is_not_erased(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]

    async def run() -> int:
        async with websockets.connect(server.ws) as ws:
            for msg in messages[:300]:
                await ws.send(orjson.dumps(msg).decode())
            await asyncio.to_thread(server.wait_call, call_sid, live=True)
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient() as client:
                status = (await client.delete(server.http + f"/v1/calls/{call_sid}", headers=headers)).status_code
            await ws.send(orjson.dumps(messages[-1]).decode())
            await asyncio.wait_for(ws.wait_closed(), 30)
        return status

    assert asyncio.run(run()) == 409
    assert server.wait_call(call_sid)["end_reason"] == "stop"


def test_retention_erases_calls_past_their_tenants_age(server: Server, synthetic_capture: Path) -> None:
    """The module's server keeps globex's calls 30 days (acme's for ever), looking every second."""
    old = stream(server, synthetic_capture, key=OTHER_KEY, seconds=15)
    fresh = stream(server, synthetic_capture, key=OTHER_KEY, seconds=15)
    acme_call = stream(server, synthetic_capture, seconds=15)
    wait_searchable(server, old, key=OTHER_KEY)
    before = server.metrics().get('mise_erasures_total{reason="retention"}', 0.0)
    # Months pass for two of them (first_seen_at is what retention goes by), in the store the server uses.
    aged = (datetime.now(UTC) - timedelta(days=60)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    db = sqlite3.connect(server.data_dir / "mise.db", timeout=30)
    with db:
        db.executemany("UPDATE calls SET first_seen_at = ? WHERE call_sid = ?", [(aged, old), (aged, acme_call)])
    db.close()
    deadline = time.monotonic() + 30
    while server.get(f"/v1/calls/{old}", key=OTHER_KEY).status_code != 404:
        assert time.monotonic() < deadline, f"the aged call is still there:\n{server.log()}"
        time.sleep(0.2)
    assert_gone(server, "globex", old, OTHER_KEY)
    assert server.metrics()['mise_erasures_total{reason="retention"}'] == before + 1
    # A globex call younger than 30 days, and acme's (no retention) however old, are kept.
    for call_sid, key in ((fresh, OTHER_KEY), (acme_call, API_KEY)):
        assert server.get(f"/v1/calls/{call_sid}", key=key).status_code == 200
        assert server.get(f"/v1/calls/{call_sid}/audio", key=key).status_code == 200
        assert searched(server, call_sid, key) > 0


def test_delete_reaches_an_opensearch_index(
    ray_address: str, opensearch_url: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    """The same erasure with the production index: the DELETE answers once the real OpenSearch node has applied
    (and refreshed) the call's deletion, so a search right after finds nothing of it."""
    env = {"MISE_OPENSEARCH_URL": opensearch_url, "MISE_OPENSEARCH_PREFIX": "erase" + secrets.token_hex(3)}
    with Server.start(ray_address, tmp_path, **env) as srv:
        call_sid = stream(srv, synthetic_capture, seconds=15)
        keep = stream(srv, synthetic_capture, seconds=15)
        turns = wait_searchable(srv, call_sid)
        wait_searchable(srv, keep)
        r = httpx.delete(srv.http + f"/v1/calls/{call_sid}", headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200 and r.json()["erased"]["turns"] == len(turns), r.text
        assert searched(srv, call_sid) == 0  # at once, no waiting for the index
        assert srv.get(f"/v1/calls/{call_sid}").status_code == 404
        assert searched(srv, keep) == len(srv.get(f"/v1/calls/{keep}/turns").json()["turns"]) > 0
