"""``mise reindex``: (re)build the search index from the call store, e.g. after switching the embedded
index for OpenSearch, or to apply a new mapping version. Idempotent (documents are indexed by id),
resumable by running it again, with progress on stderr. The server may keep running meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from api.settings import Settings
from engine.search.documents import call_document, turn_document
from engine.store.base import CallStore
from engine.store.index import IndexOp, IndexUnavailable, SearchIndex
from engine.store.sqlite import SqliteStore

T = TypeVar("T")

BATCH_OPS = 1000


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reindex", help="rebuild the search index from the stored calls and turns")
    p.add_argument("--tenant", help="only this tenant's calls")
    p.add_argument("--retries", type=int, default=20, help="attempts per batch while the index is unavailable")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return asyncio.run(_reindex(settings, args.tenant, args.retries))


async def copy_calls(
    store: CallStore,
    index: SearchIndex,
    *,
    tenant: str | None = None,
    retries: int = 20,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[int, int, int]:
    """Index every stored call (of ``tenant``, or all) and its turns as they are now; returns (calls,
    turns, refused). Idempotent: documents are indexed by id. Store reads run in a thread."""
    keys = [k for k in await asyncio.to_thread(store.call_keys) if tenant is None or k[0] == tenant]
    progress(f"{len(keys)} calls into the {index.name} index")
    batch: list[IndexOp] = []
    turns = refused = 0
    started = time.monotonic()
    for i, (t, sid) in enumerate(keys, 1):
        call, stored = await asyncio.to_thread(_read_call, store, t, sid)
        if call is None:
            continue  # erased meanwhile
        batch.append(IndexOp("call", t, call_document(t, call)))
        batch += [IndexOp("turn", t, turn_document(t, turn, call)) for turn in stored]
        turns += len(stored)
        if len(batch) >= BATCH_OPS or i == len(keys):
            refused += await _write(index, batch, retries, progress)
            batch = []
            rate = turns / max(1e-9, time.monotonic() - started)
            progress(f"{i}/{len(keys)} calls, {turns} turns ({rate:.0f} turns/s)")
    if batch:
        refused += await _write(index, batch, retries, progress)
    progress(f"done, {len(keys)} calls, {turns} turns, {refused} refused")
    return len(keys), turns, refused


def _read_call(store: CallStore, tenant: str, call_sid: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    return store.get(tenant, call_sid), store.turns(tenant, call_sid)


async def _reindex(settings: Settings, tenant: str | None, retries: int) -> int:
    from api.indexing import open_index

    store = SqliteStore(settings.data_dir / "mise.db")
    index = open_index(
        data_dir=settings.data_dir, opensearch_url=settings.opensearch_url, prefix=settings.opensearch_prefix
    )

    def say(line: str) -> None:
        print(f"reindex: {line}", file=sys.stderr)

    try:
        await _retry(index.setup, retries, say)
        _, _, refused = await copy_calls(store, index, tenant=tenant, retries=retries, progress=say)
        return 1 if refused else 0
    finally:
        await index.close()
        store.close()


async def _write(index: SearchIndex, ops: list[IndexOp], retries: int, progress: Callable[[str], None]) -> int:
    async def write() -> list[tuple[IndexOp, str]]:
        return await index.write(ops)

    refused: list[tuple[IndexOp, str]] = await _retry(write, retries, progress)
    for op, reason in refused:
        progress(f"refused {op.kind} {(op.doc or {}).get('doc_id')}: {reason}")
    return len(refused)


async def _retry(action: Callable[[], Awaitable[T]], retries: int, progress: Callable[[str], None]) -> T:
    for attempt in range(retries):
        try:
            return await action()
        except IndexUnavailable as exc:
            delay = min(30.0, 0.5 * 2**attempt)
            progress(f"index unavailable ({exc}); retrying in {delay:.0f} s")
            await asyncio.sleep(delay)
    return await action()
