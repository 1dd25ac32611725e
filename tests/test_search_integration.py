"""Search end to end on a real server (embedded index): simulated calls stream in as Twilio would, and
their turns come back through /v1/search (GET and POST) and `mise search`, tenant by tenant."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, OTHER_KEY, REPO, Server, stream_calls, wait_searchable

pytestmark = pytest.mark.integration

SPEED = 8.0


def search(server: Server, key: str = API_KEY, **body: Any) -> httpx.Response:
    return httpx.post(server.http + "/v1/search", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


@pytest.fixture(scope="module")
def corpus(server: Server, synthetic_capture: Path) -> dict[str, Any]:
    base = load_jsonl(synthetic_capture)
    a1 = with_fresh_sids(base, api_key=API_KEY)
    a2 = with_fresh_sids(base, api_key=API_KEY)
    b1 = with_fresh_sids(base, api_key=OTHER_KEY)
    stream_calls(server, [a1, a2, b1], SPEED)
    sids = [m[1]["start"]["callSid"] for m in (a1, a2, b1)]
    turns = {
        sid: wait_searchable(server, sid, key) for sid, key in zip(sids, (API_KEY, API_KEY, OTHER_KEY), strict=True)
    }
    return {"a": sids[:2], "b": sids[2], "turns": turns}


def test_every_turn_of_every_call_is_searchable_once(server: Server, corpus: dict[str, Any]) -> None:
    for sid in corpus["a"]:
        turns = corpus["turns"][sid]
        hits = search(server, where={"call_sid": sid}, sort="start_ms", limit=200).json()
        assert hits["total"] == len(turns) > 5
        assert [h["id"] for h in hits["hits"]] == [
            f"{sid}:{t['turn_id']}" for t in sorted(turns, key=lambda t: t["start_ms"])
        ]
        assert hits["hits"][0]["turn"] == sorted(turns, key=lambda t: t["start_ms"])[0]  # the stored turn, whole
    metrics = server.metrics()
    assert metrics["mise_index_indexed_total"] >= sum(len(t) for t in corpus["turns"].values())
    assert metrics["mise_index_failed_total"] == 0


def test_the_synthetic_calls_barge_ins_and_dead_air_are_found_by_conditions(
    server: Server, corpus: dict[str, Any]
) -> None:
    sid = corpus["a"][0]
    # The scripted call: the caller barges in twice; the agent answers after 4 s of dead air once.
    barge = search(server, where={"call_sid": sid, "speaker": "caller", "interrupted_other": True}).json()
    assert barge["total"] == 2
    assert [
        round(h["turn"]["start_ms"] / 1000, 1) for h in sorted(barge["hits"], key=lambda h: h["turn"]["start_ms"])
    ] == [
        pytest.approx(17.8, abs=0.3),
        pytest.approx(41.5, abs=0.3),
    ]
    dead_air = search(server, where={"call_sid": sid, "speaker": "agent", "gap_before_ms": {"gte": 3500}}, explain=True)
    (hit,) = dead_air.json()["hits"]
    assert hit["turn"]["start_ms"] == pytest.approx(47195, abs=300)
    assert hit["explain"][-1].startswith("gap_before_ms >= 3500 (")
    # A sequence: the agent's turn, then the caller talking over the next one, within 3 turns.
    seq = search(
        server,
        sequence=[
            {"speaker": "agent", "where": {"call_sid": sid}},
            {"speaker": "caller", "where": {"interrupted_other": True}, "within_turns": 3},
        ],
    ).json()
    assert seq["total"] >= 2 and all(s["hits"][1]["turn"]["interrupted_other"] for s in seq["sequences"])
    # GET with the common parameters gives the POST's answer.
    got = server.get("/v1/search", call_sid=sid, speaker="caller", interrupted_other="true").json()
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in barge["hits"]]


def test_grouping_and_aggregations_count_the_tenants_calls_only(server: Server, corpus: dict[str, Any]) -> None:
    grouped = search(server, where={"interrupted_other": True, "speaker": "caller"}, group_by="call").json()
    assert grouped["total_calls"] == 2 and {g["call_sid"] for g in grouped["groups"]} == set(corpus["a"])
    assert all(g["matches"] == 2 and len(g["hits"]) == 2 for g in grouped["groups"])
    aggs = search(server, limit=0, aggs={"speakers": {"terms": "speaker", "stats": "interrupted_other"}}).json()
    n_a = sum(len(corpus["turns"][s]) for s in corpus["a"])
    buckets = aggs["aggs"]["speakers"]["buckets"]
    assert aggs["total"] == n_a and sum(b["count"] for b in buckets) == n_a
    caller = next(b for b in buckets if b["key"] == "caller")
    assert caller["stats"]["sum"] == 4  # two barge-ins in each of tenant A's two calls


def test_another_tenant_never_sees_these_turns(server: Server, corpus: dict[str, Any]) -> None:
    a_sid, b_sid = corpus["a"][0], corpus["b"]
    for key, own, other in ((API_KEY, a_sid, b_sid), (OTHER_KEY, b_sid, a_sid)):
        assert search(server, key, where={"call_sid": own}).json()["total"] > 0
        assert search(server, key, where={"call_sid": other}).json()["total"] == 0
        grouped = search(server, key, group_by="call", limit=200).json()
        assert other not in {g["call_sid"] for g in grouped["groups"]}
        agg = search(server, key, limit=0, where={"call_sid": other}, aggs={"e": {"terms": "call_sid"}}).json()
        assert agg["aggs"]["e"]["buckets"] == []
    totals = [search(server, key, limit=0).json()["total"] for key in (API_KEY, OTHER_KEY)]
    assert totals == [sum(len(corpus["turns"][s]) for s in corpus["a"]), len(corpus["turns"][b_sid])]
    assert httpx.get(server.http + "/v1/search", timeout=10).status_code == 401


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"where": {"pitchh": 1}}, "where.pitchh: unknown field"),
        ({"where": {"frustration": "high"}}, "expected a number"),
        ({"where": {"frustration": {"gte": 0.9, "lte": 0.2}}}, "the range is empty"),
        ({"text": 'cancel "my'}, "unclosed quote"),
        ({"sequence": [{"speaker": "agent"}] * 6}, "2 to 4 steps"),
        ({"limit": 10**9}, "limit"),
    ],
)
def test_bad_queries_are_400s_naming_the_problem(server: Server, body: dict[str, Any], needle: str) -> None:
    r = search(server, **body)
    assert r.status_code == 400 and needle in r.json()["error"]


def test_bad_get_parameters_are_400s(server: Server) -> None:
    for params, needle in (({"min_frustr": "1"}, "min_frustr"), ({"bogus": "1"}, "bogus"), ({"limit": "x"}, "limit")):
        r = server.get("/v1/search", **params)
        assert r.status_code == 400 and needle in r.json()["error"]
    assert (
        httpx.post(
            server.http + "/v1/search", content=b"{not json", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        ).status_code
        == 400
    )


def test_the_cli_prints_a_table_or_json_and_exits_2_on_a_bad_query(server: Server, corpus: dict[str, Any]) -> None:
    sid = corpus["a"][0]
    cli = [sys.executable, "-m", "api.cli", "search", "--url", server.http, "--api-key", API_KEY]
    table = subprocess.run(
        [*cli, "--where", f"call_sid={sid}", "--speaker", "caller", "--where", "interrupted_other=true"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "2 turns" and all(sid in line and "caller" in line for line in lines[1:3])
    as_json = subprocess.run(
        [*cli, "--json", "--where", f"call_sid={sid}"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert as_json.returncode == 0 and '"total": ' + str(len(corpus["turns"][sid])) in as_json.stdout
    bad = subprocess.run([*cli, "--min", "frustr=0.5"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "where.frustr: unknown field" in bad.stderr
    offline = subprocess.run(
        [
            *cli[:4],
            "--data-dir",
            str(server.data_dir),
            "--tenant",
            "acme",
            "--where",
            f"call_sid={sid}",
            "--limit",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 0 and offline.stdout.startswith(f"{len(corpus['turns'][sid])} turns"), offline.stderr


def test_calls_list_filters_by_metadata(server: Server, corpus: dict[str, Any]) -> None:
    sids = {c["call_sid"] for c in server.get("/v1/calls", status="completed").json()["calls"]}
    assert set(corpus["a"]) <= sids and corpus["b"] not in sids
    assert server.get("/v1/calls", min_duration_ms="60000").json()["calls"] == []  # the call lasts 56.7 s
    assert server.get("/v1/calls", direction="sideways").json()["calls"] == []
    r = server.get("/v1/calls", started_after="last tuesday")
    assert r.status_code == 400 and "started_after" in r.json()["error"]


def test_reindex_copies_the_stored_calls_into_a_new_opensearch_index_idempotently(
    server: Server, corpus: dict[str, Any], opensearch_url: str
) -> None:
    """Switching the embedded index for OpenSearch: `mise reindex` brings every stored turn along."""
    import os
    import secrets

    from engine.search.execute import execute
    from engine.search.query import parse_query
    from engine.store.opensearch_index import OpenSearchIndex

    prefix = "reidx" + secrets.token_hex(3)
    env = {
        **os.environ,
        "MISE_DATA_DIR": str(server.data_dir),
        "MISE_OPENSEARCH_URL": opensearch_url,
        "MISE_OPENSEARCH_PREFIX": prefix,
        "MISE_API_KEYS": f"{API_KEY}:acme",
    }
    for _ in range(2):  # twice: the second run changes nothing
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "reindex"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "reindex: done" in done.stderr

    async def totals() -> list[int]:
        index = OpenSearchIndex(opensearch_url, prefix=prefix)
        try:
            await index.refresh()
            out = []
            for tenant, sid in (("acme", corpus["a"][0]), ("acme", corpus["a"][1]), ("globex", corpus["b"])):
                result = await execute(index, tenant, parse_query({"where": {"call_sid": sid}, "limit": 0}))
                out.append(result["total"])
            out.append((await execute(index, "acme", parse_query({"limit": 0})))["total"])
            return out
        finally:
            await index.close()

    per_call = [len(corpus["turns"][s]) for s in (*corpus["a"], corpus["b"])]
    embedded_acme = search(server, limit=0).json()["total"]
    assert asyncio.run(totals()) == [*per_call, embedded_acme]


def test_a_new_index_is_filled_from_the_stored_calls(ray_address: str, synthetic_capture: Path, tmp_path: Path) -> None:
    """The index is derived data: a server that finds it missing (or of an older layout) backfills it."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    sid = messages[1]["start"]["callSid"]
    with Server.start(ray_address, tmp_path) as first:
        stream_calls(first, [messages], speed=20.0)
        turns = wait_searchable(first, sid)
    import shutil

    shutil.rmtree(tmp_path / "index")
    with Server.start(ray_address, tmp_path) as second:
        assert wait_searchable(second, sid) == turns
        assert "backfill: done, 1 calls" in second.log_path.read_text()
        assert not (tmp_path / "spool" / "BACKFILL").exists()


def test_an_index_of_another_layout_is_emptied_and_reported_new(tmp_path: Path) -> None:
    import sqlite3

    from engine.store.sqlite_index import SqliteIndex
    from tests.index_corpus import A, corpus_ops

    async def scenario() -> tuple[bool, bool, int, bool]:
        index = SqliteIndex(tmp_path / "index.db")
        first = await index.setup()
        await index.write(corpus_ops())
        again = await index.setup()
        await index.close()
        with sqlite3.connect(tmp_path / "index.db") as db:
            db.execute("PRAGMA user_version = 1")  # as an older layout would have left it
        reopened = SqliteIndex(tmp_path / "index.db")
        try:
            return first, again, await reopened.count(A), await reopened.setup()
        finally:
            await reopened.close()

    assert asyncio.run(scenario()) == (True, False, 0, True)
