"""``ShardedSqliteIndex``: the embedded index as a few SQLite files, each tenant in one of them.

SQLite has one writer per file, and a write is mostly SQLite's own work (pages, B-trees, FTS), which
releases the GIL: two files written from two threads index ~1.7-1.9x as fast on two cores as one file
(bench/search.py). Every query is scoped to one tenant, so it is answered by that tenant's file alone,
exactly as one ``SqliteIndex`` answers it. A tenant's file is given on its first write, to the file with
the fewest tenants so far, and kept in ``shards.db`` (SQLite, so several processes agree on it); a
tenant never written is in no file, and reads find nothing for it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from engine.search.query import Agg, Filter, Sort
from engine.store.index import Candidate, IndexOp, Row
from engine.store.sqlite_index import SqliteIndex
from engine.store.sqlite_write import BulkLoader

SHARDS: Final = 2  # one writer per core of this project's machines


class _Routes:
    """tenant -> shard, given once (fewest tenants first) and shared by every process through SQLite."""

    def __init__(self, path: Path, shards: int) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS routes (tenant TEXT PRIMARY KEY, shard INTEGER NOT NULL)")
        self._shards = shards
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> int | None:
        shard = self._known.get(tenant)
        if shard is None:
            with self._lock:
                row = self._db.execute("SELECT shard FROM routes WHERE tenant = ?", (tenant,)).fetchone()
            if row is not None:
                shard = self._known[tenant] = int(row[0])
        return shard

    def assign(self, tenant: str) -> int:
        shard = self.get(tenant)
        if shard is not None:
            return shard
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one process at a time decides
            try:
                row = self._db.execute("SELECT shard FROM routes WHERE tenant = ?", (tenant,)).fetchone()
                if row is None:
                    counts = dict(self._db.execute("SELECT shard, COUNT(*) FROM routes GROUP BY shard").fetchall())
                    chosen = min(range(self._shards), key=lambda s: (counts.get(s, 0), s))
                    self._db.execute("INSERT INTO routes (tenant, shard) VALUES (?, ?)", (tenant, chosen))
                else:
                    chosen = int(row[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._known[tenant] = chosen
        return chosen

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ShardedSqliteIndex:
    """``SearchIndex`` over ``shards`` SQLite files in ``folder`` (``index-0.db``, ...)."""

    name = "sqlite"

    def __init__(self, folder: str | Path, *, shards: int = SHARDS, timeout_s: float = 2.0) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.shards = [SqliteIndex(folder / f"index-{i}.db", timeout_s=timeout_s) for i in range(shards)]
        self._routes = _Routes(folder / "shards.db", shards)

    def _of(self, tenant: str) -> SqliteIndex:
        """The tenant's shard for reading (shard 0, empty for it, when the tenant was never written)."""
        return self.shards[self._routes.get(tenant) or 0]

    def _split(self, ops: Iterable[IndexOp]) -> list[list[IndexOp]]:
        """Ops per shard, in their order (each tenant's ops stay in order: a tenant lives in one shard)."""
        parts: list[list[IndexOp]] = [[] for _ in self.shards]
        for op in ops:
            parts[self._routes.assign(op.tenant)].append(op)
        return parts

    async def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        """Each shard's ops in one transaction of that shard, the shards in parallel threads."""
        parts = await asyncio.to_thread(self._split, ops)  # a new tenant's route is a (small) write
        results = await asyncio.gather(*(s.write(p) for s, p in zip(self.shards, parts, strict=True) if p))
        return [refused for result in results for refused in result]

    def bulk(self, *, durable: bool = False) -> ShardedBulkLoader:
        """``SqliteIndex.bulk`` on every shard at once (see there)."""
        return ShardedBulkLoader(self, durable=durable)

    async def setup(self) -> bool:
        fresh = [await s.setup() for s in self.shards]
        return any(fresh)

    async def refresh(self) -> None:
        """Nothing to do: a committed write is visible to every later read."""

    async def find(self, tenant: str, f: Filter, sort: Sort, offset: int, limit: int) -> tuple[int, list[Row]]:
        return await self._of(tenant).find(tenant, f, sort, offset, limit)

    async def group(
        self, tenant: str, f: Filter, min_matches: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, int]]]:
        return await self._of(tenant).group(tenant, f, min_matches, offset, limit)

    async def turns_of(self, tenant: str, f: Filter, call_sids: list[str], per_call: int) -> dict[str, list[Row]]:
        return await self._of(tenant).turns_of(tenant, f, call_sids, per_call)

    async def candidates(self, tenant: str, f: Filter, cap: int) -> list[Candidate]:
        return await self._of(tenant).candidates(tenant, f, cap)

    async def get_turns(self, tenant: str, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        return await self._of(tenant).get_turns(tenant, keys)

    async def aggregate(self, tenant: str, f: Filter, aggs: tuple[Agg, ...]) -> dict[str, Any]:
        return await self._of(tenant).aggregate(tenant, f, aggs)

    async def count(self, tenant: str, call_sid: str | None = None) -> int:
        return await self._of(tenant).count(tenant, call_sid)

    async def get_call(self, tenant: str, call_sid: str) -> dict[str, Any] | None:
        return await self._of(tenant).get_call(tenant, call_sid)

    async def close(self) -> None:
        for s in self.shards:
            await s.close()
        self._routes.close()


class ShardedBulkLoader:
    """One ``BulkLoader`` per shard; ``write`` feeds them in parallel threads."""

    def __init__(self, index: ShardedSqliteIndex, *, durable: bool) -> None:
        self._index = index
        self._loaders: list[BulkLoader] = [s.bulk(durable=durable) for s in index.shards]
        self._pool = ThreadPoolExecutor(len(self._loaders), thread_name_prefix="mise-shard")

    def __enter__(self) -> ShardedBulkLoader:
        for loader in self._loaders:
            loader.__enter__()
        return self

    def write(self, ops: list[IndexOp]) -> list[tuple[IndexOp, str]]:
        parts = self._index._split(ops)
        futures = [self._pool.submit(loader.write, part) for loader, part in zip(self._loaders, parts, strict=True)]
        return [refused for future in futures for refused in future.result()]

    def __exit__(self, *exc: object) -> None:
        try:
            # Each shard builds its indexes at the end of its load: in parallel too.
            list(self._pool.map(lambda loader: loader.__exit__(*exc), self._loaders))
        finally:
            self._pool.shutdown()
