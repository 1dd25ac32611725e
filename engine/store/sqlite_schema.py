"""The embedded index's schema: tables, columns and indexes of ``SqliteIndex``, and its connections.

One file: ``turns`` (a column per field of ``engine.search.fields.FIELDS`` for filters and sorts),
``turn_sources`` (the turn itself as JSON, by the same rowid), ``turns_fts`` (external-content FTS5 over
``turns.text``, kept in step by hand so a replaced turn keeps exactly one row and one FTS entry),
``tenants`` (each tenant's number: its turns' rowids lie in one range, so a MATCH keeps to a tenant by
rowid) and ``calls`` (call documents).

The index is derived data: its layout has a version (``PRAGMA user_version``), and a file of another
version is emptied and built again from the call store (the indexer backfills it; ``mise reindex`` by
hand), rather than migrated in place.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Final

from engine.search import fields as F

SCHEMA_VERSION: Final = 4  # bump on any change of tables, columns or FIELDS: the index is rebuilt

SQL_TYPES: Final = {
    F.Kind.KEYWORD: "TEXT",
    F.Kind.INTEGER: "INTEGER",
    F.Kind.NUMBER: "REAL",
    F.Kind.BOOLEAN: "INTEGER",
    F.Kind.DATE: "TEXT",  # the ISO string as written; filters and sorts use call_started_ms
}
# Columns read back into the flat document, in this order (source and custom_kv are JSON).
# No doc_id column: it is tenant:call_sid:turn_id, and the unique key (tenant, call_sid, turn_index) finds a
# turn already (turn_index == turn_id). A unique index on a 50-byte id in random order was the costliest
# index to keep up as the table grew.
DOC_COLUMNS: Final = ("tenant", *F.FIELDS, "call_started_ms", "text", "custom_kv", "source")
BOOLEANS: Final = frozenset(name for name, kind in F.FIELDS.items() if kind == F.Kind.BOOLEAN)
TURN_COLUMNS: Final = DOC_COLUMNS[:-1]  # the turns table's; source lives in turn_sources
SELECT_DOC: Final = ", ".join([*(f't."{c}"' for c in TURN_COLUMNS), "s.source"])
WITH_SOURCE: Final = "JOIN turn_sources s ON s.rowid = t.rowid"

# Indexes measured on 1M turns in 10 tenants (bench/search.py): the key one serves turns_of,
# get_turns, count and delete_call; the time one the default sort without a sort step; frustration,
# last_s and interruptions the common filters and sequence steps. No (tenant, speaker) index: a
# speaker is half of a tenant's turns, no plan of the query kinds chose it, and it cost ~4% of a
# bulk load. Each costs indexing throughput (a bulk load builds them once, at its end), so add more
# only when a measurement asks.
CANDIDATE: Final = "call_sid, turn_index, start_ms, end_ms, call_started_ms"  # what candidates() reads
INDEXES: Final = {
    "turns_time": "turns (tenant, call_started_ms DESC, call_sid, turn_index)",
    # Covering for frustration ranges with a speaker: counts, groups and sequence candidates read no rows.
    "turns_frustration_cover": f"turns (tenant, frustration, speaker, {CANDIDATE})",
    # last_s (ms_to_end) with a speaker, covering the count and the default time order of the page.
    "turns_to_end": "turns (tenant, ms_to_end, speaker, call_started_ms, call_sid, turn_index)",
    # Sequences: interruptions are rare (~5%), so a partial index lists them in call order, covering a
    # candidate; SQLite uses it for `interrupted_other = ?` bound to 1 (it re-prepares for other values).
    "turns_interrupted": "turns (tenant, call_sid, turn_index, interrupted_other, speaker, start_ms, end_ms,"
    " call_started_ms)"
    " WHERE interrupted_other = 1",
}
SECONDARY: Final = tuple(INDEXES)  # dropped during a bulk load, built again at its end
COLUMN_DEFS: Final = ", ".join(f'"{name}" {SQL_TYPES[kind]}' for name, kind in F.FIELDS.items())
SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS turns (
    rowid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    {COLUMN_DEFS},
    call_started_ms INTEGER,
    text TEXT,
    custom_kv TEXT NOT NULL DEFAULT '[]'
);
-- The stored turn (JSON) apart: the turns table stays narrow (~1 KB a row instead of ~2.4 KB), so
-- building an index, scanning or looking up turns reads less than half the pages.
-- The key: finds a turn by its id, and serves turns_of, get_turns, count and delete_call. Kept through
-- bulk loads (they look turns up by it).
CREATE UNIQUE INDEX IF NOT EXISTS turns_key ON turns (tenant, call_sid, turn_index);
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
""".replace("{indexes}", "\n".join(f"CREATE INDEX IF NOT EXISTS {name} ON {on};" for name, on in INDEXES.items()))
INSERT_COLUMNS: Final = ", ".join(f'"{c}"' for c in TURN_COLUMNS)
ASSIGN: Final = ", ".join(f'"{c}" = ?' for c in TURN_COLUMNS)
UPDATE: Final = f"UPDATE turns SET {ASSIGN} WHERE rowid = ?"
MMAP_BYTES: Final = 1 << 32  # SQLite caps it at its compile-time maximum (2 GB by default)
WAL_AUTOCHECKPOINT: Final = 10_000  # pages (40 MB): fewer, larger checkpoints than the default 1,000


def histogram_key(value: float, interval: float) -> float:
    """A histogram bucket's key: floor(value / interval) * interval, as Python computes it."""
    return float(math.floor(value / interval) * interval)


def create(db: sqlite3.Connection) -> bool:
    """The schema, if missing; True when the index is new (or was of another version and is now empty)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if version == SCHEMA_VERSION and "turns" in tables:
        db.executescript(SCHEMA)  # nothing missing, normally; an index dropped by a failed bulk load comes back
        return False
    db.execute("BEGIN IMMEDIATE")
    for name in ("turns_fts", "turns", "turn_sources", "tenants", "calls"):
        db.execute(f"DROP TABLE IF EXISTS {name}")
    db.execute("COMMIT")
    db.executescript(SCHEMA)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return True


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB per connection (the default is 2 MiB)
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # reads without a system call per page
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
    conn.create_function("histogram_key", 2, histogram_key, deterministic=True)
    return conn
