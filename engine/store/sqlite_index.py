"""``SqliteIndex``: the embedded search index, SQLite with an FTS5 table over turn text.

One file: ``turns`` (a column per field of ``engine.search.fields.FIELDS`` for filters and sorts, the
turn itself as JSON in ``source``), ``turns_fts`` (external-content FTS5 over ``turns.text``, kept in
step by hand so a replaced turn keeps exactly one row and one FTS entry) and ``calls`` (call
documents). WAL lets a few read connections answer while the one writer commits; writes are
searchable once committed, so ``refresh`` has nothing to do. Blocking work runs in threads.
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
from engine.search.query import MAX_BUCKETS, Agg, Filter, QueryError, Sort
from engine.store.index import Candidate, IndexOp, IndexUnavailable, Row

T = TypeVar("T")

_SQL_TYPES: Final = {
    F.Kind.KEYWORD: "TEXT",
    F.Kind.INTEGER: "INTEGER",
    F.Kind.NUMBER: "REAL",
    F.Kind.BOOLEAN: "INTEGER",
    F.Kind.DATE: "TEXT",  # the ISO string as written; filters and sorts use call_started_ms
}
# Columns read back into the flat document, in this order (source and custom_kv are JSON).
_DOC_COLUMNS: Final = ("doc_id", "tenant", *F.FIELDS, "call_started_ms", "text", "custom_kv", "source")
_BOOLEANS: Final = frozenset(name for name, kind in F.FIELDS.items() if kind == F.Kind.BOOLEAN)
_REQUIRED: Final = ("doc_id", "call_sid", "turn_id", "turn_index", "start_ms", "end_ms")
_SELECT_DOC: Final = ", ".join(f't."{c}"' for c in _DOC_COLUMNS)

# Indexes measured on 1M turns in 10 tenants: the key one serves turns_of, get_turns, count and
# delete_call; the time one the default sort without a sort step; speaker and frustration the most
# common filters. Each costs indexing throughput, so add more only when a measurement asks for one.
_COLUMN_DEFS: Final = ", ".join(f'"{name}" {_SQL_TYPES[kind]}' for name, kind in F.FIELDS.items())
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS turns (
    rowid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    {_COLUMN_DEFS},
    call_started_ms INTEGER,
    text TEXT,
    custom_kv TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_key ON turns (tenant, call_sid, turn_index);
CREATE INDEX IF NOT EXISTS turns_time ON turns (tenant, call_started_ms DESC, call_sid, turn_index);
CREATE INDEX IF NOT EXISTS turns_speaker ON turns (tenant, speaker);
CREATE INDEX IF NOT EXISTS turns_frustration ON turns (tenant, frustration);
CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts USING fts5(
    text, content='turns', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS calls (
    doc_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    started_ms INTEGER,
    source TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS calls_key ON calls (tenant, call_sid);
"""
_INSERT_COLUMNS: Final = ", ".join(f'"{c}"' for c in _DOC_COLUMNS)
_INSERT: Final = f"INSERT INTO turns ({_INSERT_COLUMNS}) VALUES ({', '.join('?' * len(_DOC_COLUMNS))})"
_ASSIGN: Final = ", ".join(f'"{c}" = ?' for c in _DOC_COLUMNS)
_UPDATE: Final = f"UPDATE turns SET {_ASSIGN} WHERE rowid = ?"
_TOO_LONG: Final = "the query took too long; narrow it"


def histogram_key(value: float, interval: float) -> float:
    """A histogram bucket's key: floor(value / interval) * interval, as Python computes it."""
    return float(math.floor(value / interval) * interval)


