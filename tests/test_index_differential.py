"""Randomized differential test: random corpora and random queries from the whole query model, run on
the embedded index and on a real OpenSearch node, must give the same hits, order, counts, groups,
sequences and aggregations.

Each example writes its corpus under fresh tenants (one index per backend for the whole test), so
examples never see each other. Relevance order is compared as a set: the two engines score with their
own BM25 statistics, by design; every other order is compared exactly. Sums and averages are compared
to 1e-9 (float addition order differs).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.search.documents import call_document, turn_document
from engine.search.execute import execute
from engine.search.fields import EMOTIONS
from engine.search.query import parse_query
from engine.store.index import IndexOp, SearchIndex
from engine.store.opensearch_index import OpenSearchIndex
from engine.store.sqlite_shards import ShardedSqliteIndex

pytestmark = pytest.mark.integration

WORDS = ["cancel", "refund", "account", "manager", "card", "cant", "card", "please", "thanks", "money"]
SPEAKERS = {"caller": "inbound", "agent": "outbound"}
LABELS = list(EMOTIONS[:4])
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(scope="module")
def backends(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, list[SearchIndex]]]:
    with asyncio.Runner() as runner:
        sqlite = ShardedSqliteIndex(Path(tmp_path_factory.mktemp("diff")) / "index")
        remote = OpenSearchIndex(opensearch_url, prefix=f"diff-{uuid.uuid4().hex[:8]}")
        runner.run(remote.setup())
        yield runner.run, [sqlite, remote]
        runner.run(sqlite.close())
        runner.run(remote.close())


# --- random corpora -------------------------------------------------------------------------------

small = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0])
maybe_small = st.one_of(st.none(), small)
ms = st.sampled_from([0, 200, 500, 1000, 2500, 4000, 6000])
text = st.one_of(st.none(), st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join))


@st.composite
def turn(draw: st.DrawFn, call_sid: str, turn_id: int, start_ms: int) -> dict[str, Any]:
    speaker = draw(st.sampled_from(sorted(SPEAKERS)))
    duration = draw(st.sampled_from([300, 1200, 3000]))
    label = draw(st.sampled_from(LABELS))
    return {
        "call_sid": call_sid,
        "stream_sid": "MZ" + call_sid,
        "turn_id": turn_id,
        "speaker": speaker,
        "track": SPEAKERS[speaker],
        "start_ms": start_ms,
        "end_ms": start_ms + duration,
        "duration_ms": duration,
        "text": draw(text),
        "backchannel": draw(st.booleans()),
        "overlap_ms": draw(ms),
        "interrupted_other": draw(st.booleans()),
        "interrupted_by_other": draw(st.booleans()),
        "gap_before_ms": draw(st.one_of(st.none(), ms)),
        "response_latency_ms": draw(st.one_of(st.none(), ms)),
        "features": {
            "pitch_mean_hz": draw(st.one_of(st.none(), st.sampled_from([90.0, 120.5, 200.0]))),
            "energy_db": draw(st.sampled_from([-40.0, -25.5, -12.0])),
            "pitch_z": draw(maybe_small),
        },
        "frustration": draw(maybe_small),
        "emotion": {"label": label, "scores": {lab: draw(small) for lab in LABELS}, "arousal": draw(small)},
    }


@st.composite
def corpus(draw: st.DrawFn) -> list[IndexOp]:
    tenant = "t" + uuid.uuid4().hex[:10]
    ops: list[IndexOp] = []
    for c in range(draw(st.integers(1, 5))):
        sid = f"CA{c}{draw(st.sampled_from('ab'))}"
        live = draw(st.booleans()) and c == 0
        n = draw(st.integers(1, 10))
        starts = [i * draw(st.sampled_from([2000, 5000])) for i in range(n)]
        call = {
            "call_sid": sid,
            "from": draw(st.sampled_from(["+1555", "+4420"])),
            "to": "+1999",
            "direction": draw(st.sampled_from(["inbound", "outbound-api"])),
            "status": "in-progress" if live else "completed",
            "live": live,
            "started_at": draw(st.sampled_from([None, "2026-03-01T10:00:00.000Z", "2026-03-02T10:00:00.000Z"])),
            "duration_ms": None if live else starts[-1] + 4000,
            "custom_parameters": draw(st.sampled_from([{}, {"campaign": "spring"}, {"campaign": "fall", "tier": "x"}])),
        }
        ops.append(IndexOp("call", tenant, call_document(tenant, call)))
        for i, start in enumerate(starts):
            ops.append(IndexOp("turn", tenant, turn_document(tenant, draw(turn(sid, i, start)), call)))
    return ops


# --- random queries from the whole model ------------------------------------------------------------

NUMERIC = [
    "frustration",
    "gap_before_ms",
    "overlap_ms",
    "pitch_mean_hz",
    "energy_db",
    "emotion_happy",
    "arousal",
    "pitch_z",
    "start_ms",
    "duration_ms",
    "ms_to_end",
    "turn_index",
    "call_duration_ms",
    "response_latency_ms",
]


@st.composite
def text_query(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["word", "phrase", "prefix", "near", "or", "not"]))
        w1, w2 = draw(st.sampled_from(WORDS)), draw(st.sampled_from(WORDS))
        parts.append(
            {
                "word": w1,
                "phrase": f'"{w1} {w2}"',
                "prefix": w1[:3] + "*",
                "or": f"{w1} OR {w2}",
                "not": f"-{w1}",
                "near": f"{w1} NEAR/{draw(st.integers(0, 3))} {w2}" if w1 != w2 else w1,
            }[kind]
        )
    return " ".join(parts)


@st.composite
def where(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["num", "kw", "bool", "custom", "date"]))
        if kind == "num":
            field = draw(st.sampled_from(NUMERIC))
            lo, hi = sorted(
                [
                    draw(small) * 6000 if field.endswith("_ms") or field in ("start_ms",) else draw(small),
                    draw(small) * 6000 if field.endswith("_ms") else draw(small),
                ]
            )
            if field in ("pitch_mean_hz",):
                lo, hi = 100.0, 250.0
            if field == "energy_db":
                lo, hi = -30.0, 0.0
            if field == "turn_index":
                lo, hi = 1, 4
            out[field] = draw(
                st.sampled_from([{"gte": lo}, {"lte": hi}, {"gt": lo, "lte": hi}, {"gte": lo, "lt": hi + 1}])
            )
        elif kind == "kw":
            field = draw(st.sampled_from(["speaker", "emotion", "direction", "from"]))
            values = {
                "speaker": ["caller", "agent"],
                "emotion": LABELS,
                "direction": ["inbound", "outbound-api"],
                "from": ["+1555", "+4420"],
            }[field]
            out[field] = draw(
                st.one_of(st.sampled_from(values), st.lists(st.sampled_from(values), min_size=1, max_size=2))
            )
        elif kind == "bool":
            out[draw(st.sampled_from(["interrupted_other", "interrupted_by_other", "backchannel"]))] = draw(
                st.booleans()
            )
        elif kind == "custom":
            out["custom.campaign"] = draw(st.sampled_from(["spring", "fall"]))
        else:
            out["call_started_at"] = {"gte": "2026-03-02T00:00:00Z"}
    return out


@st.composite
def turn_filter(draw: st.DrawFn) -> dict[str, Any]:
    q: dict[str, Any] = {"where": draw(where())}
    if draw(st.booleans()):
        q["text"] = draw(text_query())
    position = draw(st.sampled_from([None, "first_s", "last_s"]))
    if position:
        q[position] = draw(st.sampled_from([5, 10, 30]))
    return q


@st.composite
def step(draw: st.DrawFn) -> dict[str, Any]:
    """A sequence step: a speaker and at most one more condition, so chains are found often enough."""
    s: dict[str, Any] = {"speaker": draw(st.sampled_from(sorted(SPEAKERS)))}
    extra = draw(st.sampled_from(["none", "where", "text"]))
    if extra == "where":
        s["where"] = draw(where().filter(lambda w: len(w) <= 1 and "speaker" not in w))
    elif extra == "text":
        s["text"] = draw(st.sampled_from(WORDS))
    return s


@st.composite
def query(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.sampled_from(["turns", "turns", "grouped", "sequence", "sequence", "aggs"]))
    if shape == "sequence":
        steps = [draw(step()) for _ in range(draw(st.integers(2, 3)))]
        for s in steps[1:]:
            s.update(
                draw(st.sampled_from([{}, {"within_turns": 2}, {"within_s": 3}, {"within_turns": 3, "within_s": 10}]))
            )
        q: dict[str, Any] = {"sequence": steps, "limit": draw(st.sampled_from([3, 50]))}
        if draw(st.booleans()):
            q["group_by"] = "call"
        return q
    q = draw(turn_filter())
    if shape == "grouped":
        q.update(group_by="call", min_matches=draw(st.integers(1, 3)), limit=draw(st.sampled_from([2, 50])))
    elif shape == "aggs":
        q["limit"] = 0
        q["aggs"] = {
            "terms": {
                "terms": draw(st.sampled_from(["emotion", "speaker", "call_sid", "interrupted_other"])),
                "size": draw(st.sampled_from([2, 10])),
                "stats": draw(st.sampled_from(NUMERIC)),
            },
            "hist": {
                "histogram": draw(st.sampled_from(["frustration", "gap_before_ms", "energy_db"])),
                "interval": draw(st.sampled_from([0.2, 250.0, 7.5])),
            },
            "stats": {"stats": draw(st.sampled_from([*NUMERIC, "backchannel"]))},
        }
    else:
        q["sort"] = draw(
            st.sampled_from(
                [
                    "time",
                    "relevance" if q.get("text") else "time",
                    "-frustration",
                    "frustration",
                    "gap_before_ms",
                    "-call_started_at",
                    "speaker",
                    "-energy_db",
                ]
            )
        )
        q["limit"] = draw(st.sampled_from([3, 50]))
        q["explain"] = True
    return q


def _valid(q: dict[str, Any]) -> bool:
    try:
        parse_query(q)
    except ValueError:
        return False
    return True


def _same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{path}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            if k != "score":
                _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _pages(run: Run, index: SearchIndex, tenant: str, q: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of the query (following next_cursor), so cursors are compared too."""
    pages = []
    cursor = None
    for _ in range(20):
        page = run(execute(index, tenant, parse_query({**q, "cursor": cursor} if cursor else q)))
        pages.append(page)
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return pages


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(ops=corpus(), queries=st.lists(query().filter(_valid), min_size=3, max_size=3))
def test_both_backends_answer_every_query_alike(
    backends: tuple[Run, list[SearchIndex]], ops: list[IndexOp], queries: list[dict[str, Any]]
) -> None:
    run, (sqlite, remote) = backends
    tenant = ops[0].tenant
    for index in (sqlite, remote):
        assert run(index.write(ops)) == []
        run(index.refresh())
    for q in queries:
        a, b = _pages(run, sqlite, tenant, q), _pages(run, remote, tenant, q)
        if q.get("sort") == "relevance" or (q.get("text") and "sort" not in q and not q.get("group_by")):
            # same hits, scored by each engine's own statistics: compare as sets, totals exactly
            assert [p["total"] for p in a] == [p["total"] for p in b]
            a_hits = sorted((h for p in a for h in p["hits"]), key=lambda h: h["id"])
            b_hits = sorted((h for p in b for h in p["hits"]), key=lambda h: h["id"])
            _same(a_hits, b_hits, "hits")
        else:
            _same(a, b, "pages")
