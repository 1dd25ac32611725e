"""The search index seam: what the query executor needs from a backend, whatever holds the turns.

Two implementations pass one contract suite (``tests/test_index_contract.py``):
``engine.store.sqlite_index.SqliteIndex`` (embedded default, SQLite FTS5 under ``MISE_DATA_DIR``) and
``engine.store.opensearch_index.OpenSearchIndex`` (opensearch-py, async). A backend compiles a
validated ``Filter`` (``engine.search.sql`` / ``engine.search.dsl``) and answers a few primitive
questions; ``engine.search.execute`` composes them into full queries (sequences, groups, highlights,
explanations) in one place, so both backends give the same answers.

Every method is scoped to one tenant. Ordering contracts (the differential test holds both backends
to them):
- ``find``: by ``sort``, nulls last, then ``call_sid`` ascending, then ``turn_index`` ascending; the
  time sort is ``call_started_ms`` descending (nulls last), then the same tie-break.
- ``group``: calls by matching turns descending, then ``call_sid`` ascending.
- ``candidates``: by ``call_sid``, then ``turn_index``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from engine.search.query import Agg, Filter, Sort


class IndexUnavailable(Exception):
    """The backend cannot take writes or answer now (connection refused, 429, 5xx): retry later."""


@dataclass(frozen=True, slots=True)
class IndexOp:
    kind: Literal["turn", "call", "delete_call"]
    tenant: str
    doc: dict[str, Any] | None = None  # turn_document / call_document; None for delete_call
    call_sid: str | None = None  # delete_call: every document of that call

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tenant": self.tenant, "doc": self.doc, "call_sid": self.call_sid}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> IndexOp:
        return IndexOp(obj["kind"], obj["tenant"], obj.get("doc"), obj.get("call_sid"))


REQUIRED_TURN_KEYS: Final = ("doc_id", "call_sid", "turn_id", "turn_index", "start_ms", "end_ms")


def malformed(op: IndexOp) -> str | None:
    """Why an op can never be applied (every backend refuses it for good, with this reason), or None."""
    if op.kind == "delete_call":
        return None if op.call_sid else "delete_call needs a call_sid"
    doc = op.doc
    if not isinstance(doc, dict):
        return f"{op.kind} needs a document"
    if doc.get("tenant", op.tenant) != op.tenant:
        return "the document's tenant differs from the op's"
    if op.kind == "call":
        return None if doc.get("doc_id") and doc.get("call_sid") else "a call document needs doc_id and call_sid"
    missing = [k for k in REQUIRED_TURN_KEYS if doc.get(k) is None]
    return f"a turn document needs {', '.join(missing)}" if missing else None


@dataclass(frozen=True, slots=True)
class Row:
    doc: dict[str, Any]  # the flat turn document as indexed (``source`` included)
    score: float | None = None  # relevance, when the sort is relevance


# One turn matching a sequence step, just what the join needs: (call_sid, turn_index, start_ms, end_ms,
# call_started_ms). A plain tuple, not an object: a step may match thousands of turns, and tuples of plain
# values are untracked by the garbage collector (as objects living through a query they set off full
# collections of 30-50 ms every few sequence queries at 1M turns: the whole p95).
Candidate = tuple[str, int, int, int, int | None]
CALL_SID: Final = 0
TURN_INDEX: Final = 1
START_MS: Final = 2
END_MS: Final = 3
CALL_STARTED_MS: Final = 4


class SearchIndex(Protocol):
    name: str

    async def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        """Apply ops in order (a later op on the same document wins); idempotent. Returns the ops the
        backend refused for good (a document it cannot take), each with the reason; raises
        ``IndexUnavailable`` when the whole batch may succeed on a retry."""

    async def setup(self) -> bool:
        """Create what the backend needs (schema, templates, aliases) if missing; idempotent. True when
        the index was created empty (new, or rebuilt for a new layout): the caller fills it from the call
        store. Raises ``IndexUnavailable`` while the backend is away (the indexer retries it)."""

    async def refresh(self) -> None:
        """Make every write so far searchable (tests and benches; normal writes are within 1 s)."""

    async def find(self, tenant: str, f: Filter, sort: Sort, offset: int, limit: int) -> tuple[int, list[Row]]:
        """(exact number of matching turns, one page of them)."""

    async def group(
        self, tenant: str, f: Filter, min_matches: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, int]]]:
        """(number of calls with at least ``min_matches`` matching turns, one page of (call_sid, matches))."""

    async def turns_of(self, tenant: str, f: Filter, call_sids: list[str], per_call: int) -> dict[str, list[Row]]:
        """The first ``per_call`` matching turns (by turn_index) of each call."""

    async def candidates(self, tenant: str, f: Filter, cap: int) -> list[Candidate]:
        """Every matching turn; raises ``QueryError`` naming the cap when more than ``cap`` match."""

    async def get_turns(self, tenant: str, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """The documents of these (call_sid, turn_index), in any order; missing ones left out."""

    async def aggregate(self, tenant: str, f: Filter, aggs: tuple[Agg, ...]) -> dict[str, Any]:
        """Aggregations over the matching turns (``engine.search.execute`` documents the shapes)."""

    async def count(self, tenant: str, call_sid: str | None = None) -> int:
        """Turn documents of the tenant (or of one call)."""

    async def get_call(self, tenant: str, call_sid: str) -> dict[str, Any] | None:
        """The call document, or None."""

    async def close(self) -> None: ...
