"""The embedded index's write path: batches of index operations applied in one transaction each.

Per batch: validate and turn every document into its row in Python (one itemgetter, JSON by orjson
once), keep the last op per document, find the documents that already exist with one indexed lookup
per 500 ids, then executemany: new rows get explicit rowids (next in their tenant's range), so their
FTS entries go in without reading anything back; only replaced rows whose text changed need FTS5's
'delete' with the old text. Ops stay in order across delete_call (a segment ends at each).
``BulkLoader`` applies the same batches with secondary indexes built once at the end.
"""

from __future__ import annotations

import operator
import sqlite3
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from engine import costs
from engine.search import sql as S
from engine.store.index import IndexOp, IndexUnavailable, malformed
from engine.store.sqlite_schema import DOC_COLUMNS, INSERT_COLUMNS, SCHEMA, SECONDARY, TURN_COLUMNS, UPDATE

BULK_CHUNK: Final = 10_000  # documents per transaction in a bulk load
_TEXT: Final = DOC_COLUMNS.index("text")
_ROW_VALUES: Final = operator.itemgetter(*DOC_COLUMNS[1:-2])  # the fields, call_started_ms and text
_INSERT_ROW: Final = f"INSERT INTO turns (rowid, {INSERT_COLUMNS}) VALUES ({', '.join('?' * (len(TURN_COLUMNS) + 1))})"
_INSERT_SOURCE: Final = "INSERT INTO turn_sources (rowid, source) VALUES (?, ?)"
_UPDATE_SOURCE: Final = "UPDATE turn_sources SET source = ? WHERE rowid = ?"
_FTS_INSERT: Final = "INSERT INTO turns_fts (rowid, text) VALUES (?, ?)"
_FTS_DELETE: Final = "INSERT INTO turns_fts (turns_fts, rowid, text) VALUES ('delete', ?, ?)"
_UPSERT_CALL: Final = (
    "INSERT INTO calls (doc_id, tenant, call_sid, started_ms, source) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (doc_id) DO UPDATE SET started_ms = excluded.started_ms, source = excluded.source"
)


_Key = tuple[str, str, int]  # (tenant, call_sid, turn_index): a turn's identity


@dataclass(slots=True)
class _Segment:
    """Prepared ops up to (and including) one delete_call: calls, then turns, then the delete."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    # (tenant, call_sid, turn_index) -> row (the last op wins)
    turns: dict[_Key, tuple[Any, ...]] = field(default_factory=dict)
    delete: tuple[str, str] | None = None  # (tenant, call_sid)


def _prepare(ops: Iterable[IndexOp]) -> tuple[list[_Segment], list[tuple[IndexOp, str]]]:
    """Ops as rows to write (pure Python: no database), and the ops refused with the reason."""
    segments = [_Segment()]
    refused: list[tuple[IndexOp, str]] = []
    dumps = orjson.dumps
    for op in ops:
        segment = segments[-1]
        reason = malformed(op)
        if reason is not None:
            refused.append((op, reason))
            continue
        if op.kind == "delete_call":
            segment.delete = (op.tenant, op.call_sid or "")
            segments.append(_Segment())
            continue
        doc = op.doc
        assert doc is not None  # malformed() said so
        if op.kind == "call":
            segment.calls.append(
                (doc["doc_id"], op.tenant, doc["call_sid"], doc.get("started_ms"), dumps(doc).decode())
            )
            continue
        try:
            values = _ROW_VALUES(doc)
        except KeyError:  # a document of an older shape: absent fields are null
            values = tuple(doc.get(c) for c in DOC_COLUMNS[1:-2])
        custom = doc.get("custom_kv")
        source = doc.get("source")
        segment.turns[op.tenant, doc["call_sid"], doc["turn_index"]] = (
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
        existing = _existing(db, list(segment.turns))
        new: dict[str, list[tuple[Any, ...]]] = {}  # by tenant
        for key, row in segment.turns.items():
            if key not in existing:
                new.setdefault(key[0], []).append(row)
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
            replaced = [(*existing[key], row) for key, row in segment.turns.items() if key in existing]
            db.executemany(UPDATE, [(*row[:-1], rowid) for rowid, _, row in replaced])
            db.executemany(_UPDATE_SOURCE, [(row[-1], rowid) for rowid, _, row in replaced])
            changed = [(rowid, old, row[_TEXT]) for rowid, old, row in replaced]
            changed = [c for c in changed if c[1] != c[2]]  # else the FTS entry already holds this text
            if changed:
                # External content: FTS5 removes an entry given the exact text it indexed.
                db.executemany(_FTS_DELETE, [(rowid, old) for rowid, old, _ in changed])
                db.executemany(_FTS_INSERT, [(rowid, text) for rowid, _, text in changed])
    if segment.delete is not None:
        _delete_call(db, *segment.delete)


def _existing(db: sqlite3.Connection, keys: list[_Key]) -> dict[_Key, tuple[int, str | None]]:
    """(rowid, text) of the turns among ``keys`` already indexed: one turns_key lookup per call's chunk."""
    by_call: dict[tuple[str, str], list[int]] = {}
    for tenant, call_sid, turn_index in keys:
        by_call.setdefault((tenant, call_sid), []).append(turn_index)
    found: dict[_Key, tuple[int, str | None]] = {}
    for (tenant, call_sid), indices in by_call.items():
        for i in range(0, len(indices), 500):  # well under SQLite's bound-parameter limit
            chunk = indices[i : i + 500]
            sql = (
                "SELECT turn_index, rowid, text FROM turns WHERE tenant = ? AND call_sid = ?"
                f" AND turn_index IN ({', '.join('?' * len(chunk))})"
            )
            for turn_index, rowid, text in db.execute(sql, [tenant, call_sid, *chunk]):
                found[tenant, call_sid, turn_index] = (rowid, text)
    return found


