"""The embedded index's shards: each tenant in one file, given to the emptiest, kept across reopens and
agreed between two index objects (two API processes) on one folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.search.execute import execute
from engine.search.query import parse_query
from engine.store.sqlite_shards import ShardedSqliteIndex
from tests.index_corpus import A, B, corpus_ops


def test_tenants_spread_over_the_files_and_keep_their_file(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int], int, int, int]:
        first = ShardedSqliteIndex(tmp_path / "index")
        other = ShardedSqliteIndex(tmp_path / "index")  # another process on the same folder
        try:
            await first.write(corpus_ops())  # tenants A and B
            shards = [first._routes.get(t) for t in (A, B)]
            totals = [(await execute(other, t, parse_query({"limit": 0})))["total"] for t in (A, B)]
            per_file = [await s.count(A) + await s.count(B) for s in first.shards]
            unknown = (await execute(first, "initech", parse_query({"limit": 0})))["total"]
        finally:
            await first.close()
            await other.close()
        reopened = ShardedSqliteIndex(tmp_path / "index")
        try:
            again = (await execute(reopened, A, parse_query({"limit": 0})))["total"]
        finally:
            await reopened.close()
        return [s or 0 for s in shards], per_file, totals[0] + totals[1], unknown, again

    shards, per_file, total, unknown, again = asyncio.run(scenario())
    assert sorted(shards) == [0, 1]  # two tenants, two files: one each
    assert sorted(per_file) == sorted([18, 3]) and total == 21  # each file holds exactly its tenant's turns
    assert unknown == 0 and again == 18
