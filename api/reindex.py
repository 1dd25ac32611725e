"""``mise reindex``: (re)build the search index from the call store, e.g. after switching the embedded
index for OpenSearch, or to apply a new mapping version. Idempotent (documents are indexed by id),
resumable by running it again, with progress on stderr. The server may keep running meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from api.indexing import open_index
from api.settings import Settings
from engine.search.documents import call_document, turn_document
from engine.store.index import IndexOp, IndexUnavailable, SearchIndex
from engine.store.sqlite import SqliteStore

BATCH_OPS = 1000


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reindex", help="rebuild the search index from the stored calls and turns")
    p.add_argument("--tenant", help="only this tenant's calls")
    p.add_argument("--retries", type=int, default=20, help="attempts per batch while the index is unavailable")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return asyncio.run(_reindex(settings, args.tenant, args.retries))


async def _reindex(settings: Settings, tenant: str | None, retries: int) -> int:
    store = SqliteStore(settings.data_dir / "mise.db")
    index = open_index(
        data_dir=settings.data_dir, opensearch_url=settings.opensearch_url, prefix=settings.opensearch_prefix
    )
    try:
        keys = [k for k in store.call_keys() if tenant is None or k[0] == tenant]
        print(f"reindex: {len(keys)} calls into the {index.name} index", file=sys.stderr)
        await _retry(index.setup, retries)
        batch: list[IndexOp] = []
        turns = refused = 0
        started = time.monotonic()
        for i, (t, sid) in enumerate(keys, 1):
            call = store.get(t, sid)
            if call is None:
                continue  # erased meanwhile
            batch.append(IndexOp("call", t, call_document(t, call)))
            for turn in store.turns(t, sid):
                batch.append(IndexOp("turn", t, turn_document(t, turn, call)))
                turns += 1
            if len(batch) >= BATCH_OPS or i == len(keys):
                refused += await _write(index, batch, retries)
                batch = []
                rate = turns / max(1e-9, time.monotonic() - started)
                print(f"reindex: {i}/{len(keys)} calls, {turns} turns ({rate:.0f} turns/s)", file=sys.stderr)
        if batch:
            refused += await _write(index, batch, retries)
        print(f"reindex: done, {len(keys)} calls, {turns} turns, {refused} refused", file=sys.stderr)
        return 1 if refused else 0
    finally:
        await index.close()
        store.close()


async def _write(index: SearchIndex, ops: list[IndexOp], retries: int) -> int:
    async def write() -> list[tuple[IndexOp, str]]:
        return await index.write(ops)

    refused = await _retry(write, retries)
    for op, reason in refused:
        print(f"reindex: refused {op.kind} {(op.doc or {}).get('doc_id')}: {reason}", file=sys.stderr)
    return len(refused)


async def _retry(action: Any, retries: int) -> Any:
    for attempt in range(retries):
        try:
            return await action()
        except IndexUnavailable as exc:
            delay = min(30.0, 0.5 * 2**attempt)
            print(f"reindex: index unavailable ({exc}); retrying in {delay:.0f} s", file=sys.stderr)
            await asyncio.sleep(delay)
    return await action()
