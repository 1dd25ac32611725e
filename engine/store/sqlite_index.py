"""``SqliteIndex``: the embedded search index, SQLite with an FTS5 table over turn text.

One file: ``turns`` (a column per field of ``engine.search.fields.FIELDS`` for filters and sorts),
``turn_sources`` (the turn itself as JSON, by the same rowid), ``turns_fts`` (external-content FTS5 over
``turns.text``, kept in step by hand so a replaced turn keeps exactly one row and one FTS entry),
``tenants`` (each tenant's number: its turns' rowids lie in one range, so a MATCH keeps to a tenant by
rowid) and ``calls`` (call documents). WAL lets a few read connections answer while the one writer
commits; writes are searchable once committed, so ``refresh`` has nothing to do. Blocking work runs
in threads. ``bulk()`` loads many documents faster (``mise import``, benches).
"""

from __future__ import annotations

import asyncio
import math
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import starmap
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
_TURN_COLUMNS: Final = _DOC_COLUMNS[:-1]  # the turns table's; source lives in turn_sources
_SELECT_DOC: Final = ", ".join([*(f't."{c}"' for c in _TURN_COLUMNS), "s.source"])
_WITH_SOURCE: Final = "JOIN turn_sources s ON s.rowid = t.rowid"

# Indexes measured on 1M turns in 10 tenants (bench/search.py): the key one serves turns_of,
# get_turns, count and delete_call; the time one the default sort without a sort step; speaker,
# frustration, last_s and interruptions the common filters and sequence steps. Each costs indexing
# throughput (a bulk load builds them once, at its end), so add more only when a measurement asks.
_CANDIDATE: Final = "call_sid, turn_index, start_ms, end_ms, call_started_ms"  # what candidates() reads
_INDEXES: Final = {
    "turns_key": "turns (tenant, call_sid, turn_index)",
    "turns_time": "turns (tenant, call_started_ms DESC, call_sid, turn_index)",
    "turns_speaker": "turns (tenant, speaker)",
    # Covering for frustration ranges with a speaker: counts, groups and sequence candidates read no rows.
    "turns_frustration_cover": f"turns (tenant, frustration, speaker, {_CANDIDATE})",
    # last_s (ms_to_end) with a speaker, covering the count and the default time order of the page.
    "turns_to_end": "turns (tenant, ms_to_end, speaker, call_started_ms, call_sid, turn_index)",
    # Sequences: interruptions are rare (~5%), so a partial index lists them in call order, covering a
    # candidate; SQLite uses it for `interrupted_other = ?` bound to 1 (it re-prepares for other values).
    "turns_interrupted": "turns (tenant, call_sid, turn_index, interrupted_other, speaker, start_ms, end_ms,"
    " call_started_ms)"
    " WHERE interrupted_other = 1",
}
_OBSOLETE: Final = ("turns_frustration",)  # indexes of earlier layouts, dropped at start
_SECONDARY: Final = tuple(_INDEXES)  # dropped during a bulk load, built again at its end
_COLUMN_DEFS: Final = ", ".join(f'"{name}" {_SQL_TYPES[kind]}' for name, kind in F.FIELDS.items())
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS turns (
    rowid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    {_COLUMN_DEFS},
    call_started_ms INTEGER,
    text TEXT,
    custom_kv TEXT NOT NULL DEFAULT '[]'
);
-- The stored turn (JSON) apart: the turns table stays narrow (~1 KB a row instead of ~2.4 KB), so
-- building an index, scanning or looking up turns reads less than half the pages.
CREATE TABLE IF NOT EXISTS turn_sources (rowid INTEGER PRIMARY KEY, source TEXT NOT NULL);
{{indexes}}
CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts USING fts5(
    text, content='turns', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
-- Tenant number k holds the turns' rowids from k << 40 (engine.search.sql.rowid_range): a tenant's
-- turns lie together, and a MATCH keeps to one tenant with a rowid range.
CREATE TABLE IF NOT EXISTS tenants (tenant TEXT PRIMARY KEY, k INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS calls (
    doc_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    started_ms INTEGER,
    source TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS calls_key ON calls (tenant, call_sid);
""".replace("{indexes}", "\n".join(f"CREATE INDEX IF NOT EXISTS {name} ON {on};" for name, on in _INDEXES.items()))
_INSERT_COLUMNS: Final = ", ".join(f'"{c}"' for c in _TURN_COLUMNS)
_ASSIGN: Final = ", ".join(f'"{c}" = ?' for c in _TURN_COLUMNS)
_UPDATE: Final = f"UPDATE turns SET {_ASSIGN} WHERE rowid = ?"
_TOO_LONG: Final = "the query took too long; narrow it"
MMAP_BYTES: Final = 1 << 32  # SQLite caps it at its compile-time maximum (2 GB by default)
WAL_AUTOCHECKPOINT: Final = 10_000  # pages (40 MB): fewer, larger checkpoints than the default 1,000


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


def _create(db: sqlite3.Connection) -> None:
    """The schema, if missing. An index of the first layout (rowids in arrival order, all tenants
    mixed, the stored turn in the turns table) has its turns renumbered into their tenants' ranges,
    their sources moved to turn_sources and its FTS table rebuilt, once."""
    tables = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    renumber = "turns" in tables and "tenants" not in tables
    split = "turns" in tables and "turn_sources" not in tables
    # An FTS table with a tenant_tok column: a development layout of the same change (never released).
    stale_fts = "tenant_tok" in (tables.get("turns_fts") or "")
    for name in _OBSOLETE:
        db.execute(f"DROP INDEX IF EXISTS {name}")
    if stale_fts:
        db.execute("DROP TABLE turns_fts")
    db.executescript(_SCHEMA)
    if renumber or split or stale_fts:
        db.execute("BEGIN IMMEDIATE")
        if renumber:
            db.execute(
                "INSERT INTO tenants (tenant, k)"
                " SELECT tenant, ROW_NUMBER() OVER (ORDER BY tenant) FROM (SELECT DISTINCT tenant FROM turns)"
            )
            # Old rowids are below 1 << 40: the new ones collide with none of them, nor with each other.
            db.execute(
                f"UPDATE turns SET rowid = rowid + {S.ROWIDS} * (SELECT k FROM tenants WHERE tenant = turns.tenant)"
            )
        if split:
            db.execute("INSERT INTO turn_sources (rowid, source) SELECT rowid, source FROM turns")
            db.execute("ALTER TABLE turns DROP COLUMN source")
        db.execute("INSERT INTO turns_fts (turns_fts) VALUES ('rebuild')")
        db.execute("COMMIT")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB per connection (the default is 2 MiB)
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # reads without a system call per page
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
    conn.create_function("histogram_key", 2, histogram_key, deterministic=True)
    return conn


class SqliteIndex:
    """``SearchIndex`` over one SQLite file at ``path``; ``timeout_s`` bounds each read (seconds)."""

    name = "sqlite"

    def __init__(self, path: str | Path, *, readers: int = 4, timeout_s: float = 2.0) -> None:
        self._path = str(path)
        self._timeout_s = timeout_s
        self._writer = _connect(self._path)
        _create(self._writer)
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
        return await asyncio.to_thread(self._write_sync, ops)

    def _write_sync(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        segments, refused = _prepare(ops)
        self._commit(segments)
        return refused

    def _commit(self, segments: list[_Segment]) -> None:
        """Apply prepared segments in one transaction (``IndexUnavailable`` if SQLite cannot now)."""
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for segment in segments:
                        _apply(db, segment)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:  # locked, disk full, I/O: the batch may pass later
                raise IndexUnavailable(str(e)) from e

    def bulk(self, *, durable: bool = False) -> BulkLoader:
        """A bulk load (``mise import``, benches): ``with index.bulk() as load: load.write(ops) ...``.

        Faster than ``write`` for many documents: secondary indexes are dropped while it runs and
        built once at the end, transactions hold 10,000 documents, the next chunk is prepared while
        SQLite writes the last, and the FTS index is merged (``optimize``) at the end. Documents are
        applied exactly as ``write`` applies them (replacements and ``delete_call`` included); reads
        stay correct meanwhile, only slower. Unless ``durable``, SQLite does not fsync until the load
        ends (``synchronous = OFF``, ~15% faster): a process that dies loses nothing committed, but a
        machine that crashes mid-load may leave the file damaged; the end of the load syncs it."""
        return BulkLoader(self, durable=durable)

    async def bulk_load(self, ops: Iterable[IndexOp]) -> list[tuple[IndexOp, str]]:
        """``bulk`` over an iterable of ops (consumed in a thread); returns the ops refused."""

        def run() -> list[tuple[IndexOp, str]]:
            refused: list[tuple[IndexOp, str]] = []
            with self.bulk() as load:
                chunk: list[IndexOp] = []
                for op in ops:
                    chunk.append(op)
                    if len(chunk) >= BULK_CHUNK:
                        refused += load.write(chunk)
                        chunk = []
                refused += load.write(chunk)
            return refused

        return await asyncio.to_thread(run)

    async def setup(self) -> None:
        """Nothing left to do: the constructor created the schema (idempotently)."""

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
            return list(starmap(Candidate, rows))  # INTEGER columns: ints (or None) already

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
                    f"SELECT {_SELECT_DOC} FROM (VALUES {values}) AS k CROSS JOIN turns t"
                    f" ON t.tenant = ? AND t.call_sid = k.column1 AND t.turn_index = k.column2 {_WITH_SOURCE}"
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


# --- the write path -------------------------------------------------------------------------------
# Per batch: validate and turn every document into its row in Python (one itemgetter, JSON by orjson
# once), keep the last op per document, find the documents that already exist with one indexed
# lookup per 500 ids, then executemany: new rows get explicit rowids (max + 1 ...), so their FTS
# entries go in without reading anything back; only replaced rows whose text changed need FTS5's
# 'delete' with the old text. Ops stay in order across delete_call (a segment ends at each).

BULK_CHUNK: Final = 10_000  # documents per transaction in a bulk load
_TEXT: Final = _DOC_COLUMNS.index("text")
_ROW_VALUES: Final = operator.itemgetter(*_DOC_COLUMNS[2:-2])  # the fields, call_started_ms and text
_INSERT_ROW: Final = (
    f"INSERT INTO turns (rowid, {_INSERT_COLUMNS}) VALUES ({', '.join('?' * (len(_TURN_COLUMNS) + 1))})"
)
_INSERT_SOURCE: Final = "INSERT INTO turn_sources (rowid, source) VALUES (?, ?)"
_UPDATE_SOURCE: Final = "UPDATE turn_sources SET source = ? WHERE rowid = ?"
_FTS_INSERT: Final = "INSERT INTO turns_fts (rowid, text) VALUES (?, ?)"
_FTS_DELETE: Final = "INSERT INTO turns_fts (turns_fts, rowid, text) VALUES ('delete', ?, ?)"
_UPSERT_CALL: Final = (
    "INSERT INTO calls (doc_id, tenant, call_sid, started_ms, source) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (doc_id) DO UPDATE SET started_ms = excluded.started_ms, source = excluded.source"
)


@dataclass(slots=True)
class _Segment:
    """Prepared ops up to (and including) one delete_call: calls, then turns, then the delete."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    turns: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # doc_id -> row (the last op wins)
    delete: tuple[str, str] | None = None  # (tenant, call_sid)


def _prepare(ops: Iterable[IndexOp]) -> tuple[list[_Segment], list[tuple[IndexOp, str]]]:
    """Ops as rows to write (pure Python: no database), and the ops refused with the reason."""
    segments = [_Segment()]
    refused: list[tuple[IndexOp, str]] = []
    dumps = orjson.dumps
    for op in ops:
        segment = segments[-1]
        if op.kind == "delete_call":
            if not op.call_sid:
                refused.append((op, "delete_call needs a call_sid"))
                continue
            segment.delete = (op.tenant, op.call_sid)
            segments.append(_Segment())
            continue
        doc = op.doc
        if not isinstance(doc, dict):
            refused.append((op, f"{op.kind} needs a document"))
            continue
        if doc.get("tenant", op.tenant) != op.tenant:
            refused.append((op, "the document's tenant differs from the op's"))
            continue
        if op.kind == "call":
            if not doc.get("doc_id") or not doc.get("call_sid"):
                refused.append((op, "a call document needs doc_id and call_sid"))
                continue
            segment.calls.append(
                (doc["doc_id"], op.tenant, doc["call_sid"], doc.get("started_ms"), dumps(doc).decode())
            )
            continue
        missing = [k for k in _REQUIRED if doc.get(k) is None]
        if missing:
            refused.append((op, f"a turn document needs {', '.join(missing)}"))
            continue
        try:
            values = _ROW_VALUES(doc)
        except KeyError:  # a document of an older shape: absent fields are null
            values = tuple(doc.get(c) for c in _DOC_COLUMNS[2:-2])
        custom = doc.get("custom_kv")
        source = doc.get("source")
        segment.turns[doc["doc_id"]] = (
            doc["doc_id"],
            op.tenant,
            *values,  # booleans bind as 0/1 (bool is an int)
            dumps(custom if custom is not None else []).decode(),
            dumps(source if source is not None else {}).decode(),
        )
    return segments, refused


def _tenant_number(db: sqlite3.Connection, tenant: str) -> int:
    """The tenant's number (its rowid range), given on its first turn (inside the write transaction)."""
    row = db.execute("SELECT k FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
    if row is not None:
        return int(row[0])
    db.execute("INSERT INTO tenants (tenant, k) VALUES (?, (SELECT coalesce(max(k), 0) + 1 FROM tenants))", (tenant,))
    return int(db.execute("SELECT k FROM tenants WHERE tenant = ?", (tenant,)).fetchone()[0])


def _apply(db: sqlite3.Connection, segment: _Segment) -> None:
    if segment.calls:
        db.executemany(_UPSERT_CALL, segment.calls)
    if segment.turns:
        ids = list(segment.turns)
        existing: dict[str, tuple[int, str | None]] = {}
        for i in range(0, len(ids), 500):  # well under SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            sql = f"SELECT doc_id, rowid, text FROM turns WHERE doc_id IN ({', '.join('?' * len(chunk))})"
            existing.update((doc_id, (rowid, text)) for doc_id, rowid, text in db.execute(sql, chunk))
        new: dict[str, list[tuple[Any, ...]]] = {}  # by tenant
        for doc_id, row in segment.turns.items():
            if doc_id not in existing:
                new.setdefault(row[1], []).append(row)
        for tenant, rows in new.items():
            # Explicit rowids, next in the tenant's range: the FTS entries need no read-back.
            first, last = S.rowid_range(_tenant_number(db, tenant))
            top = db.execute("SELECT max(rowid) FROM turns WHERE rowid BETWEEN ? AND ?", (first, last)).fetchone()[0]
            base = first if top is None else int(top) + 1
            if base + len(rows) - 1 > last:
                raise sqlite3.OperationalError(f"tenant {tenant!r} has used up its rowids")
            db.executemany(_INSERT_ROW, [(base + i, *row[:-1]) for i, row in enumerate(rows)])
            db.executemany(_INSERT_SOURCE, [(base + i, row[-1]) for i, row in enumerate(rows)])
            # Every row gets an entry, even without text: FTS5's integrity-check (and 'rebuild')
            # expect one entry per content row.
            db.executemany(_FTS_INSERT, [(base + i, row[_TEXT]) for i, row in enumerate(rows)])
        if existing:
            replaced = [(existing[doc_id][0], row) for doc_id, row in segment.turns.items() if doc_id in existing]
            db.executemany(_UPDATE, [(*row[:-1], rowid) for rowid, row in replaced])
            db.executemany(_UPDATE_SOURCE, [(row[-1], rowid) for rowid, row in replaced])
            changed = [(rowid, existing[row[0]][1], row[_TEXT]) for rowid, row in replaced]
            changed = [c for c in changed if c[1] != c[2]]  # else the FTS entry already holds this text
            if changed:
                # External content: FTS5 removes an entry given the exact text it indexed.
                db.executemany(_FTS_DELETE, [(rowid, old) for rowid, old, _ in changed])
                db.executemany(_FTS_INSERT, [(rowid, text) for rowid, _, text in changed])
    if segment.delete is not None:
        _delete_call(db, *segment.delete)


def _delete_call(db: sqlite3.Connection, tenant: str, call_sid: str) -> None:
    rows = db.execute("SELECT rowid, text FROM turns WHERE tenant = ? AND call_sid = ?", (tenant, call_sid)).fetchall()
    db.executemany(_FTS_DELETE, rows)
    db.executemany("DELETE FROM turn_sources WHERE rowid = ?", [(rowid,) for rowid, _ in rows])
    db.execute("DELETE FROM turns WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))
    db.execute("DELETE FROM calls WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))


class BulkLoader:
    """``SqliteIndex.bulk()``: see there. ``write`` may be called any number of times, from one thread."""

    def __init__(self, index: SqliteIndex, *, durable: bool = False) -> None:
        self._index = index
        self._durable = durable
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mise-bulk")
        self._pending: Future[None] | None = None

    def __enter__(self) -> BulkLoader:
        with self._index._write_lock:
            db = self._index._writer
            for name in _SECONDARY:
                db.execute(f"DROP INDEX IF EXISTS {name}")
            if not self._durable:
                db.execute("PRAGMA synchronous = OFF")
        return self

    def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        """Apply ``ops`` (in chunks of ``BULK_CHUNK``, one transaction each); returns the refused."""
        refused: list[tuple[IndexOp, str]] = []
        for i in range(0, len(ops), BULK_CHUNK):
            segments, bad = _prepare(ops[i : i + BULK_CHUNK])  # while the previous chunk is written
            refused += bad
            self._wait()
            self._pending = self._pool.submit(self._index._commit, segments)
        self._wait()
        return refused

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()
            with self._index._write_lock:
                db = self._index._writer
                db.executescript(_SCHEMA)  # the secondary indexes again, each built in one pass
                db.execute("INSERT INTO turns_fts (turns_fts) VALUES ('optimize')")
                db.execute("PRAGMA synchronous = NORMAL")  # and the checkpoint below syncs everything
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _by_rowid(db: sqlite3.Connection, rowids: list[int]) -> dict[int, dict[str, Any]]:
    if not rowids:
        return {}
    sql = f"SELECT t.rowid, {_SELECT_DOC} FROM turns t {_WITH_SOURCE} WHERE t.rowid IN ({', '.join('?' * len(rowids))})"
    return {r[0]: _doc(r[1:]) for r in db.execute(sql, rowids)}


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