def _delete_call(db: sqlite3.Connection, tenant: str, call_sid: str) -> None:
    rows = db.execute("SELECT rowid, text FROM turns WHERE tenant = ? AND call_sid = ?", (tenant, call_sid)).fetchall()
    db.executemany(_FTS_DELETE, rows)
    db.executemany("DELETE FROM turn_sources WHERE rowid = ?", [(rowid,) for rowid, _ in rows])
    db.execute("DELETE FROM turns WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))
    db.execute("DELETE FROM calls WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))


def commit(db: sqlite3.Connection, lock: threading.Lock, segments: list[_Segment]) -> None:
    """Apply prepared segments in one transaction (``IndexUnavailable`` if SQLite cannot now)."""
    with lock:
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


def write(db: sqlite3.Connection, lock: threading.Lock, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
    """Apply ``ops`` in order in one transaction; returns the ops refused for good."""
    with costs.stage("index"):
        segments, refused = _prepare(ops)
        commit(db, lock, segments)
    return refused


class BulkLoader:
    """``SqliteIndex.bulk()``: see there. ``write`` may be called any number of times, from one thread."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, *, durable: bool = False) -> None:
        self._db = db
        self._lock = lock
        self._durable = durable
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mise-bulk")
        self._pending: Future[None] | None = None

    def __enter__(self) -> BulkLoader:
        with self._lock:
            for name in SECONDARY:
                self._db.execute(f"DROP INDEX IF EXISTS {name}")
            if not self._durable:
                self._db.execute("PRAGMA synchronous = OFF")
        return self

    def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        """Apply ``ops`` (in chunks of ``BULK_CHUNK``, one transaction each); returns the refused."""
        refused: list[tuple[IndexOp, str]] = []
        for i in range(0, len(ops), BULK_CHUNK):
            segments, bad = _prepare(ops[i : i + BULK_CHUNK])  # while the previous chunk is written
            refused += bad
            self._wait()
            self._pending = self._pool.submit(commit, self._db, self._lock, segments)
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
            with self._lock:
                self._db.execute("PRAGMA threads = 2")  # CREATE INDEX sorts with a helper thread
                self._db.executescript(SCHEMA)  # the secondary indexes again, each built in one pass
                self._db.execute("PRAGMA threads = 0")
                self._db.execute("INSERT INTO turns_fts (turns_fts) VALUES ('optimize')")
                self._db.execute("PRAGMA synchronous = NORMAL")  # and the checkpoint below syncs everything
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
