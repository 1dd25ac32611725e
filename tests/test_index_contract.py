"""The search index contract: one suite, every backend, hand-counted answers on tests/index_corpus.py.

Each test runs against SQLite (a file per index) and OpenSearch (a real node from tests/conftest.py, an
index prefix per index). Queries go through ``parse_query`` and ``execute`` as the API sends them, so the
answers are the API's; a few tests call the primitives directly where the executor hides them (the cap,
``get_turns``, ``count``). Expected ids are written ``CALL:turn`` in the order the query returns them;
the time order of acme's calls is CA2, CA1, CA4 (newest first), then CA3 (no start time).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.search.execute import execute
from engine.search.query import TIME, Filter, QueryError, Range, parse_query
from engine.store.index import IndexOp, SearchIndex
from engine.store.opensearch_index import OpenSearchIndex
from engine.store.sqlite_index import SqliteIndex
from engine.store.sqlite_shards import ShardedSqliteIndex
from tests.index_corpus import A, B, corpus_ops, turn_count, turn_op, turn_payload

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


class Harness:
    """An index holding the corpus, and a loop to drive it (one loop per module: clients bind to it)."""

    def __init__(self, index: SearchIndex, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self.index = index
        self.run = run

    def q(self, query: dict[str, Any], tenant: str = A) -> dict[str, Any]:
        out: dict[str, Any] = self.run(execute(self.index, tenant, parse_query(query)))
        return out

    def ids(self, query: dict[str, Any], tenant: str = A) -> list[str]:
        return [f"{h['call_sid']}:{h['turn_id']}" for h in self.q({"limit": 50, **query}, tenant)["hits"]]

    def write(self, ops: list[IndexOp]) -> None:
        assert self.run(self.index.write(ops)) == []
        self.run(self.index.refresh())


@pytest.fixture(scope="module")
def aio() -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture(scope="module", params=["sqlite", pytest.param("opensearch", marks=pytest.mark.integration)])
def make_index(
    request: pytest.FixtureRequest,
    aio: Callable[[Coroutine[Any, Any, Any]], Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], Harness]]:
    """A factory of empty indices of one backend (each test that writes gets its own)."""
    created: list[SearchIndex] = []
    if request.param == "sqlite":
        base = tmp_path_factory.mktemp("sqlite-index")

        def make() -> SearchIndex:
            return ShardedSqliteIndex(base / f"index-{len(created)}")  # as the server opens it

    else:
        url = request.getfixturevalue("opensearch_url")
        module_prefix = f"contract-{uuid.uuid4().hex[:8]}"

        def make() -> SearchIndex:
            index = OpenSearchIndex(url, prefix=f"{module_prefix}-{len(created)}")
            aio(index.setup())
            return index

    def harness() -> Harness:
        index = make()
        created.append(index)
        aio(index.setup())  # idempotent: a second call changes nothing
        h = Harness(index, aio)
        h.write(corpus_ops())
        return h

    yield harness
    for index in created:
        aio(index.close())


@pytest.fixture(scope="module")
def corpus(make_index: Callable[[], Harness]) -> Harness:
    """The corpus, shared by the read-only tests."""
    return make_index()


@pytest.fixture
def fresh(make_index: Callable[[], Harness]) -> Harness:
    """The corpus in an index of its own, for a test that changes it."""
    return make_index()


# --- text ---------------------------------------------------------------------------------------

CANCEL = ["CA2:3", "CA1:1", "CA1:2", "CA4:0"]
NOT_CANCEL = ["CA2:0", "CA2:1", "CA2:2", "CA2:4", "CA2:5", "CA1:0", "CA1:3", "CA1:4", "CA1:5", "CA4:1"]
NOT_CANCEL += ["CA3:0", "CA3:1", "CA3:2", "CA3:3"]  # CA3:2 has no text at all: nothing to exclude


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cancel", CANCEL),
        ("CANCEL", CANCEL),
        ("refund", ["CA1:3", "CA1:4", "CA3:1"]),  # "refunds" is another word
        ("refun*", ["CA2:5", "CA1:3", "CA1:4", "CA3:1"]),
        ("cancel account", ["CA1:1", "CA1:2"]),
        ('"cancel my account"', ["CA1:1"]),
        ('"my cancel account"', []),
        ("cancel OR refund", ["CA2:3", "CA1:1", "CA1:2", "CA1:3", "CA1:4", "CA4:0", "CA3:1"]),
        ("help OR billing refund", ["CA3:1"]),  # (help OR billing) AND refund
        ("cancel -account", ["CA2:3", "CA4:0"]),
        ('help -"how can"', ["CA1:2", "CA3:1"]),
        ("-cancel", NOT_CANCEL),
        ("cancel NEAR/1 account", ["CA1:1", "CA1:2"]),  # one word between, either turn
        ("account NEAR/1 cancel", ["CA1:1", "CA1:2"]),  # either order
        ("cancel NEAR/0 account", []),
        ("cafe", ["CA3:0"]),  # the index folds "Café"
        ("Café billing", ["CA3:0"]),
        ("don't", []),
    ],
)
def test_text(corpus: Harness, text: str, expected: list[str]) -> None:
    assert corpus.ids({"text": text, "sort": "time"}) == expected
    assert corpus.q({"text": text, "limit": 1})["total"] == len(expected)


# --- conditions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"where": {"emotion": ["angry", "sad"]}}, ["CA2:1", "CA2:3", "CA1:1", "CA1:3", "CA4:0", "CA3:2"]),
        ({"where": {"frustration": {"gte": 0.5}}}, ["CA2:1", "CA2:3", "CA1:1", "CA1:3", "CA3:2"]),
        ({"where": {"frustration": {"gt": 0.5, "lt": 0.9}}}, ["CA1:3", "CA3:2"]),
        ({"where": {"frustration": 0.5}}, ["CA2:1", "CA1:1"]),
        ({"where": {"interrupted_other": True}}, ["CA2:3", "CA1:2"]),
        ({"where": {"custom.campaign": "spring"}}, ["CA1:0", "CA1:1", "CA1:2", "CA1:3", "CA1:4", "CA1:5"]),
        (
            {"where": {"custom.campaign": ["spring", "summer"]}, "speaker": "caller"},
            ["CA2:1", "CA2:3", "CA2:5", "CA1:1", "CA1:3", "CA1:5"],
        ),
        ({"where": {"custom.tier": "gold", "turn_index": {"gte": 4}}}, ["CA1:4", "CA1:5"]),
        ({"where": {"custom.campaign": "gold"}}, []),  # a value of another parameter
        ({"where": {"call_started_at": {"gte": "2026-03-01T00:00:00Z"}, "turn_index": 0}}, ["CA2:0", "CA1:0"]),
        ({"where": {"call.started_at": {"lt": "2026-03-01T10:00:00Z"}}}, ["CA4:0", "CA4:1"]),
        (
            {"where": {"call_started_at": {"lte": "2026-03-01T10:00:00Z"}}, "speaker": "agent"},
            ["CA1:0", "CA1:2", "CA1:4", "CA4:1"],
        ),
        ({"where": {"direction": "outbound-api", "features.pitch_mean_hz": {"gte": 175}}}, ["CA2:3", "CA2:5"]),
        ({"where": {"call.from": "+15550003"}}, ["CA3:0", "CA3:1", "CA3:2", "CA3:3"]),
        ({"where": {"emotion.scores.angry": {"gt": 0.5}}}, ["CA2:3", "CA1:1", "CA1:3", "CA4:0", "CA3:2"]),
        (
            {"where": {"gap_before_ms": 1000, "response_latency_ms": {"gte": 1}}},
            ["CA2:2", "CA2:4", "CA1:2", "CA1:4", "CA4:1", "CA3:1", "CA3:3"],
        ),
        ({"where": {"ms_to_end": {"lte": 5000}}}, ["CA2:5", "CA3:3"]),  # the live CA4 has no end yet
        ({"first_s": 5, "speaker": "agent"}, ["CA2:0", "CA1:0", "CA4:1", "CA3:1"]),
        ({"last_s": 16}, ["CA2:3", "CA2:4", "CA2:5", "CA1:5", "CA3:1", "CA3:2", "CA3:3"]),
        ({"text": "cancel", "speaker": "caller"}, ["CA2:3", "CA1:1", "CA4:0"]),
        ({"text": "-cancel", "speaker": "caller"}, ["CA2:1", "CA2:5", "CA1:3", "CA1:5", "CA3:0", "CA3:2"]),
    ],
)
def test_conditions(corpus: Harness, query: dict[str, Any], expected: list[str]) -> None:
    assert corpus.ids({**query, "sort": "time"}) == expected


def test_boolean_and_keyword_totals(corpus: Harness) -> None:
    assert corpus.q({"speaker": "caller"})["total"] == 9
    assert corpus.q({"where": {"interrupted_other": False}})["total"] == 16
    assert corpus.q({"where": {"speaker": ["caller", "agent"]}})["total"] == 18


# --- sorting and paging -------------------------------------------------------------------------

BY_FRUSTRATION_DESC = ["CA2:3", "CA1:3", "CA3:2", "CA1:1", "CA2:1", "CA4:0", "CA2:5", "CA3:0", "CA1:5"]
AGENTS = ["CA1:0", "CA1:2", "CA1:4", "CA2:0", "CA2:2", "CA2:4", "CA3:1", "CA3:3", "CA4:1"]  # null frustration
TIME_ORDER = [f"CA2:{i}" for i in range(6)] + [f"CA1:{i}" for i in range(6)] + ["CA4:0", "CA4:1"]
TIME_ORDER += [f"CA3:{i}" for i in range(4)]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-frustration", BY_FRUSTRATION_DESC + AGENTS),  # 0.5 twice: CA1 before CA2; nulls last
        ("frustration", ["CA1:5", "CA3:0", "CA2:5", "CA4:0", "CA1:1", "CA2:1", "CA3:2", "CA1:3", "CA2:3", *AGENTS]),
        ("time", TIME_ORDER),
        ("-call_started_at", TIME_ORDER),
        ("call_started_at", TIME_ORDER[12:14] + TIME_ORDER[6:12] + TIME_ORDER[:6] + TIME_ORDER[14:]),
        ("speaker", [*AGENTS, "CA1:1", "CA1:3", "CA1:5", "CA2:1", "CA2:3", "CA2:5", "CA3:0", "CA3:2", "CA4:0"]),
    ],
)
def test_sort(corpus: Harness, sort: str, expected: list[str]) -> None:
    assert corpus.ids({"sort": sort}) == expected


def test_sort_by_a_number_breaks_ties_by_call_and_turn(corpus: Harness) -> None:
    got = corpus.ids({"speaker": "caller", "sort": "-features.pitch_mean_hz"})  # 150 + 10 * turn
    assert got == ["CA1:5", "CA2:5", "CA1:3", "CA2:3", "CA3:2", "CA1:1", "CA2:1", "CA3:0", "CA4:0"]


def test_relevance(corpus: Harness) -> None:
    out = corpus.q({"text": "refund"}, tenant=B)
    assert [h["turn_id"] for h in out["hits"]] == [0, 1]  # "refund" three times in four words ranks first
    scores = [h["score"] for h in out["hits"]]
    assert all(isinstance(s, float) for s in scores) and scores[0] > scores[1]
    assert all(h["score"] is None for h in corpus.q({"text": "refund", "sort": "time"})["hits"])


def test_cursor_pages_cover_the_result_once(corpus: Harness) -> None:
    seen: list[str] = []
    query: dict[str, Any] = {"sort": "-frustration", "limit": 5}
    pages = 0
    while True:
        out = corpus.q(query)
        assert out["total"] == 18
        seen += [f"{h['call_sid']}:{h['turn_id']}" for h in out["hits"]]
        pages += 1
        if out["next_cursor"] is None:
            break
        query = {**query, "cursor": out["next_cursor"]}
    assert pages == 4 and seen == BY_FRUSTRATION_DESC + AGENTS


def test_find_pages_directly(corpus: Harness) -> None:
    total, rows = corpus.run(corpus.index.find(A, Filter(), TIME, 16, 5))
    assert total == 18 and [(r.doc["call_sid"], r.doc["turn_index"]) for r in rows] == [("CA3", 2), ("CA3", 3)]
    total, rows = corpus.run(corpus.index.find(A, Filter(), TIME, 0, 0))
    assert (total, rows) == (18, [])


# --- groups -------------------------------------------------------------------------------------


def test_group_by_call(corpus: Harness) -> None:
    out = corpus.q({"text": "cancel OR refund", "group_by": "call"})
    assert out["total_calls"] == 4
    assert [(g["call_sid"], g["matches"]) for g in out["groups"]] == [("CA1", 4), ("CA2", 1), ("CA3", 1), ("CA4", 1)]
    first = out["groups"][0]
    assert [h["turn_id"] for h in first["hits"]] == [1, 2, 3]  # turns_per_group defaults to 3
    assert first["call"]["custom_parameters"] == {"campaign": "spring", "tier": "gold"}
    assert first["call"]["from"] == "+15550001"

    two = corpus.q({"text": "cancel OR refund", "group_by": "call", "min_matches": 2, "turns_per_group": 1})
    assert two["total_calls"] == 1 and [(g["call_sid"], [h["turn_id"] for h in g["hits"]]) for g in two["groups"]] == [
        ("CA1", [1])
    ]


def test_group_pages(corpus: Harness) -> None:
    query: dict[str, Any] = {"speaker": "caller", "group_by": "call", "limit": 2}
    first = corpus.q(query)
    assert first["total_calls"] == 4 and [(g["call_sid"], g["matches"]) for g in first["groups"]] == [
        ("CA1", 3),
        ("CA2", 3),
    ]
    second = corpus.q({**query, "cursor": first["next_cursor"]})
    assert [(g["call_sid"], g["matches"]) for g in second["groups"]] == [("CA3", 2), ("CA4", 1)]
    assert second["next_cursor"] is None


def test_turns_of(corpus: Harness) -> None:
    f = parse_query({"speaker": "caller"}).filter
    rows = corpus.run(corpus.index.turns_of(A, f, ["CA2", "CA9"], 2))
    assert [r.doc["turn_index"] for r in rows["CA2"]] == [1, 3] and not rows.get("CA9")


# --- sequences ----------------------------------------------------------------------------------


def _chains(out: dict[str, Any]) -> list[list[str]]:
    return [[f"{h['call_sid']}:{h['turn_id']}" for h in s["hits"]] for s in out["sequences"]]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            [{"text": "cancel", "speaker": "caller"}, {"speaker": "agent"}],
            [["CA2:3", "CA2:4"], ["CA1:1", "CA1:2"], ["CA4:0", "CA4:1"]],
        ),
        ([{"text": "cancel"}, {"text": "refund", "within_turns": 2}], [["CA1:1", "CA1:3"], ["CA1:2", "CA1:3"]]),
        ([{"text": "cancel"}, {"text": "refund", "within_s": 2}], [["CA1:2", "CA1:3"]]),  # 1 s after CA1:2 ended
        ([{"text": "cancel"}, {"text": "refund", "within_s": 7}], [["CA1:1", "CA1:3"], ["CA1:2", "CA1:3"]]),
        ([{"text": "refund"}, {"text": "cancel"}], []),
    ],
)
def test_sequences(corpus: Harness, steps: list[dict[str, Any]], expected: list[list[str]]) -> None:
    out = corpus.q({"sequence": steps})
    assert out["total"] == len(expected) and _chains(out) == expected


def test_sequences_grouped_and_in_another_tenant(corpus: Harness) -> None:
    steps = [{"speaker": "caller"}, {"speaker": "agent"}]
    out = corpus.q({"sequence": steps, "group_by": "call", "min_matches": 2})
    assert out["total_calls"] == 3
    assert [(g["call_sid"], g["matches"]) for g in out["groups"]] == [("CA1", 2), ("CA2", 2), ("CA3", 2)]
    other = corpus.q({"sequence": [{"text": "refund"}, {"text": "cancel"}]}, tenant=B)
    assert _chains(other) == [["CA1:0", "CA1:1"]]


def test_candidates_and_the_cap(corpus: Harness) -> None:
    everything = corpus.run(corpus.index.candidates(A, Filter(), 18))
    assert [c[:2] for c in everything][:7] == [("CA1", i) for i in range(6)] + [("CA2", 0)]
    assert len(everything) == 18
    assert everything[1] == (
        "CA1",
        1,
        5000,
        9000,
        1772359200000,
    )  # (call, turn, start, end, call start 2026-03-01T10:00Z)
    assert everything[12] == ("CA3", 0, 0, 4000, None)
    with pytest.raises(QueryError, match="more than 17 turns"):
        corpus.run(corpus.index.candidates(A, Filter(), 17))


# --- aggregations -------------------------------------------------------------------------------


def test_aggregations(corpus: Harness) -> None:
    aggs = {
        "emotions": {"terms": "emotion", "size": 2, "stats": "frustration"},
        "interrupting": {"terms": "interrupted_other"},
        "frustration": {"histogram": "frustration", "interval": 0.25},
        "starts": {"histogram": "start_ms", "interval": 10000},
        "f": {"stats": "frustration"},
        "rate": {"stats": "interrupted_other"},
    }
    out = corpus.q({"aggs": aggs, "limit": 0})
    assert out["total"] == 18 and out["hits"] == []
    got = out["aggs"]
    emotions = got["emotions"]
    assert [(b["key"], b["count"]) for b in emotions["buckets"]] == [("neutral", 10), ("angry", 5)]
    assert emotions["other"] == 3  # happy 2, sad 1
    neutral, angry = (b["stats"] for b in emotions["buckets"])
    assert neutral == pytest.approx({"count": 2, "min": 0.2, "max": 0.3, "avg": 0.25, "sum": 0.5})
    assert angry == pytest.approx({"count": 5, "min": 0.4, "max": 0.9, "avg": 0.62, "sum": 3.1})
    assert got["interrupting"] == {"buckets": [{"key": False, "count": 16}, {"key": True, "count": 2}], "other": 0}
    assert got["frustration"] == {
        "interval": 0.25,
        "buckets": [
            {"key": 0.0, "count": 2},
            {"key": 0.25, "count": 2},
            {"key": 0.5, "count": 4},
            {"key": 0.75, "count": 1},
        ],
    }
    assert got["starts"]["buckets"] == [
        {"key": 0.0, "count": 8},
        {"key": 10000.0, "count": 6},
        {"key": 20000.0, "count": 4},
    ]
    assert got["f"] == pytest.approx({"count": 9, "min": 0.1, "max": 0.9, "avg": 4.2 / 9, "sum": 4.2})
    assert got["rate"] == pytest.approx({"count": 18, "min": 0.0, "max": 1.0, "avg": 2 / 18, "sum": 2.0})


def test_aggregations_follow_the_filter(corpus: Harness) -> None:
    out = corpus.q({"text": "cancel", "aggs": {"who": {"terms": "speaker"}}, "limit": 0})
    assert out["aggs"]["who"] == {"buckets": [{"key": "caller", "count": 3}, {"key": "agent", "count": 1}], "other": 0}
    calls = corpus.q({"speaker": "caller", "aggs": {"c": {"terms": "call_sid", "size": 3}}, "limit": 0})["aggs"]["c"]
    assert calls == {
        "buckets": [{"key": "CA1", "count": 3}, {"key": "CA2", "count": 3}, {"key": "CA3", "count": 2}],
        "other": 1,
    }
    aggs = {"s": {"stats": "frustration"}, "t": {"terms": "emotion"}, "h": {"histogram": "frustration", "interval": 1}}
    none = corpus.q({"where": {"turn_index": {"gte": 100}}, "aggs": aggs, "limit": 0})
    assert none["total"] == 0
    assert none["aggs"]["s"] == {"count": 0, "min": None, "max": None, "avg": None, "sum": 0.0}
    assert none["aggs"]["t"] == {"buckets": [], "other": 0}
    assert none["aggs"]["h"]["buckets"] == []


# --- hits: explain, highlight, documents --------------------------------------------------------


def test_explain_and_highlight(corpus: Harness) -> None:
    out = corpus.q({"text": "cancel account", "speaker": "caller", "explain": True})
    assert out["total"] == 1
    hit = out["hits"][0]
    assert hit["id"] == "CA1:1" and hit["highlight"] == "I want to <em>cancel</em> my <em>account</em>"
    assert hit["explain"] == ["text: cancel, account", "speaker = caller"]
    assert hit["turn"] == turn_payload(A, "CA1", 1)  # the stored turn, exactly as written
    assert hit["call"]["call_started_at"] == "2026-03-01T10:00:00.000Z"
    assert hit["call"]["custom_parameters"] == {"campaign": "spring", "tier": "gold"}

    prefix = corpus.q({"text": "refun*", "speaker": "caller", "sort": "time"})["hits"][0]
    assert prefix["highlight"] == "<em>refunds</em> please"
    plain = corpus.q({"where": {"frustration": {"gte": 0.9}}, "explain": True})["hits"][0]
    assert plain["id"] == "CA2:3" and plain["explain"] == ["frustration >= 0.9 (0.9)"] and "highlight" not in plain
    assert "highlight" not in corpus.q({"text": "cancel", "highlight": False})["hits"][0]


def test_documents_come_back_as_written(corpus: Harness) -> None:
    docs = corpus.run(corpus.index.get_turns(A, [("CA3", 2), ("CA3", 0), ("CA9", 0)]))
    by_turn = {d["turn_index"]: d for d in docs}
    assert sorted(by_turn) == [0, 2]
    silent = by_turn[2]
    assert silent["text"] is None and silent["call_started_at"] is None and silent["call_started_ms"] is None
    assert silent["source"] == turn_payload(A, "CA3", 2) and silent["custom_kv"] == []
    assert by_turn[0]["text"] == "Café problems with billing" and by_turn[0]["interrupted_other"] is False
    call = corpus.run(corpus.index.get_call(A, "CA1"))
    assert call is not None and call["custom_kv"] == ["campaign=spring", "tier=gold"]
    assert call["started_ms"] == 1772359200000 and call["source"]["duration_ms"] == 40000


# --- tenants ------------------------------------------------------------------------------------


def test_tenants_never_see_each_other(corpus: Harness) -> None:
    assert corpus.ids({"text": "refund", "sort": "time"}, tenant=B) == ["CA1:0", "CA1:1"]
    assert corpus.q({"text": "refund"})["total"] == 3
    assert corpus.q({"text": "hello there"}, tenant=A)["total"] == 0
    assert corpus.q({"text": "-zzz"}, tenant=B)["total"] == 3
    grouped = corpus.q({"group_by": "call"}, tenant=B)
    assert grouped["total_calls"] == 2 and [(g["call_sid"], g["matches"]) for g in grouped["groups"]] == [
        ("CA1", 2),
        ("CB2", 1),
    ]
    aggs = corpus.q({"aggs": {"who": {"terms": "speaker"}, "f": {"stats": "frustration"}}, "limit": 0}, tenant=B)
    assert aggs["aggs"]["who"]["buckets"] == [{"key": "caller", "count": 2}, {"key": "agent", "count": 1}]
    assert aggs["aggs"]["f"] == pytest.approx({"count": 2, "min": 0.1, "max": 0.8, "avg": 0.45, "sum": 0.9})
    run, index = corpus.run, corpus.index
    assert (run(index.count(A)), run(index.count(B)), run(index.count("initech"))) == (18, 3, 0)
    assert (run(index.count(A, "CA1")), run(index.count(B, "CA1"))) == (6, 2)
    b_call, a_call = run(index.get_call(B, "CA1")), run(index.get_call(A, "CA1"))
    assert b_call is not None and a_call is not None and (b_call["from"], a_call["from"]) == ("+15559001", "+15550001")
    assert run(index.get_call(A, "CB2")) is None
    docs = run(index.get_turns(B, [("CA1", 0), ("CA2", 0)]))
    assert [d["text"] for d in docs] == ["refund refund refund now"]
    assert [c[:2] for c in run(index.candidates(B, Filter(), 10))] == [
        ("CA1", 0),
        ("CA1", 1),
        ("CB2", 0),
    ]
    assert corpus.q({"text": "refund"}, tenant="initech") == {"total": 0, "hits": [], "next_cursor": None}
    # highlights come from the tenant's own turns only; a word only B said finds nothing for A
    b_hits = corpus.q({"text": "refund", "sort": "time"}, tenant=B)["hits"]
    assert [h["highlight"] for h in b_hits] == [
        "<em>refund</em> <em>refund</em> <em>refund</em> now",
        "cancel the <em>refund</em> account",
    ]
    assert corpus.q({"text": "now"}, tenant=A)["total"] == 0 and corpus.q({"text": "now"}, tenant=B)["total"] == 1


# --- writes -------------------------------------------------------------------------------------


def test_writing_twice_changes_nothing_and_a_new_text_replaces_the_old(fresh: Harness) -> None:
    fresh.write(corpus_ops())
    run, index = fresh.run, fresh.index
    assert (run(index.count(A)), run(index.count(B))) == (turn_count(A), turn_count(B)) == (18, 3)
    assert fresh.q({"text": "refund"})["total"] == 3 and fresh.q({"text": "cancel"})["total"] == 4

    fresh.write([turn_op(A, "CA1", 5, text="thanks bye now")])
    assert fresh.q({"text": "goodbye"})["total"] == 0
    assert fresh.ids({"text": "bye"}) == ["CA1:5"] and run(index.count(A)) == 18
    assert fresh.q({"text": "-goodbye"})["total"] == 18

    # In one batch the later op wins.
    fresh.write([turn_op(A, "CA1", 5, text="alpha"), turn_op(A, "CA1", 5, text="omega")])
    assert fresh.q({"text": "alpha OR bye"})["total"] == 0 and fresh.ids({"text": "omega"}) == ["CA1:5"]
    assert fresh.q({"where": {"turn_index": 5}, "speaker": "caller"})["total"] == 2


def test_delete_call_removes_everything_of_that_call(fresh: Harness) -> None:
    fresh.write([IndexOp("delete_call", A, call_sid="CA1")])
    run, index = fresh.run, fresh.index
    assert (run(index.count(A)), run(index.count(A, "CA1"))) == (12, 0)
    assert run(index.get_call(A, "CA1")) is None
    assert fresh.ids({"text": "refund", "sort": "time"}) == ["CA3:1"]
    assert fresh.q({"where": {"custom.campaign": "spring"}})["total"] == 0
    assert [g["call_sid"] for g in fresh.q({"group_by": "call"})["groups"]] == ["CA2", "CA3", "CA4"]
    # globex's call of the same SID stays.
    assert run(index.count(B, "CA1")) == 2 and fresh.q({"text": "refund"}, tenant=B)["total"] == 2
    fresh.write([turn_op(A, "CA1", 3)])
    assert fresh.ids({"text": "refund", "sort": "time"}) == ["CA1:3", "CA3:1"]


# --- SQLite only --------------------------------------------------------------------------------


def test_sqlite_refuses_documents_missing_keys_and_keeps_fts_in_step(tmp_path: Path) -> None:
    async def scenario() -> None:
        index = SqliteIndex(tmp_path / "i.db")
        try:
            assert await index.write(corpus_ops()) == []
            broken = IndexOp("turn", A, {"doc_id": "acme:CA9:0", "tenant": A})
            refused = await index.write([broken, turn_op(A, "CA1", 0, text="replaced words")])
            assert [(op.doc or {}).get("doc_id") for op, _ in refused] == ["acme:CA9:0"]
            assert "call_sid" in refused[0][1] and await index.count(A) == 18
            await index.write([IndexOp("delete_call", A, call_sid="CA2")])
            db = index._writer  # the FTS table's own check: every entry matches its row's text
            db.execute("INSERT INTO turns_fts (turns_fts, rank) VALUES ('integrity-check', 1)")
            # One entry per row (CA3:2's without text too): 21 turns less CA2's 6.
            assert db.execute("SELECT COUNT(*) FROM turns_fts_docsize").fetchone()[0] == 15
        finally:
            await index.close()

    asyncio.run(scenario())


def test_sqlite_query_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        index = SqliteIndex(tmp_path / "i.db", timeout_s=0.0)
        try:
            many = []
            for i in range(3000):  # enough rows that counting them takes many progress-handler steps
                doc = dict(turn_op(A, "CA1", 1).doc or {})
                many.append(IndexOp("turn", A, {**doc, "doc_id": f"{A}:CX{i}:1", "call_sid": f"CX{i}"}))
            await index.write(many)
            with pytest.raises(QueryError, match="took too long"):
                await index.find(A, Filter((Range("frustration", gte=0.0),)), TIME, 0, 10)
        finally:
            await index.close()

    asyncio.run(scenario())