class _Reader:
    """One read connection with its own deadline, enforced by a progress handler."""

    def __init__(self, path: str) -> None:
        self.conn = _connect(path)
        self.conn.execute("PRAGMA query_only = ON")
        self.deadline = math.inf
        # Checked every few thousand VM steps (well under a millisecond), so an abort lands on time.
        self.conn.set_progress_handler(self._expired, 4000)

    def _expired(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.create_function("histogram_key", 2, histogram_key, deterministic=True)
    return conn


class SqliteIndex:
    """``SearchIndex`` over one SQLite file at ``path``; ``timeout_s`` bounds each read (seconds)."""

    name = "sqlite"

    def __init__(self, path: str | Path, *, readers: int = 4, timeout_s: float = 2.0) -> None:
        self._path = str(path)
        self._timeout_s = timeout_s
        self._writer = _connect(self._path)
        self._writer.executescript(_SCHEMA)
        self._write_lock = threading.Lock()
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

    def _scope(self, tenant: str, f: Filter, joined: bool = False) -> tuple[str, list[Any]]:
        """FROM ... WHERE ... of the tenant's turns matching ``f``, and its parameters (``joined``: with
        the FTS table in the FROM, for bm25)."""
        where, params = S.compile_filter(f, joined=joined)
        return f"FROM {S.source_sql(f, joined)} WHERE t.tenant = ? AND {where}", [tenant, *params]

    # --- writes -------------------------------------------------------------------------------

    async def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        """Apply ``ops`` in order in one transaction; returns the turns refused (missing keys)."""
        return await asyncio.to_thread(self._write_sync, ops)

    def _write_sync(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        refused: list[tuple[IndexOp, str]] = []
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for op in ops:
                        reason = self._apply(db, op)
                        if reason is not None:
                            refused.append((op, reason))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:  # locked, disk full, I/O: the batch may pass later
                raise IndexUnavailable(str(e)) from e
        return refused

    def _apply(self, db: sqlite3.Connection, op: IndexOp) -> str | None:
        if op.kind == "delete_call":
            if not op.call_sid:
                return "delete_call needs a call_sid"
            self._delete_call(db, op.tenant, op.call_sid)
            return None
        doc = op.doc
        if not isinstance(doc, dict):
            return f"{op.kind} needs a document"
        if doc.get("tenant", op.tenant) != op.tenant:
            return "the document's tenant differs from the op's"
        if op.kind == "call":
            if not doc.get("doc_id") or not doc.get("call_sid"):
                return "a call document needs doc_id and call_sid"
            db.execute(
                "INSERT INTO calls (doc_id, tenant, call_sid, started_ms, source) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (doc_id) DO UPDATE SET started_ms = excluded.started_ms, source = excluded.source",
                (doc["doc_id"], op.tenant, doc["call_sid"], doc.get("started_ms"), orjson.dumps(doc).decode()),
            )
            return None
        missing = [k for k in _REQUIRED if doc.get(k) is None]
        if missing:
            return f"a turn document needs {', '.join(missing)}"
        values = [_stored(c, doc.get(c)) for c in _DOC_COLUMNS]
        values[1] = op.tenant
        old = db.execute("SELECT rowid, text FROM turns WHERE doc_id = ?", (doc["doc_id"],)).fetchone()
        text = doc.get("text")
        if old is None:
            rowid = db.execute(_INSERT, values).lastrowid
        else:
            rowid = old[0]
            db.execute(_UPDATE, [*values, rowid])
            if old[1] == text:
                return None  # the FTS entry already holds this text
            # External content: FTS5 removes an entry given the exact text it indexed.
            db.execute("INSERT INTO turns_fts (turns_fts, rowid, text) VALUES ('delete', ?, ?)", (rowid, old[1]))
        # Every row gets an entry, even without text: FTS5's integrity-check (and 'rebuild') expect
        # one entry per content row.
        db.execute("INSERT INTO turns_fts (rowid, text) VALUES (?, ?)", (rowid, text))
        return None

    @staticmethod
    def _delete_call(db: sqlite3.Connection, tenant: str, call_sid: str) -> None:
        rows = db.execute(
            "SELECT rowid, text FROM turns WHERE tenant = ? AND call_sid = ?", (tenant, call_sid)
        ).fetchall()
        db.executemany("INSERT INTO turns_fts (turns_fts, rowid, text) VALUES ('delete', ?, ?)", rows)
        db.execute("DELETE FROM turns WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))
        db.execute("DELETE FROM calls WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))

    async def setup(self) -> None:
        """Nothing left to do: the constructor created the schema (idempotently)."""

    async def refresh(self) -> None:
        """Nothing to do: a committed write is visible to every later read."""

    # --- reads --------------------------------------------------------------------------------

    async def find(self, tenant: str, f: Filter, sort: Sort, offset: int, limit: int) -> tuple[int, list[Row]]:
        scope, params = self._scope(tenant, f)
        joined = sort.key == "_score" and S.has_text(f)
        page_scope, page_params = self._scope(tenant, f, joined) if joined else (scope, params)
        order = S.compile_sort(sort, joined)
        page_sql = f"SELECT {_SELECT_DOC}, {S.score_sql(sort)} {page_scope} ORDER BY {order} LIMIT ? OFFSET ?"

        def run(db: sqlite3.Connection) -> tuple[int, list[Row]]:
            total = int(db.execute(f"SELECT COUNT(*) {scope}", params).fetchone()[0])
            if limit <= 0 or offset >= total:
                return total, []
            rows = db.execute(page_sql, [*page_params, limit, offset]).fetchall()
            return total, [Row(_doc(r), r[-1]) for r in rows]

        return await self._read(run)

    async def group(
        self, tenant: str, f: Filter, min_matches: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, int]]]:
        scope, params = self._scope(tenant, f)
        grouped = f"SELECT t.call_sid AS sid, COUNT(*) AS n {scope} GROUP BY t.call_sid HAVING COUNT(*) >= ?"

        def run(db: sqlite3.Connection) -> tuple[int, list[tuple[str, int]]]:
            total = int(db.execute(f"SELECT COUNT(*) FROM ({grouped})", [*params, min_matches]).fetchone()[0])
            rows = db.execute(
                f"{grouped} ORDER BY n DESC, sid ASC LIMIT ? OFFSET ?", [*params, min_matches, limit, offset]
            ).fetchall()
            return total, [(str(sid), int(n)) for sid, n in rows]

        return await self._read(run)

    async def turns_of(self, tenant: str, f: Filter, call_sids: list[str], per_call: int) -> dict[str, list[Row]]:
        if not call_sids:
            return {}
        scope, params = self._scope(tenant, f)
        marks = ", ".join("?" * len(call_sids))
        sql = (
            f"SELECT * FROM (SELECT {_SELECT_DOC}, ROW_NUMBER() OVER"
            f" (PARTITION BY t.call_sid ORDER BY t.turn_index) AS k {scope} AND t.call_sid IN ({marks}))"
            ' WHERE k <= ? ORDER BY "call_sid", "turn_index"'
        )

        def run(db: sqlite3.Connection) -> dict[str, list[Row]]:
            out: dict[str, list[Row]] = {sid: [] for sid in call_sids}
            for r in db.execute(sql, [*params, *call_sids, per_call]):
                doc = _doc(r)
                out[doc["call_sid"]].append(Row(doc))
            return {sid: rows for sid, rows in out.items() if rows}

        return await self._read(run)

    async def candidates(self, tenant: str, f: Filter, cap: int) -> list[Candidate]:
        scope, params = self._scope(tenant, f)
        sql = (
            f"SELECT t.call_sid, t.turn_index, t.start_ms, t.end_ms, t.call_started_ms {scope}"
            " ORDER BY t.call_sid, t.turn_index LIMIT ?"
        )

        def run(db: sqlite3.Connection) -> list[Candidate]:
            rows = db.execute(sql, [*params, cap + 1]).fetchall()  # one more tells "above the cap"
            if len(rows) > cap:
                raise QueryError(f"a sequence step matches more than {cap} turns; narrow it")
            return [Candidate(r[0], int(r[1]), int(r[2]), int(r[3]), None if r[4] is None else int(r[4])) for r in rows]

        return await self._read(run)

    async def get_turns(self, tenant: str, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for i in range(0, len(keys), 400):  # well under SQLite's bound-parameter limit
                chunk = keys[i : i + 400]
                values = ", ".join("(?, ?)" for _ in chunk)
                sql = (
                    f"SELECT {_SELECT_DOC} FROM turns t"
                    f" WHERE t.tenant = ? AND (t.call_sid, t.turn_index) IN (VALUES {values})"
                )
                out.extend(_doc(r) for r in db.execute(sql, [tenant, *(x for key in chunk for x in key)]))
            return out

        return await self._read(run) if keys else []

    async def aggregate(self, tenant: str, f: Filter, aggs: tuple[Agg, ...]) -> dict[str, Any]:
        scope, params = self._scope(tenant, f)

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


def _stored(column: str, value: Any) -> Any:
    """A document value as its column holds it (JSON for the structured ones, 0/1 for booleans)."""
    if column in ("source", "custom_kv"):
        return orjson.dumps(value if value is not None else ([] if column == "custom_kv" else {})).decode()
    if isinstance(value, bool):
        return int(value)
    return value


def _doc(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """The flat turn document from a row starting with ``_SELECT_DOC``'s columns."""
    doc = dict(zip(_DOC_COLUMNS, row, strict=False))
    for name in _BOOLEANS:
        if doc[name] is not None:
            doc[name] = bool(doc[name])
    doc["custom_kv"] = orjson.loads(doc["custom_kv"])
    doc["source"] = orjson.loads(doc["source"])
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
