"""The durable indexing path of one API process: store -> spool -> bulk writes to the search index.

``IndexingStore`` wraps the call store: every change of a call (stream start and end, a status
callback) and every stored turn is also spooled as index documents, built from the store's own record
(``engine.search.documents``), before the store write returns. A call's change re-spools its turns
too, so their copies of the call's metadata (``from``, ``ms_to_end``, ...) follow it.
``Indexer`` drains the spool (and spools of processes that died) into the ``SearchIndex`` in batches:
retried with backoff while the backend is unavailable, the cursor moved only after a batch is taken,
so an outage or a restart loses nothing, and indexing by id duplicates nothing. Nothing here is on a
call's path: the call hosts never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any

from api.metrics import Metrics
from engine.call import CallMeta
from engine.search.documents import call_document, turn_document
from engine.store.base import CallFilters, CallStore, StatusCallback
from engine.store.index import IndexOp, IndexUnavailable, SearchIndex
from engine.store.spool import Position, Spool

log = logging.getLogger("mise.indexing")

BATCH_OPS = 1000
IDLE_S = 0.1  # how often an idle indexer looks for new ops (a turn is searchable within ~0.1 s + refresh)
BACKOFF_S = (0.25, 30.0)


class IndexingStore:
    """A ``CallStore`` that spools index documents for everything written through it."""

    def __init__(self, store: CallStore, spool: Spool, metrics: Metrics) -> None:
        self._store = store
        self._spool = spool
        self._metrics = metrics

    def _append(self, ops: list[IndexOp]) -> None:
        self._spool.append(ops)
        self._metrics.index_spooled.inc(len(ops))

    def _call_ops(self, tenant: str, call_sid: str, *, with_turns: bool) -> list[IndexOp]:
        call = self._store.get(tenant, call_sid)
        if call is None:
            return []
        ops = [IndexOp("call", tenant, call_document(tenant, call))]
        if with_turns:
            ops += [
                IndexOp("turn", tenant, turn_document(tenant, t, call)) for t in self._store.turns(tenant, call_sid)
            ]
        return ops

    def stream_started(self, meta: CallMeta, *, owner: str | None = None, lease_until: float | None = None) -> int:
        first_turn = self._store.stream_started(meta, owner=owner, lease_until=lease_until)
        self._append(self._call_ops(meta.tenant, meta.call_sid, with_turns=False))
        return first_turn

    def renew_leases(self, owner: str, until: float) -> int:
        return self._store.renew_leases(owner, until)

    def live_leases(self) -> list[dict[str, Any]]:
        return self._store.live_leases()

    def lose(self, tenant: str, call_sid: str, *, owner: str | None, ended_at: str, final: dict[str, Any]) -> bool:
        lost = self._store.lose(tenant, call_sid, owner=owner, ended_at=ended_at, final=final)
        if lost:
            self._append(self._call_ops(tenant, call_sid, with_turns=True))
        return lost

    def stream_ended(
        self, tenant: str, call_sid: str, *, ended_at: str, end_reason: str, final: dict[str, Any]
    ) -> None:
        self._store.stream_ended(tenant, call_sid, ended_at=ended_at, end_reason=end_reason, final=final)
        self._append(self._call_ops(tenant, call_sid, with_turns=True))

    def status_callback(self, tenant: str, callback: StatusCallback) -> bool:
        stored = self._store.status_callback(tenant, callback)
        if stored:
            call = self._store.get(tenant, callback.call_sid)
            self._append(self._call_ops(tenant, callback.call_sid, with_turns=not (call or {}).get("live")))
        return stored

    def get(self, tenant: str, call_sid: str) -> dict[str, Any] | None:
        return self._store.get(tenant, call_sid)

    def add_turns(self, tenant: str, turns: list[dict[str, Any]]) -> None:
        # Spooled first: a process killed between the two writes still indexes the turn.
        calls: dict[str, dict[str, Any] | None] = {}
        ops = []
        for t in turns:
            sid = t["call_sid"]
            if sid not in calls:
                calls[sid] = self._store.get(tenant, sid)
            ops.append(IndexOp("turn", tenant, turn_document(tenant, t, calls[sid])))
        self._append(ops)
        self._store.add_turns(tenant, turns)

    def turns(self, tenant: str, call_sid: str) -> list[dict[str, Any]]:
        return self._store.turns(tenant, call_sid)

    def turns_by_id(self, tenant: str, call_sid: str, turn_ids: list[int]) -> dict[int, dict[str, Any]]:
        return self._store.turns_by_id(tenant, call_sid, turn_ids)

    def add_segments(self, tenant: str, call_sid: str, segments: list[dict[str, Any]]) -> int:
        return self._store.add_segments(tenant, call_sid, segments)

    def segments(self, tenant: str, call_sid: str) -> list[dict[str, Any]]:
        return self._store.segments(tenant, call_sid)

    def call_keys(self) -> list[tuple[str, str]]:
        return self._store.call_keys()

    def erase(self, tenant: str, call_sid: str) -> dict[str, int]:
        # Spooled after whatever the call had spooled before: those documents cannot come back after it.
        self._append([IndexOp("delete_call", tenant, call_sid=call_sid)])
        return self._store.erase(tenant, call_sid)

    def spooled_to(self) -> Position:
        """The spool's end now: once the indexer has committed this far, every op spooled so far is applied."""
        return self._spool.end()

    def aged_calls(
        self, before: str, *, tenant: str | None = None, exclude: tuple[str, ...] = (), limit: int = 500
    ) -> list[tuple[str, str]]:
        return self._store.aged_calls(before, tenant=tenant, exclude=exclude, limit=limit)

    def recent(
        self,
        tenant: str,
        *,
        limit: int = 50,
        before: str | None = None,
        live: bool | None = None,
        filters: CallFilters | None = None,
    ) -> list[dict[str, Any]]:
        return self._store.recent(tenant, limit=limit, before=before, live=live, filters=filters)

    def close(self) -> None:
        self._store.close()


