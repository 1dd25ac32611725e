"""A node lost with calls on it: a real two-node Ray cluster (the second node in a network namespace of its own,
tests/nodes.py), a real `mise serve` on the head node, real WebSocket clients speaking Twilio's protocol.
Every process of the second node is killed (SIGKILL) mid-call: its calls go on on hosts of the head node,
the lost span is recorded as missing audio with an error note, and no call is lost or left live."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from tests import nodes
from tests.support import API_KEY, Server, metric_delta, send_paced

pytestmark = pytest.mark.integration
SPEED = 2.0
CALLS = 4

HOSTS_BY_NODE = """
directory = ray.get_actor("mise-directory")
hosts = ray.get(directory.hosts.remote())
stats = ray.get([h["handle"].stats.remote() for h in hosts])
print(json.dumps([{"node": s["node"], "call_sids": h["call_sids"]} for h, s in zip(hosts, stats)]))
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[nodes.TwoNodes]:
    why = nodes.unavailable()
    if why is not None:
        pytest.skip(why)
    with nodes.two_nodes() as two:
        yield two


def test_a_node_lost_mid_call_its_calls_go_on_on_the_other_node(
    cluster: nodes.TwoNodes, tmp_path: Path, synthetic_capture: Path
) -> None:
    captures = [with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY) for _ in range(CALLS)]
    sids = [c[1]["start"]["callSid"] for c in captures]
    # One call per host, hosts spread over both nodes (SPREAD): some calls are on the node that will be lost.
    with Server.start(cluster.address, tmp_path, MISE_CALLS_PER_ACTOR="1", MISE_SPARE_HOSTS="1") as srv:
        worker = cluster.worker_node_id()
        before = srv.metrics()
        on_worker: list[str] = []

        async def one(messages: list[dict[str, Any]]) -> None:
            async with websockets.connect(srv.ws) as ws:
                await send_paced(ws, messages, SPEED)
                await asyncio.wait_for(ws.wait_closed(), 90)

        def lose_the_worker_node() -> None:
            hosts: Any = cluster.query(HOSTS_BY_NODE, namespace=srv.namespace)
            on_worker.extend(sid for h in hosts if h["node"] == worker for sid in h["call_sids"])
            if not on_worker or len(on_worker) == CALLS:  # calls on both nodes, or say why not
                code = f"print(json.dumps([n['Alive'] for n in ray.nodes() if n['NodeID'] == {worker!r}]))"
                pytest.fail(f"calls not on both nodes: {hosts}; worker node alive: {cluster.query(code)}")
            assert cluster.lose_worker() > 0

        async def run() -> None:
            calls = [asyncio.create_task(one(m)) for m in captures]
            await asyncio.sleep(10 / SPEED)  # 10 s into the calls
            await asyncio.to_thread(lose_the_worker_node)
            await asyncio.gather(*calls)

        asyncio.run(run())
        after = srv.metrics()
        assert metric_delta(before, after, "mise_failovers_total") == len(on_worker)
        assert metric_delta(before, after, "mise_frames_dropped_total") == 0  # no accepted audio dropped
        for sid in sids:
            call = srv.wait_call(sid)
            assert call["end_reason"] == "stop" and not call["live"], call
            assert call["duration_ms"] >= 55_000  # every call went on to its end
            turns = srv.get(f"/v1/calls/{sid}/turns").json()["turns"]
            ids = [t["turn_id"] for t in turns]
            assert ids == sorted(set(ids)) and any(t["start_ms"] > 40_000 for t in turns)
            if sid in on_worker:
                assert "went on on another host" in call["error"], call
                assert call["tracks"]["inbound"]["missing_ms"] > 0  # the span the lost node held, said so
            else:
                assert call["error"] is None and call["tracks"]["inbound"]["missing_ms"] == 0, call
        assert srv.get("/v1/calls", live="true").json()["calls"] == []
        hosts: Any = cluster.query(HOSTS_BY_NODE, namespace=srv.namespace)
        assert all(h["node"] != worker for h in hosts), "a host on the lost node is still in service"
