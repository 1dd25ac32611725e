"""``SqliteIndex``: the embedded search index, SQLite with an FTS5 table over turn text.

The layout is ``engine.store.sqlite_schema``'s, the write path ``engine.store.sqlite_write``'s; this
module answers the executor's questions (``engine.store.index.SearchIndex``). WAL lets a few read
connections answer while the one writer commits; writes are searchable once committed, so ``refresh``
has nothing to do. Blocking work runs in threads; each read has a deadline (a progress handler), past
which it is a ``QueryError``. ``bulk()`` loads many documents faster (``mise import``, benches).
"""

from __future__ import annotations

import asyncio
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from engine.search import fields as F
from engine.search import sql as S
from engine.search.documents import turn_id_of
from engine.search.query import MAX_BUCKETS, Agg, Filter, QueryError, Sort
from engine.store import sqlite_write
from engine.store.index import Candidate, IndexOp, IndexUnavailable, Row
from engine.store.sqlite_schema import BOOLEANS, DOC_COLUMNS, SELECT_DOC, WITH_SOURCE, connect, create
from engine.store.sqlite_write import BulkLoader

T = TypeVar("T")
_TOO_LONG: Final = "the query took too long; narrow it"


class _Reader:
    """One read connection with its own deadline, enforced by a progress handler."""

    def __init__(self, path: str) -> None:
        self.conn = connect(path)
        self.conn.execute("PRAGMA query_only = ON")
        self.deadline = math.inf
        # Checked every few thousand VM steps (well under a millisecond), so an abort lands on time.
        self.conn.set_progress_handler(self._expired, 4000)

    def _expired(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0


class SqliteIndex:
    """``SearchIndex`` over one SQLite file at ``path``; ``timeout_s`` bounds each read (seconds)."""

    name = "sqlite"

    def __init__(self, path: str | Path, *, readers: int = 4, timeout_s: float = 2.0) -> None:
        self._path = str(path)
        self._timeout_s = timeout_s
        self._writer = connect(self._path)
        self._fresh = create(self._writer)
        self._write_lock = threading.Lock()
        self._numbers: dict[str, int] = {}  # tenant -> its number (rowid range), once written
        self._readers: queue.Queue[_Reader] = queue.Queue()
        self._all_readers = [_Reader(self._path) for _ in range(max(1, readers))]
        for reader in self._all_readers:
            self._readers.put(reader)

    # --- plumbing -----------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        reader = self._readers.get()
        try:
            reader.deadline = time.monotonic() + self._timeout_s
            reader.conn.execute("BEGIN")  # one snapshot for a count and its page
            try:
                return fn(reader.conn)
            finally:
                reader.conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise QueryError(_TOO_LONG) from None
            if "locked" in str(e) or "busy" in str(e):
                raise IndexUnavailable(str(e)) from e
            raise
        finally:
            reader.deadline = math.inf
            self._readers.put(reader)

    async def _scope(self, tenant: str, f: Filter) -> tuple[str, list[Any]]:
        """FROM ... WHERE ... of the tenant's turns matching ``f``, and its parameters. Positive text
        drives the query from the FTS table (its MATCH keeps to the tenant's rowids; bm25 available)."""
        joined = S.has_text(f)
        rowids = S.rowid_range(await self._tenant_number(tenant)) if f.text is not None else None
        where, params = S.compile_filter(f, joined=joined, rowids=rowids)
        return f"FROM {S.source_sql(f, joined)} WHERE t.tenant = ? AND {where}", [tenant, *params]

    async def _tenant_number(self, tenant: str) -> int | None:
        """The tenant's number (None: no turns yet); a number never changes once written, so it is kept."""
        k = self._numbers.get(tenant)
        if k is None:
            row = await self._read(
                lambda db: db.execute("SELECT k FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
            )
            if row is not None:
                k = self._numbers[tenant] = int(row[0])
        return k

    # --- writes -------------------------------------------------------------------------------

    async def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        """Apply ``ops`` in order in one transaction; returns the ops refused (missing keys)."""
        return await asyncio.to_thread(sqlite_write.write, self._writer, self._write_lock, ops)

    def bulk(self, *, durable: bool = False) -> BulkLoader:
        """A bulk load (``mise import``, benches): ``with index.bulk() as load: load.write(ops) ...``.

        Faster than ``write`` for many documents: secondary indexes are dropped while it runs and
        built once at the end, transactions hold 10,000 documents, the next chunk is prepared while
        SQLite writes the last, and the FTS index is merged (``optimize``) at the end. Documents are
        applied exactly as ``write`` applies them (replacements and ``delete_call`` included); reads
        stay correct meanwhile, only slower. Unless ``durable``, SQLite does not fsync until the load
        ends (``synchronous = OFF``, ~15% faster): a process that dies loses nothing committed, but a
        machine that crashes mid-load may leave the file damaged; the end of the load syncs it."""
        return BulkLoader(self._writer, self._write_lock, durable=durable)

    async def setup(self) -> bool:
        """The constructor made the schema; True (once) if the index was new or rebuilt empty."""
        fresh, self._fresh = self._fresh, False
        return fresh

    async def refresh(self) -> None:
        """Nothing to do: a committed write is visible to every later read."""

    # --- reads --------------------------------------------------------------------------------

    async def find(self, tenant: str, f: Filter, sort: Sort, offset: int, limit: int) -> tuple[int, list[Row]]:
        scope, params = await self._scope(tenant, f)
        order = S.compile_sort(sort, S.has_text(f))
        # The page's rowids first, its documents after: sorting every match with its whole document
        # (source included) cost 100-150 ms at 1M turns; sorting rowids and keys costs a few.
        page_sql = f"SELECT t.rowid, {S.score_sql(sort)} {scope} ORDER BY {order} LIMIT ? OFFSET ?"
        count_sql = f"SELECT COUNT(*) {scope}"
        # Text drives the query from its matches, all of which are sorted anyway: count them in the
        # same pass (one MATCH, one lookup per match, instead of two of each). bm25 is only valid in
        # the FTS query itself, hence the materialized matches.
        windowed = S.has_text(f) and limit > 0
        if windowed:
            page_sql = (
                f"WITH m AS MATERIALIZED (SELECT {S.sort_columns(sort)} {scope})"
                f" SELECT m.rowid, m.score, (SELECT COUNT(*) FROM m) FROM m"
                f" ORDER BY {S.compile_sort(sort, True, over='m')} LIMIT ? OFFSET ?"
            )

        def run(db: sqlite3.Connection) -> tuple[int, list[Row]]:
            if windowed:
                page = db.execute(page_sql, [*params, limit, offset]).fetchall()
                if page:
                    total = int(page[0][2])
                else:  # nothing matches, or the page lies past the last match
                    total = 0 if offset == 0 else int(db.execute(count_sql, params).fetchone()[0])
            else:
                total = int(db.execute(count_sql, params).fetchone()[0])
                if limit <= 0 or offset >= total:
                    return total, []
                page = db.execute(page_sql, [*params, limit, offset]).fetchall()
            docs = _by_rowid(db, [r[0] for r in page])
            return total, [Row(docs[r[0]], r[1]) for r in page if r[0] in docs]

        return await self._read(run)

    async def group(
        self, tenant: str, f: Filter, min_matches: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, int]]]:
        scope, params = await self._scope(tenant, f)
        grouped = f"SELECT t.call_sid AS sid, COUNT(*) AS n {scope} GROUP BY t.call_sid HAVING COUNT(*) >= ?"

        def run(db: sqlite3.Connection) -> tuple[int, list[tuple[str, int]]]:
            # One pass: the window counts every qualifying call before LIMIT keeps a page of them.
            rows = db.execute(
                f"SELECT sid, n, COUNT(*) OVER () FROM ({grouped}) ORDER BY n DESC, sid ASC LIMIT ? OFFSET ?",
                [*params, min_matches, max(limit, 1), offset],
            ).fetchall()
            if rows:
                total = int(rows[0][2])
            elif offset == 0:
                total = 0
            else:  # the page lies past the last call
                total = int(db.execute(f"SELECT COUNT(*) FROM ({grouped})", [*params, min_matches]).fetchone()[0])
            return total, [(str(sid), int(n)) for sid, n, _ in rows[:limit]]

        return await self._read(run)

    async def turns_of(self, tenant: str, f: Filter, call_sids: list[str], per_call: int) -> dict[str, list[Row]]:
        if not call_sids:
            return {}
        scope, params = await self._scope(tenant, f)
        marks = ", ".join("?" * len(call_sids))
        sql = (
            "SELECT r FROM (SELECT t.rowid AS r, t.call_sid AS sid, t.turn_index AS i, ROW_NUMBER() OVER"
            f" (PARTITION BY t.call_sid ORDER BY t.turn_index) AS k {scope} AND t.call_sid IN ({marks}))"
            " WHERE k <= ? ORDER BY sid, i"
        )

        def run(db: sqlite3.Connection) -> dict[str, list[Row]]:
            rowids = [r for (r,) in db.execute(sql, [*params, *call_sids, per_call])]
            docs = _by_rowid(db, rowids)
            out: dict[str, list[Row]] = {sid: [] for sid in call_sids}
            for rowid in rowids:
                if rowid in docs:
                    out[docs[rowid]["call_sid"]].append(Row(docs[rowid]))
            return {sid: rows for sid, rows in out.items() if rows}

        return await self._read(run)

    async def candidates(self, tenant: str, f: Filter, cap: int) -> list[Candidate]:
        scope, params = await self._scope(tenant, f)
        sql = (
            f"SELECT t.call_sid, t.turn_index, t.start_ms, t.end_ms, t.call_started_ms {scope}"
            " ORDER BY t.call_sid, t.turn_index LIMIT ?"
        )

        def run(db: sqlite3.Connection) -> list[Candidate]:
            rows = db.execute(sql, [*params, cap + 1]).fetchall()  # one more tells "above the cap"
            if len(rows) > cap:
                raise QueryError(f"a sequence step matches more than {cap} turns; narrow it")
            return rows  # (call_sid, turn_index, start_ms, end_ms, call_started_ms): Candidates as they are

        return await self._read(run)

    async def get_turns(self, tenant: str, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for i in range(0, len(keys), 400):  # well under SQLite's bound-parameter limit
                chunk = keys[i : i + 400]
                values = ", ".join("(?, ?)" for _ in chunk)
                # The keys drive the loop, one turns_key lookup each (as `(call_sid, turn_index) IN
                # (VALUES ...)` the planner walks all of the tenant's turns instead: 150 ms at 1M).
                sql = (
                    f"SELECT {SELECT_DOC} FROM (VALUES {values}) AS k CROSS JOIN turns t"
                    f" ON t.tenant = ? AND t.call_sid = k.column1 AND t.turn_index = k.column2 {WITH_SOURCE}"
                )
                out.extend(_doc(r) for r in db.execute(sql, [*(x for key in chunk for x in key), tenant]))
            return out

        return await self._read(run) if keys else []

    async def aggregate(self, tenant: str, f: Filter, aggs: tuple[Agg, ...]) -> dict[str, Any]:
        scope, params = await self._scope(tenant, f)

        def run(db: sqlite3.Connection) -> dict[str, Any]:
            return {agg.name: _aggregate(db, scope, params, agg) for agg in aggs}

        return await self._read(run)

    async def count(self, tenant: str, call_sid: str | None = None) -> int:
        sql, params = "SELECT COUNT(*) FROM turns WHERE tenant = ?", [tenant]
        if call_sid is not None:
            sql, params = sql + " AND call_sid = ?", [tenant, call_sid]
        return await self._read(lambda db: int(db.execute(sql, params).fetchone()[0]))

    async def get_call(self, tenant: str, call_sid: str) -> dict[str, Any] | None:
        def run(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT source FROM calls WHERE tenant = ? AND call_sid = ?", (tenant, call_sid)
            ).fetchone()
            return None if row is None else dict(orjson.loads(row[0]))

        return await self._read(run)

    async def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        for reader in self._all_readers:
            reader.conn.close()


def _by_rowid(db: sqlite3.Connection, rowids: list[int]) -> dict[int, dict[str, Any]]:
    if not rowids:
        return {}
    sql = f"SELECT t.rowid, {SELECT_DOC} FROM turns t {WITH_SOURCE} WHERE t.rowid IN ({', '.join('?' * len(rowids))})"
    return {r[0]: _doc(r[1:]) for r in db.execute(sql, rowids)}


def _doc(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """The flat turn document from a row starting with ``SELECT_DOC``'s columns."""
    doc = dict(zip(DOC_COLUMNS, row, strict=False))
    for name in BOOLEANS:
        if doc[name] is not None:
            doc[name] = bool(doc[name])
    doc["custom_kv"] = orjson.loads(doc["custom_kv"])
    doc["source"] = orjson.loads(doc["source"])
    doc["doc_id"] = turn_id_of(doc["tenant"], doc["call_sid"], doc["turn_id"])
    return doc


def _aggregate(db: sqlite3.Connection, scope: str, params: list[Any], agg: Agg) -> dict[str, Any]:
    col = S.column(agg.field)
    present = f"{scope} AND {col} IS NOT NULL"  # null values are in no bucket and no statistic
    if agg.kind == "stats":
        row = db.execute(f"SELECT {_STATS.format(c=col)} {present}", params).fetchone()
        return _stats(row)
    if agg.kind == "histogram":
        rows = db.execute(
            f"SELECT histogram_key({col}, ?) AS k, COUNT(*) {present} GROUP BY k ORDER BY k LIMIT ?",
            [agg.interval, *params, MAX_BUCKETS],
        ).fetchall()
        return {"interval": agg.interval, "buckets": [{"key": float(k), "count": int(n)} for k, n in rows]}
    boolean = F.kind_of(agg.field) == F.Kind.BOOLEAN
    stats = f", {_STATS.format(c=S.column(agg.stats))}" if agg.stats else ""
    # The window sums every bucket's count before LIMIT keeps the top ones: "other" in one pass.
    rows = db.execute(
        f"SELECT {col} AS k, COUNT(*) AS n, SUM(COUNT(*)) OVER () {stats} {present}"
        " GROUP BY k ORDER BY n DESC, k ASC LIMIT ?",
        [*params, agg.size],
    ).fetchall()
    buckets: list[dict[str, Any]] = []
    for r in rows:
        bucket: dict[str, Any] = {"key": bool(r[0]) if boolean else r[0], "count": int(r[1])}
        if agg.stats:
            bucket["stats"] = _stats(r[3:])
        buckets.append(bucket)
    everything = int(rows[0][2]) if rows else 0
    return {"buckets": buckets, "other": everything - sum(b["count"] for b in buckets)}


_STATS: Final = "COUNT({c}), MIN({c}), MAX({c}), AVG({c}), TOTAL({c})"


def _stats(row: tuple[Any, ...] | sqlite3.Row) -> dict[str, Any]:
    count, low, high, avg, total = row
    as_float = [None if v is None else float(v) for v in (low, high, avg)]
    return {"count": int(count), "min": as_float[0], "max": as_float[1], "avg": as_float[2], "sum": float(total)}