def open_index(*, data_dir: Path, opensearch_url: str | None, prefix: str) -> SearchIndex:
    """The search index this process writes and reads: OpenSearch when configured, else embedded.
    Not yet set up: the indexer does that (and retries it), so a server starts while its backend is away."""
    if opensearch_url:
        from engine.store.opensearch_index import OpenSearchIndex

        return OpenSearchIndex(opensearch_url, prefix=prefix)
    from engine.store.sqlite_shards import ShardedSqliteIndex

    for stale in data_dir.glob("index.db*"):  # the one-file layout before shards: derived data, rebuilt
        log.info("removing %s (the index is rebuilt from the call store in its new layout)", stale)
        stale.unlink()
    return ShardedSqliteIndex(data_dir / "index")


class Indexer:
    """Drains spools into a search index; one per API process."""

    def __init__(self, *, index: SearchIndex, root: Path, metrics: Metrics, store: CallStore) -> None:
        self.index = index
        self._root = root
        self._metrics = metrics
        self._store = store
        # Present while the index still needs filling from the call store (new, or rebuilt for a new
        # layout): a file, so a process that dies mid-backfill leaves the work to the next one.
        self._backfill_marker = root / "BACKFILL"
        self.spool = Spool.create(root)
        self._orphans = Spool.orphans(root)  # adopted now, drained first, removed when empty
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = False
        if self._orphans:
            log.info("indexer: replaying %d spool(s) left by stopped processes", len(self._orphans))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mise-indexer")

    async def stop(self, *, drain_s: float = 5.0) -> None:
        """Index what is spooled (for up to ``drain_s``), then stop; the rest waits in the spool."""
        deadline = time.monotonic() + drain_s
        while not self.idle() and time.monotonic() < deadline and self._task is not None and not self._task.done():
            await asyncio.sleep(0.05)
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.spool.sync)
        self.spool.close(remove_if_drained=True)
        for orphan in self._orphans:
            orphan.close(remove_if_drained=True)

    async def applied(self, upto: Position, timeout_s: float) -> bool:
        """Wait until this process's spool is indexed up to ``upto`` (and the index refreshed); False when
        ``timeout_s`` passed first (the index is away: the ops stay spooled and are applied later)."""
        deadline = time.monotonic() + timeout_s
        while (self.spool.committed.segment, self.spool.committed.offset) < (upto.segment, upto.offset):
            if time.monotonic() >= deadline or self._task is None or self._task.done():
                return False
            await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await self.index.refresh()
        return True

    def idle(self) -> bool:
        return self.spool.drained() and all(o.drained() for o in self._orphans)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            spool = next((o for o in self._orphans if not o.drained()), self.spool)
            try:
                taken = await self._batch(spool)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the backend is away or broke: keep everything, retry later
                spool.rewind()
                failures += 1
                self._metrics.index_retries.inc()
                delay = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** min(failures, 10)) * (0.5 + random.random() / 2)
                if failures == 1 or failures % 20 == 0:
                    reason = "unavailable" if isinstance(exc, IndexUnavailable) else "error"
                    log.warning("search index %s (%s): retrying in %.1f s, nothing is lost", reason, exc, delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("search index reachable again after %d retries", failures)
            failures = 0
            if not taken:
                for orphan in [o for o in self._orphans if o.drained()]:
                    orphan.close(remove_if_drained=True)
                    self._orphans.remove(orphan)
                self._metrics.index_lag.set(0)
                await asyncio.sleep(IDLE_S)

    async def _backfill(self) -> None:
        """Fill a new (or rebuilt) index with every stored call, before the spool: ops spooled since
        are newer, so they still win. Done once, whichever process gets to it; idempotent if repeated."""
        from api.reindex import copy_calls

        log.info("search index %s is new: indexing the stored calls", self.index.name)
        calls, turns, refused = await copy_calls(
            self._store, self.index, retries=1, progress=lambda line: log.info("backfill: %s", line)
        )
        self._metrics.index_indexed.inc(calls + turns - refused)
        self._backfill_marker.unlink(missing_ok=True)

    async def _batch(self, spool: Spool) -> int:
        if not self._ready:
            if await self.index.setup():  # templates, indices, aliases: idempotent; retried like a write
                self._backfill_marker.parent.mkdir(parents=True, exist_ok=True)
                self._backfill_marker.touch()
            if self._backfill_marker.exists():
                await self._backfill()
            self._ready = True
            log.info("search index ready: %s", self.index.name)
        await asyncio.to_thread(spool.sync)
        items, pos = await asyncio.to_thread(spool.read, BATCH_OPS)
        if not items:
            return 0
        self._metrics.index_lag.set(max(0.0, time.time() - items[0].at))
        refused = await self.index.write([i.op for i in items])
        await asyncio.to_thread(spool.commit, pos)
        self._metrics.index_indexed.inc(len(items) - len(refused))
        for op, reason in refused:
            self._metrics.index_failed.inc()
            doc_id = (op.doc or {}).get("doc_id", op.call_sid)
            log.error("search index refused %s %s for good: %s", op.kind, doc_id, reason)
        return len(items)
