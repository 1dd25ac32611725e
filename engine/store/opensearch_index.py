"""The search index on OpenSearch (opensearch-py, async): the ``SearchIndex`` seam for a cluster.

Layout: a versioned concrete index per document kind (``{prefix}-turns-v1``, ``{prefix}-calls-v1``)
behind a read alias (``{prefix}-turns``) and a write alias (``{prefix}-turns-write``), so a reindex
into ``-v2`` can swap aliases without the engine noticing. Mappings are explicit and strict: a
document with an unknown field is refused, never silently mapped. One shard, so counts, terms
aggregations and relevance statistics are exact and match the SQLite backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import TransportError

from engine.search import dsl
from engine.search import fields as F
from engine.search.documents import call_id_of, turn_id_of
from engine.search.query import MAX_LIMIT, MAX_OFFSET, Agg, Filter, QueryError, Sort
from engine.store.index import Candidate, IndexOp, IndexUnavailable, Row, malformed

REQUEST_TIMEOUT: Final = 10.0  # seconds, per HTTP request
SEARCH_TIMEOUT: Final = "9s"  # the node gives up first, so a slow search is a timed_out answer, not a hang
PAGE: Final = 5000  # candidates per search_after page
MAX_GROUP_BUCKETS: Final = MAX_OFFSET + MAX_LIMIT  # the deepest group page a cursor can ask for

_TYPES: Final = {
    F.Kind.NUMBER: "double",  # not float: both backends must compare the same float64 values
    F.Kind.INTEGER: "long",
    F.Kind.KEYWORD: "keyword",
    F.Kind.BOOLEAN: "boolean",
    F.Kind.DATE: "keyword",  # the ISO string as given; queries use call_started_ms
}
_KEYWORD: Final = {"type": "keyword"}
_STORED_ONLY: Final = {"type": "object", "enabled": False}  # the original JSON, kept but not indexed

TURN_PROPERTIES: Final[dict[str, Any]] = {
    **{name: {"type": _TYPES[kind]} for name, kind in F.FIELDS.items()},
    "tenant": _KEYWORD,
    "doc_id": _KEYWORD,
    "custom_kv": _KEYWORD,
    "call_started_ms": {"type": "long"},
    F.TEXT_FIELD: {"type": "text", "analyzer": "mise_text"},
    "source": _STORED_ONLY,
}
CALL_PROPERTIES: Final[dict[str, Any]] = {
    **{name: _KEYWORD for name in ("tenant", "doc_id", "call_sid", "from", "to", "direction", "status")},
    **{name: _KEYWORD for name in ("started_at", "ended_at", "end_reason", "custom_kv")},
    "live": {"type": "boolean"},
    "started_ms": {"type": "long"},
    "duration_ms": {"type": "long"},
    "source": _STORED_ONLY,
}
# Tokens equal SQLite FTS5 `unicode61 remove_diacritics 2` on ordinary text (engine.search.text).
_ANALYSIS: Final = {
    "tokenizer": {"mise_words": {"type": "pattern", "pattern": r"[^\p{L}\p{N}]+"}},
    "analyzer": {"mise_text": {"type": "custom", "tokenizer": "mise_words", "filter": ["lowercase", "asciifolding"]}},
}


class OpenSearchIndex:
    name = "opensearch"

    def __init__(self, url: str, *, prefix: str = "mise") -> None:
        self.url = url
        self.turns = f"{prefix}-turns"  # read alias
        self.calls = f"{prefix}-calls"
        self.prefix = prefix
        self._client: AsyncOpenSearch | None = None

    @property
    def client(self) -> AsyncOpenSearch:
        # Made on first use, inside the running loop its aiohttp session belongs to.
        if self._client is None:
            self._client = AsyncOpenSearch(hosts=[self.url], timeout=REQUEST_TIMEOUT, max_retries=0)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def setup(self) -> bool:
        """Create the templates, indices and aliases unless they exist (safe to run on every start);
        True when this call created the turns index (the caller fills it from the call store)."""
        created = False
        async with _unavailable():
            for kind, properties in (("turns", TURN_PROPERTIES), ("calls", CALL_PROPERTIES)):
                alias = f"{self.prefix}-{kind}"
                template = {
                    "index_patterns": [f"{alias}-v*"],
                    "template": {
                        "settings": {
                            "number_of_shards": 1,
                            "number_of_replicas": 0,
                            "refresh_interval": "1s",
                            "max_result_window": MAX_OFFSET + MAX_LIMIT,
                            "analysis": _ANALYSIS,
                        },
                        "mappings": {"dynamic": "strict", "properties": properties},
                    },
                }
                await self.client.indices.put_index_template(name=alias, body=template)
                if await self.client.indices.exists_alias(name=alias):
                    # Fields added since the index was made (a new turn feature): mappings only grow in place;
                    # a changed type is refused by OpenSearch and needs a new version (mise reindex).
                    await self.client.indices.put_mapping(index=alias, body={"properties": properties})
                    continue
                aliases = {alias: {}, f"{alias}-write": {"is_write_index": True}}
                try:
                    await self.client.indices.create(index=f"{alias}-v1", body={"aliases": aliases})
                    created = created or kind == "turns"
                except TransportError as e:
                    if e.error != "resource_already_exists_exception":  # another process won the race
                        raise
        return created

    # --- writes ---------------------------------------------------------------------------------

    async def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        refused: list[tuple[IndexOp, str]] = []
        batch: list[IndexOp] = []
        async with _unavailable():
            for op in ops:
                reason = malformed(op)
                if reason is not None:
                    refused.append((op, reason))
                    continue
                batch.append(op)
                if op.kind == "delete_call":
                    # Deleting a call's turns takes a search: flush what came before so op order holds.
                    refused += await self._bulk(batch)
                    batch = []
                    await self._delete_turns(op.tenant, op.call_sid or "")
            refused += await self._bulk(batch)
        return refused

    async def _bulk(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        if not ops:
            return []
        lines: list[dict[str, Any]] = []
        for op in ops:
            if op.kind != "delete_call" and op.doc is not None:  # checked by malformed; reads filter on tenant
                doc = op.doc if "tenant" in op.doc else {**op.doc, "tenant": op.tenant}
                target = self.turns if op.kind == "turn" else self.calls
                lines += [{"index": {"_index": f"{target}-write", "_id": doc["doc_id"]}}, doc]
            else:
                lines.append(
                    {"delete": {"_index": f"{self.calls}-write", "_id": call_id_of(op.tenant, op.call_sid or "")}}
                )
        answer = await self.client.bulk(body=lines)
        refused: list[tuple[IndexOp, str]] = []
        for op, item in zip(ops, answer["items"], strict=True):
            result = next(iter(item.values()))
            status, error = result.get("status", 200), result.get("error")
            if status == 429 or status >= 500:
                # The whole batch is idempotent: retrying it is how the caller recovers.
                raise IndexUnavailable(f"OpenSearch bulk item {status}: {error}")
            if error is not None:  # a delete of a missing document is 404 without an error: fine
                reason = f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict) else str(error)
                refused.append((op, reason))
        return refused

    async def _delete_turns(self, tenant: str, call_sid: str) -> None:
        """Delete every turn of a call by id. Not delete_by_query: that lives in the `reindex` module,
        which the minimal distribution lacks; a call's turns are few, so listing their ids is cheap."""
        # Searches see only refreshed documents: refresh first so turns written just now go too.
        await self.client.indices.refresh(index=self.turns)
        query = {"bool": {"filter": [{"term": {"tenant": tenant}}, {"term": {"call_sid": call_sid}}]}}
        body: dict[str, Any] = {"query": query, "sort": [{"doc_id": "asc"}], "size": PAGE, "_source": False}
        while True:
            hits = (await self.client.search(index=self.turns, body=body))["hits"]["hits"]
            lines = [{"delete": {"_index": h["_index"], "_id": h["_id"]}} for h in hits]
            if lines:
                answer = await self.client.bulk(body=lines, params={"refresh": "true"})
                failed = [i["delete"] for i in answer["items"] if i["delete"].get("error")]
                if failed:  # a delete fails only when the node is in trouble: retry the batch
                    raise IndexUnavailable(f"OpenSearch could not delete turns of {call_sid}: {failed[0]}")
            if len(hits) < PAGE:
                return
            body["search_after"] = hits[-1]["sort"]

    async def refresh(self) -> None:
        async with _unavailable():
            await self.client.indices.refresh(index=f"{self.turns},{self.calls}")

    # --- reads ----------------------------------------------------------------------------------

    async def _search(self, body: dict[str, Any], index: str | None = None) -> dict[str, Any]:
        async with _unavailable():
            answer: dict[str, Any] = await self.client.search(
                index=index or self.turns, body={"timeout": SEARCH_TIMEOUT, **body}
            )
        if answer.get("timed_out") or answer.get("_shards", {}).get("failed"):
            raise IndexUnavailable("OpenSearch answered partially (timed out or a shard failed); retry")
        return answer

    async def find(self, tenant: str, f: Filter, sort: Sort, offset: int, limit: int) -> tuple[int, list[Row]]:
        answer = await self._search(
            {
                "query": dsl.compile_filter(tenant, f),
                "sort": dsl.compile_sort(sort),
                "from": offset,
                "size": limit,
                "track_total_hits": True,
            }
        )
        relevance = sort.key == "_score"
        hits = answer["hits"]
        rows = [Row(h["_source"], float(h["_score"]) if relevance else None) for h in hits["hits"]]
        return int(hits["total"]["value"]), rows

    async def group(
        self, tenant: str, f: Filter, min_matches: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, int]]]:
        # Every qualifying call in one request (the deepest page a cursor reaches): its count is then the
        # exact total, without a second, composite pass over the matches.
        size = MAX_GROUP_BUCKETS
        calls = {
            "terms": {
                "field": "call_sid",
                "size": size,
                "min_doc_count": min_matches,
                "order": [{"_count": "desc"}, {"_key": "asc"}],
            }
        }
        answer = await self._search({"query": dsl.compile_filter(tenant, f), "size": 0, "aggs": {"calls": calls}})
        buckets = answer["aggregations"]["calls"]["buckets"]
        page = [(str(b["key"]), int(b["doc_count"])) for b in buckets[offset : offset + limit]]
        # One shard: fewer buckets than asked for means these are all the qualifying calls.
        total = len(buckets) if len(buckets) < size else await self._count_calls(tenant, f, min_matches)
        return total, page

    async def _count_calls(self, tenant: str, f: Filter, min_matches: int) -> int:
        """Exactly how many calls have at least ``min_matches`` matching turns (composite paging)."""
        total = 0
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": 10_000, "sources": [{"call_sid": {"terms": {"field": "call_sid"}}}]}
            if after is not None:
                composite["after"] = after
            answer = await self._search(
                {"query": dsl.compile_filter(tenant, f), "size": 0, "aggs": {"calls": {"composite": composite}}}
            )
            calls = answer["aggregations"]["calls"]
            total += sum(1 for b in calls["buckets"] if b["doc_count"] >= min_matches)
            after = calls.get("after_key")
            if not calls["buckets"] or after is None:
                return total

    async def turns_of(self, tenant: str, f: Filter, call_sids: list[str], per_call: int) -> dict[str, list[Row]]:
        if not call_sids:
            return {}
        query = dsl.compile_filter(tenant, f)
        query["bool"]["filter"].append({"terms": {"call_sid": call_sids}})
        first = {"top_hits": {"size": per_call, "sort": [{"turn_index": {"order": "asc"}}]}}
        calls = {"terms": {"field": "call_sid", "size": len(call_sids)}, "aggs": {"first": first}}
        answer = await self._search({"query": query, "size": 0, "aggs": {"calls": calls}})
        return {
            str(b["key"]): [Row(h["_source"]) for h in b["first"]["hits"]["hits"]]
            for b in answer["aggregations"]["calls"]["buckets"]
        }

    async def candidates(self, tenant: str, f: Filter, cap: int) -> list[Candidate]:
        body: dict[str, Any] = {
            "query": dsl.compile_filter(tenant, f),
            "sort": [{"call_sid": "asc"}, {"turn_index": "asc"}],
            "size": PAGE,
            # Doc values, not _source: no stored JSON is read or parsed per candidate (sort holds the key).
            "_source": False,
            "docvalue_fields": ["start_ms", "end_ms", "call_started_ms"],
            "track_total_hits": cap + 1,  # enough to tell "past the cap" before paging through it
        }
        out: list[Candidate] = []
        while True:
            answer = await self._search(body)
            hits = answer["hits"]
            if hits["total"]["value"] > cap:
                raise QueryError(f"a sequence step matches more than {cap} turns; narrow it")
            for h in hits["hits"]:
                (call_sid, turn_index), values = h["sort"], h["fields"]
                started = values.get("call_started_ms")
                out.append(
                    (call_sid, turn_index, values["start_ms"][0], values["end_ms"][0], started[0] if started else None)
                )
            if len(hits["hits"]) < PAGE:
                return out
            body["search_after"] = hits["hits"][-1]["sort"]

    async def get_turns(self, tenant: str, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        if not keys:
            return []
        ids = [turn_id_of(tenant, sid, index) for sid, index in keys]  # turn_id == turn_index
        async with _unavailable():
            answer = await self.client.mget(index=self.turns, body={"ids": ids})
        return [d["_source"] for d in answer["docs"] if d.get("found")]

    async def aggregate(self, tenant: str, f: Filter, aggs: tuple[Agg, ...]) -> dict[str, Any]:
        if not aggs:
            return {}
        body = {"query": dsl.compile_filter(tenant, f), "size": 0, "aggs": dsl.compile_aggs(aggs)}
        answer = await self._search(body)
        return dsl.read_aggs(aggs, answer["aggregations"])

    async def count(self, tenant: str, call_sid: str | None = None) -> int:
        filters: list[dict[str, Any]] = [{"term": {"tenant": tenant}}]
        if call_sid is not None:
            filters.append({"term": {"call_sid": call_sid}})
        async with _unavailable():
            answer = await self.client.count(index=self.turns, body={"query": {"bool": {"filter": filters}}})
        return int(answer["count"])

    async def get_call(self, tenant: str, call_sid: str) -> dict[str, Any] | None:
        async with _unavailable():
            # ignore=404: a missing call is an answer, not an error for the client to log
            answer = await self.client.get(index=self.calls, id=call_id_of(tenant, call_sid), params={"ignore": 404})
        source: dict[str, Any] | None = answer.get("_source") if answer.get("found") else None
        return source


@contextlib.asynccontextmanager
async def _unavailable() -> AsyncIterator[None]:
    """Connection failures, 429 and 5xx become IndexUnavailable (retry later); other errors stay bugs."""
    try:
        yield
    except TransportConnectionError as e:  # refused, reset, timed out: status "N/A"
        raise IndexUnavailable(f"OpenSearch unreachable: {e}") from e
    except TransportError as e:
        if isinstance(e.status_code, int) and (e.status_code == 429 or e.status_code >= 500):
            raise IndexUnavailable(f"OpenSearch answered {e.status_code}: {e.error}") from e
        raise
