"""Search benchmark (issue 16): indexing throughput and query latency of both backends, and end to end.

    .venv/bin/python bench/search.py                       # everything (~25 minutes on 2 cores)
    .venv/bin/python bench/search.py --only embedded --turns 200000

1. Embedded: a synthetic corpus (default 1M turns: 20k calls x 50 turns in 10 tenants) built by
   ``engine.search.documents.turn_document`` from realistic ``turn.ended`` payloads, written into a
   ``ShardedSqliteIndex`` as the server opens it (two SQLite files, a tenant in one): ``bulk``, the import
   path; then the live ``write`` path, batches of 1,000 as the indexer sends them (new turns, the same
   turns re-indexed at the call's end, delete_call); then
   p50/p95 of each query kind through ``engine.search.execute.execute(index, tenant, parse_query(...))``.
2. OpenSearch: the same query kinds on a smaller corpus (``--os-turns``) on a real node
   (tests/opensearch_node.py, 512 MB heap), indexed through ``OpenSearchIndex.write``.
3. End to end: a real ``mise serve`` per backend, ~10 concurrent real-time Twilio calls (the demo call
   with fresh SIDs); for each ``turn.ended`` read from ``GET /v1/events``, ``GET /v1/search`` is polled
   until that turn is found: p50/p95/max of found - SSE receipt.

Everything printed says its conditions (cores, load, corpus, versions); the summary ends with PASS/FAIL
per target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.search.documents import call_document, turn_document  # noqa: E402
from engine.search.execute import execute  # noqa: E402
from engine.search.fields import EMOTIONS, FEATURES  # noqa: E402
from engine.search.query import parse_query  # noqa: E402
from engine.store.index import IndexOp, SearchIndex  # noqa: E402

TURNS_PER_CALL = 50
BATCH = 1000  # ops per write, as api/indexing.py's Indexer sends them
REPEAT = 100  # runs per query kind

# --- the corpus ---------------------------------------------------------------------------------------

# Ranked roughly by frequency in contact-centre speech; the domain words sit where a support line's
# transcripts put them (account ~0.3% of words, cancel ~0.15%, refund ~0.1%), synthetic words fill
# the long tail up to VOCABULARY words. Frequencies follow Zipf (s = 1.0) over the ranks.
COMMON_TEXT = (
    "i you the to a and it that is my of in for this have we so can be on me what your with just not do"
    " yes no okay know will get about was there if like at are all but one now right thank please"
    " account let see need call could would here it's don't help because time sure well number"
    " check then they our from how phone want going back can't today day bill service card payment cancel"
    " email address name order last month still up out try again let's sorry problem work"
    " refund internet charge plan online never said told already"
)
COMMON = COMMON_TEXT.split()
VOCABULARY = 3000


def _vocabulary() -> list[str]:
    words = list(dict.fromkeys(COMMON))
    rng = random.Random(7)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["ing", "er", "ly", "tion", "ed"]
    seen = set(words)
    while len(words) < VOCABULARY:
        w = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


WORDS = _vocabulary()
_P = 1.0 / np.arange(1, len(WORDS) + 1)
ZIPF = _P / _P.sum()


def word_share(word: str) -> float:
    return float(ZIPF[WORDS.index(word)])


def _sid(prefix: str, n: int, salt: int) -> str:
    return f"{prefix}{(n * 2654435761 + salt) % (1 << 64):016x}{n:016x}"


@dataclass
class Corpus:
    """Deterministic generator of calls (records) and their turns (``turn.ended`` payloads)."""

    calls: int
    tenants: int
    seed: int = 1
    prefix: str = "t"

    def tenant(self, c: int) -> str:
        return f"{self.prefix}{c % self.tenants:02d}"

    def call_sid(self, c: int) -> str:
        return _sid("CA", c, self.seed)

    def ops(self, first: int, count: int, *, live: bool = False) -> Iterator[IndexOp]:
        """The call document then the turns of calls ``first .. first+count-1`` (``live``: while the
        call runs: no duration, so no ms_to_end)."""
        for c in range(first, first + count):
            call, turns = self.call(c, live=live)
            tenant = self.tenant(c)
            yield IndexOp("call", tenant, call_document(tenant, call))
            for turn in turns:
                yield IndexOp("turn", tenant, turn_document(tenant, turn, call))

    def call(self, c: int, *, live: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = np.random.default_rng([self.seed, c])
        call_sid, stream_sid = self.call_sid(c), _sid("MZ", c, self.seed + 1)
        n = TURNS_PER_CALL
        # Speakers alternate, with the occasional double turn (a pause splits one person's speech).
        speakers: list[str] = []
        who = 0 if rng.random() < 0.8 else 1  # the agent usually speaks first
        for _ in range(n):
            speakers.append(("agent", "caller")[who])
            if rng.random() > 0.08:
                who ^= 1
        durations = np.clip(rng.lognormal(7.9, 0.6, n), 300, 25_000).astype(int)  # ~2.7 s median
        gaps = np.clip(rng.normal(700, 600, n), -900, 6000).astype(int)
        gaps[rng.random(n) < 0.02] += 4000  # dead air now and then
        interrupted = rng.random(n) < 0.05
        lengths = np.clip(rng.poisson(durations / 1000 * 2.6) + 1, 1, 60)
        tokens = rng.choice(len(WORDS), size=int(lengths.sum()), p=ZIPF)
        frustrated_call = rng.random() < 0.15  # a few calls run hot
        base = rng.beta(1.3, 7.0)
        emotion_p = np.array([0.45, 0.15, 0.1, 0.12, 0.05, 0.04, 0.05, 0.04])
        started = 1_767_225_600_000 + c * 97_000 + int(rng.integers(0, 60_000))  # from 2026-01-01
        scores_all = rng.dirichlet(emotion_p * 8, size=n)
        noise = rng.normal(0, 0.08, n)
        arousal = rng.uniform(0.2, 0.9, n)
        z = rng.normal(0, 1.1, (2, n))
        feats_all = np.stack(
            [
                rng.normal(160, 35, n),  # pitch_mean_hz (callers higher, below)
                np.abs(rng.normal(18, 6, n)),
                np.abs(rng.normal(7, 2.5, n)),
                rng.normal(0, 1.5, n),
                rng.normal(-28, 5, n),
                np.abs(rng.normal(25, 5, n)),
                np.abs(rng.normal(4.2, 0.8, n)),
                rng.uniform(0.4, 0.95, n),
                np.abs(rng.normal(0.01, 0.004, n)),
                np.abs(rng.normal(0.12, 0.04, n)),
                rng.normal(11, 3, n),
            ]
        ).T.tolist()
        overlaps = rng.integers(200, 1500, n).tolist()
        backchannel = (rng.random(n) < 0.5).tolist()
        turns: list[dict[str, Any]] = []
        t = int(rng.integers(200, 1500))
        k = 0
        drift = 0.0
        for i in range(n):
            gap = int(gaps[i]) if i else None
            overlap = 0
            if i:
                if interrupted[i]:
                    overlap = overlaps[i]
                    t = max(t - overlap, turns[-1]["start_ms"] + 100)
                else:
                    t += max(int(gaps[i]), 0)
            start, end = t, t + int(durations[i])
            t = end
            speaker = speakers[i]
            length = int(lengths[i])
            words = " ".join([WORDS[w] for w in tokens[k : k + length].tolist()])
            k += length
            drift = min(1.0, drift + (0.03 if frustrated_call else -0.005))
            caller = speaker == "caller"
            frustration = None
            if caller:
                frustration = round(min(1.0, max(0.0, base + drift * 0.5 + float(noise[i]))), 6)
            scores = scores_all[i]
            if frustration is not None and frustration > 0.6:
                scores[3] += 0.5  # angry
                scores /= scores.sum()
            label = EMOTIONS[int(np.argmax(scores))]
            values = feats_all[i]
            if caller:
                values[0] += 40.0
            feats: dict[str, float | None] = dict(zip(FEATURES, values, strict=False))
            feats["pitch_z"] = float(z[0, i]) if i >= 2 else None
            feats["energy_z"] = float(z[1, i]) if i >= 2 else None
            turns.append(
                {
                    "type": "turn.ended",
                    "id": f"{call_sid}:{i:08d}",
                    "call_sid": call_sid,
                    "stream_sid": stream_sid,
                    "turn_id": i,
                    "speaker": speaker,
                    "track": "inbound" if caller else "outbound",
                    "start_ms": start,
                    "end_ms": end,
                    "duration_ms": end - start,
                    "text": words,
                    "backchannel": length <= 1 and backchannel[i],
                    "overlap_ms": overlap,
                    "interrupted_other": bool(interrupted[i]),
                    "interrupted_by_other": bool(i + 1 < n and interrupted[i + 1]),
                    "gap_before_ms": gap,
                    "response_latency_ms": gap if gap is not None and speakers[i - 1] != speaker else None,
                    "features": feats,
                    "features_window_ms": min(end - start, 8000),
                    "features_skipped": None,
                    "frustration": frustration,
                    "emotion": {
                        "label": label,
                        "scores": {e: round(float(s), 6) for e, s in zip(EMOTIONS, scores.tolist(), strict=True)},
                        "arousal": round(float(arousal[i]), 6),
                    },
                }
            )
        duration = turns[-1]["end_ms"] + int(rng.integers(300, 3000))
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started / 1000)) + f".{started % 1000:03d}Z"
        call = {
            "call_sid": call_sid,
            "account_sid": "AC" + "0" * 32,
            "stream_sid": stream_sid,
            "from": f"+1555{c % 9_000_000:07d}",
            "to": "+15557770000",
            "direction": "inbound" if rng.random() < 0.8 else "outbound-api",
            "parent_call_sid": None,
            "status": "in-progress" if live else "completed",
            "live": live,
            "first_seen_at": iso,
            "started_at": iso,
            "ended_at": None if live else iso,
            "duration_ms": None if live else duration,
            "call_duration_s": None if live else duration // 1000,
            "tracks_declared": ["inbound", "outbound"],
            "tracks": {},
            "custom_parameters": {"campaign": ("spring", "summer", "retention")[c % 3]},
            "lifecycle": [],
            "end_reason": None if live else "stop",
            "summary": {},
        }
        return call, turns


# --- measuring ----------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def say(*parts: object) -> None:
    print(*parts, flush=True)


TEXT_WORDS = ("cancel", "refund", "account", "payment", "internet", "charge", "order", "card", "bill", "email")
COMMON_WORDS = ("account", "help", "time", "number", "phone", "call", "need", "please")


@dataclass(frozen=True)
class Kind:
    name: str
    target_ms: float
    make: Callable[[random.Random], dict[str, Any]]


def _text(r: random.Random) -> dict[str, Any]:
    choice = r.random()
    if choice < 0.6:
        text = r.choice(TEXT_WORDS)
    elif choice < 0.8:
        text = f"{r.choice(TEXT_WORDS)} OR {r.choice(TEXT_WORDS)}"
    else:
        text = f'"{r.choice(("my account", "a refund", "cancel my", "the bill"))}"'
    return {"text": text}


def _text_ranges(r: random.Random) -> dict[str, Any]:
    return {
        "text": r.choice(TEXT_WORDS),
        "speaker": "caller",
        "where": {"frustration": {"gte": r.choice((0.3, 0.4, 0.5, 0.6))}},
    }


def _sorted_filters(r: random.Random) -> dict[str, Any]:
    where: dict[str, Any] = {"frustration": {"gte": r.choice((0.5, 0.6, 0.7))}}
    if r.random() < 0.5:
        where["emotion"] = r.choice(("angry", "neutral", "sad"))
    else:
        where["gap_before_ms"] = {"gt": r.choice((500, 1000, 2000))}
    return {"speaker": "caller", "where": where, "sort": "-frustration"}


def _grouped(r: random.Random) -> dict[str, Any]:
    if r.random() < 0.5:
        return {"text": r.choice(TEXT_WORDS), "group_by": "call", "min_matches": 2}
    return {
        "speaker": "caller",
        "where": {"frustration": {"gte": r.choice((0.5, 0.6, 0.7))}},
        "group_by": "call",
        "min_matches": 2,
    }


def _sequence(r: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sequence": [
            {"speaker": "agent", "where": {"interrupted_other": True}},
            {
                "speaker": "caller",
                "where": {"frustration": {"gte": r.choice((0.6, 0.7, 0.8))}},
                "within_turns": r.choice((1, 2, 3)),
            },
        ]
    }
    if r.random() < 0.5:
        out["group_by"] = "call"
    return out


def _position(r: random.Random) -> dict[str, Any]:
    return {"last_s": r.choice((30, 60, 90)), "speaker": r.choice(("caller", "agent"))}


def _aggregation(r: random.Random) -> dict[str, Any]:
    return {"text": r.choice(COMMON_WORDS), "limit": 10, "aggs": {"emotions": {"terms": "emotion"}}}


KINDS = (
    Kind("text", 15, _text),
    Kind("text + speaker + frustration range", 15, _text_ranges),
    Kind("filters only, sort -frustration", 15, _sorted_filters),
    Kind("group_by call, min_matches 2", 20, _grouped),
    Kind("sequence (interrupt -> frustration)", 20, _sequence),
    Kind("position (last_s + speaker)", 15, _position),
    Kind("aggregation (terms emotion, common word)", 30, _aggregation),
)


@dataclass
class Timing:
    backend: str
    kind: Kind
    ms: list[float] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return pct(self.ms, 50)

    @property
    def p95(self) -> float:
        return pct(self.ms, 95)


async def time_queries(index: SearchIndex, tenants: list[str], repeat: int, backend: str) -> list[Timing]:
    out = []
    for kind in KINDS:
        r = random.Random(kind.name)
        for _ in range(3):  # warm-up: the first run of a statement also prepares it
            await execute(index, r.choice(tenants), parse_query(kind.make(r)))
        timing = Timing(backend, kind)
        r = random.Random(kind.name + "measured")
        for _ in range(repeat):
            tenant, query = r.choice(tenants), parse_query(kind.make(r))
            t0 = time.perf_counter()
            answer = await execute(index, tenant, query)
            timing.ms.append((time.perf_counter() - t0) * 1000)
            timing.totals.append(int(answer.get("total", answer.get("total_calls", 0))))
        say(
            f"  {kind.name:42s} p50 {timing.p50:7.1f} ms  p95 {timing.p95:7.1f} ms  max {max(timing.ms):7.1f} ms"
            f"  (target p95 <= {kind.target_ms:g} ms; matches per query: median {statistics.median(timing.totals):g})"
        )
        out.append(timing)
    return out


def disk_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@dataclass
class Results:
    rows: list[tuple[str, str, str, bool | None]] = field(default_factory=list)  # (what, figure, target, pass)

    def add(self, what: str, figure: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append((what, figure, target, ok))


def chunks(corpus: Corpus, first: int, calls: int, per_chunk: int, **kw: Any) -> Iterator[tuple[list[IndexOp], float]]:
    """(ops, seconds it took to generate them) for ``per_chunk`` calls at a time."""
    for c in range(first, first + calls, per_chunk):
        t0 = time.perf_counter()
        ops = list(corpus.ops(c, min(per_chunk, first + calls - c), **kw))
        yield ops, time.perf_counter() - t0


async def bench_embedded(args: argparse.Namespace, results: Results) -> None:
    from engine.store.sqlite_shards import ShardedSqliteIndex

    calls = args.turns // TURNS_PER_CALL
    corpus = Corpus(calls=calls, tenants=args.tenants)
    folder = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="mise-bench-search-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index"
    shutil.rmtree(path, ignore_errors=True)
    say(
        f"\n== 1. Embedded (SQLite {sqlite3.sqlite_version}, FTS5): {calls * TURNS_PER_CALL:,} turns = {calls:,} calls"
        f" x {TURNS_PER_CALL} turns, {args.tenants} tenants, in {path}"
    )
    index = ShardedSqliteIndex(path)  # as the server opens it: 2 files, a tenant in one
    try:
        # Bulk load: the import path (ShardedSqliteIndex.bulk), 10,000 documents per transaction per shard.
        spent = generated = 0.0
        with index.bulk() as load:
            for ops, gen_s in chunks(corpus, 0, calls, 500):
                generated += gen_s
                t0 = time.perf_counter()
                assert load.write(ops) == []
                spent += time.perf_counter() - t0
            t0 = time.perf_counter()
        finish = time.perf_counter() - t0
        spent += finish
        turns = calls * TURNS_PER_CALL
        rate = turns / spent
        size = disk_size(folder)
        say(
            "  bulk load (ShardedSqliteIndex.bulk, the import path: 2 SQLite files written in parallel, 10,000"
            " documents per transaction, secondary indexes"
            " built and FTS optimized at the end, no fsync until the end):"
            f" {turns:,} turns + {calls:,} call documents in"
            f" {spent:.1f} s = {rate:,.0f} turns/s (of which building indexes + FTS optimize at the end"
            f" {finish:.1f} s; generating the documents, not counted: {generated:.1f} s)"
        )
        say(f"  disk: {size / 1e9:.2f} GB ({size / turns:,.0f} bytes per turn), load average {load_average()}")
        results.add("embedded: bulk load (import path)", f"{rate:,.0f} turns/s", ">= 40,000 turns/s", rate >= 40_000)
        results.add("embedded: disk size", f"{size / 1e9:.2f} GB for {turns:,} turns")

        # The live path: ShardedSqliteIndex.write, batches of 1,000 as the indexer sends them, into the full index.
        live = Corpus(calls=args.live_calls, tenants=args.tenants, seed=99, prefix="live")
        live_turns = args.live_calls * TURNS_PER_CALL
        for phase, kw in (("new turns (call live)", {"live": True}), ("re-indexed at call end", {"live": False})):
            spent = 0.0
            for ops, _ in chunks(live, 0, args.live_calls, 100, **kw):
                for i in range(0, len(ops), BATCH):
                    t0 = time.perf_counter()
                    assert await index.write(ops[i : i + BATCH]) == []
                    spent += time.perf_counter() - t0
            rate = live_turns / spent
            say(
                f"  live path (ShardedSqliteIndex.write, batches of {BATCH}, {args.tenants} tenants), {phase}:"
                f" {live_turns:,} turns in {spent:.1f} s"
                f" = {rate:,.0f} turns/s"
            )
            # No target: the live path needs ~30 turns/s per 100 concurrent calls (the target is the corpus build).
            results.add(f"embedded: live write, {phase}", f"{rate:,.0f} turns/s")
        deletes = [IndexOp("delete_call", live.tenant(c), call_sid=live.call_sid(c)) for c in range(args.live_calls)]
        t0 = time.perf_counter()
        for i in range(0, len(deletes), BATCH):
            assert await index.write(deletes[i : i + BATCH]) == []
        spent = time.perf_counter() - t0
        say(
            f"  live path, delete_call: {args.live_calls:,} calls ({live_turns:,} turns) in {spent:.1f} s"
            f" = {live_turns / spent:,.0f} turns/s; turns of the live tenants left:"
            f" {sum([await index.count(live.tenant(t)) for t in range(args.tenants)]):,}"
        )

        say(
            f"  queries: {args.repeat} runs per kind through execute(index, tenant, parse_query(...)), tenant and"
            f" parameters varying; load average {load_average()}"
        )
        tenants = sorted({corpus.tenant(c) for c in range(args.tenants)})
        for timing in await time_queries(index, tenants, args.repeat, "embedded"):
            results.add(
                f"embedded: {timing.kind.name}",
                f"p50 {timing.p50:.1f} ms, p95 {timing.p95:.1f} ms",
                f"p95 <= {timing.kind.target_ms:g} ms",
                timing.p95 <= timing.kind.target_ms,
            )
    finally:
        await index.close()
        if not args.data_dir and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def opensearch(workdir: Path) -> Iterator[str]:
    """A real node (tests/opensearch_node.py: loopback, 512 MB heap), or MISE_BENCH_OPENSEARCH_URL."""
    from tests.opensearch_node import HEAP, VERSION, find_home, opensearch_node

    external = os.environ.get("MISE_BENCH_OPENSEARCH_URL")
    if external:
        say(f"  OpenSearch: the external node {external}")
        yield external
        return
    home = find_home()
    if home is None:
        raise SystemExit("no OpenSearch install: run `make opensearch` (or set MISE_OPENSEARCH_HOME)")
    t0 = time.perf_counter()
    with opensearch_node(home, workdir) as url:
        say(f"  OpenSearch {VERSION} node at {url} ({home}), JVM {HEAP}, up in {time.perf_counter() - t0:.0f} s")
        yield url


async def bench_opensearch(args: argparse.Namespace, results: Results) -> None:
    from engine.store.opensearch_index import OpenSearchIndex

    calls = args.os_turns // TURNS_PER_CALL
    corpus = Corpus(calls=calls, tenants=args.tenants)
    turns = calls * TURNS_PER_CALL
    say(f"\n== 2. OpenSearch: {turns:,} turns = {calls:,} calls x {TURNS_PER_CALL} turns, {args.tenants} tenants")
    workdir = Path(tempfile.mkdtemp(prefix="mise-bench-os-"))
    try:
        with opensearch(workdir) as url:
            index = OpenSearchIndex(url, prefix="bench" + str(os.getpid()))
            try:
                await index.setup()
                spent = 0.0
                for ops, _ in chunks(corpus, 0, calls, 200):
                    for i in range(0, len(ops), BATCH):
                        t0 = time.perf_counter()
                        assert await index.write(ops[i : i + BATCH]) == []
                        spent += time.perf_counter() - t0
                t0 = time.perf_counter()
                await index.refresh()
                spent += time.perf_counter() - t0
                rate = turns / spent
                say(
                    f"  indexing (OpenSearchIndex.write, batches of {BATCH} ops, one bulk request each):"
                    f" {turns:,} turns in {spent:.1f} s = {rate:,.0f} turns/s; load average {load_average()}"
                )
                results.add("opensearch: indexing", f"{rate:,.0f} turns/s ({turns:,} turns)")
                with contextlib.suppress(Exception):
                    stats = await index.client.indices.stats(index=index.turns, metric="store")
                    size = stats["_all"]["primaries"]["store"]["size_in_bytes"]
                    say(f"  index size: {size / 1e6:,.0f} MB ({size / turns:,.0f} bytes per turn)")
                say(f"  queries: {args.repeat} runs per kind, load average {load_average()}")
                tenants = sorted({corpus.tenant(c) for c in range(args.tenants)})
                for timing in await time_queries(index, tenants, args.repeat, "opensearch"):
                    results.add(
                        f"opensearch: {timing.kind.name}",
                        f"p50 {timing.p50:.1f} ms, p95 {timing.p95:.1f} ms",
                        f"p95 <= {timing.kind.target_ms:g} ms",
                        timing.p95 <= timing.kind.target_ms,
                    )
            finally:
                await index.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- end to end ---------------------------------------------------------------------------------------


def call_messages() -> tuple[list[dict[str, Any]], str]:
    """The call each simulated caller plays: the synthetic two-party Twilio capture of the shared data
    (56 s), else the bundled demo call (41 s)."""
    from api.simulate import load_jsonl, messages_from_tracks, read_ulaw_track

    shared = Path(os.environ.get("MISE_TEST_DATA", REPO.parent / "shared" / "data"))
    capture = shared / "calls" / "synthetic_dialogue" / "twilio.jsonl"
    if capture.exists():
        return load_jsonl(capture), str(capture)
    demo = REPO / "api" / "demo"
    inbound, outbound = read_ulaw_track(demo / "inbound.wav"), read_ulaw_track(demo / "outbound.wav")
    return messages_from_tracks(inbound, outbound), str(demo)


async def e2e_run(http: str, ws: str, messages: list[dict[str, Any]], n_calls: int) -> tuple[list[float], int, int]:
    """``n_calls`` real-time calls (started 1 s apart); per turn.ended, seconds from its SSE receipt to
    the first search answer holding it. Returns (latencies, turns seen, turns never found)."""
    import httpx

    from api.simulate import play, with_fresh_sids
    from tests.support import API_KEY, SseReader

    sse = SseReader(http + "/v1/events")
    sse.connected.wait(10)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    latencies: list[float] = []
    missing = 0
    async with httpx.AsyncClient(base_url=http, headers=headers, timeout=10) as client:

        async def find(call_sid: str, turn_id: int, received: float) -> None:
            nonlocal missing
            want = f"{call_sid}:{turn_id}"
            params = {"call_sid": call_sid, "min_turn_index": str(turn_id), "max_turn_index": str(turn_id)}
            while time.time() - received < 30:
                r = await client.get("/v1/search", params=params)
                if r.status_code == 200 and any(h["id"] == want for h in r.json()["hits"]):
                    latencies.append(time.time() - received)
                    return
                await asyncio.sleep(0.05)
            missing += 1

        calls = [with_fresh_sids(messages, api_key=API_KEY) for _ in range(n_calls)]

        async def start(i: int, msgs: list[dict[str, Any]]) -> None:
            await asyncio.sleep(i * 1.0)
            await play(ws, msgs, speed=1.0)

        players = asyncio.gather(*(start(i, m) for i, m in enumerate(calls)))
        pollers: list[asyncio.Task[None]] = []
        seen = 0
        while not players.done():
            await asyncio.sleep(0.01)
            for event in sse.events[seen:]:
                if event.event == "turn.ended":
                    data = event.data
                    pollers.append(asyncio.create_task(find(data["call_sid"], int(data["turn_id"]), event.at)))
            seen = len(sse.events)
        await players
        await asyncio.sleep(3)  # the last turns end with the calls
        for event in sse.events[seen:]:
            if event.event == "turn.ended":
                pollers.append(asyncio.create_task(find(event.data["call_sid"], int(event.data["turn_id"]), event.at)))
        await asyncio.gather(*pollers)
    sse.stop()
    return latencies, len(pollers), missing


def bench_e2e(args: argparse.Namespace, results: Results) -> None:
    from actors import runtime
    from tests.support import Server

    messages, source = call_messages()
    media = sum(1 for m in messages if m.get("event") == "media") // 2
    say(
        f"\n== 3. End to end: a real `mise serve`, {args.e2e_calls} concurrent real-time calls ({source},"
        f" {media * 0.02:.0f} s each, fresh SIDs, started 1 s apart); per turn.ended read from GET /v1/events,"
        " GET /v1/search?call_sid=..&min_turn_index=..&max_turn_index=.. polled every 50 ms until it holds"
        " the turn: found - SSE receipt"
    )
    workdir = Path(tempfile.mkdtemp(prefix="mise-bench-e2e-"))
    try:
        with runtime.private_cluster("mise-bench-search") as ray_address:
            for backend in ("embedded", "opensearch"):
                data = workdir / backend
                data.mkdir()
                with contextlib.ExitStack() as stack:
                    env: dict[str, str] = {}
                    if backend == "opensearch":
                        url = stack.enter_context(opensearch(workdir / "os"))
                        env["MISE_OPENSEARCH_URL"] = url
                        env["MISE_OPENSEARCH_PREFIX"] = "e2e" + str(os.getpid())
                    server = stack.enter_context(Server.start(ray_address, data, **env))
                    say(f"  {backend}: server on {server.http}, load average {load_average()}")
                    latencies, turns, missing = asyncio.run(e2e_run(server.http, server.ws, messages, args.e2e_calls))
                p50, p95 = pct(latencies, 50), pct(latencies, 95)
                worst = max(latencies) if latencies else math.nan
                say(
                    f"  {backend}: {turns} turns, {missing} never found within 30 s; SSE receipt -> searchable:"
                    f" p50 {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s; load average {load_average()}"
                )
                results.add(
                    f"e2e {backend}: turn.ended -> searchable",
                    f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s ({turns} turns)",
                    "p95 <= 1.5 s",
                    p95 <= 1.5 and missing == 0,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def conditions(args: argparse.Namespace) -> None:
    import importlib.metadata as md

    def version(name: str) -> str:
        with contextlib.suppress(md.PackageNotFoundError):
            return md.version(name)
        return "absent"

    say("== conditions")
    say(
        f"  machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}),"
        f" {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM, {platform.platform()}"
    )
    say(f"  load average at start: {load_average()}")
    say(
        f"  Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, orjson {version('orjson')},"
        f" opensearch-py {version('opensearch-py')}, ray {version('ray')}"
    )
    say(
        f"  corpus: {args.turns:,} turns embedded, {args.os_turns:,} on OpenSearch, {args.tenants} tenants,"
        f" {TURNS_PER_CALL} turns per call; vocabulary {len(WORDS):,} words (Zipf s=1); shares of words:"
        + ", ".join(f" {w} {word_share(w) * 100:.2f}%" for w in ("the", "account", "cancel", "refund"))
    )


def summary(results: Results) -> None:
    say("\n== summary")
    width = max(len(r[0]) for r in results.rows) if results.rows else 10
    for what, figure, target, ok in results.rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        say(f"  {what:{width}s}  {figure:48s} {target:20s} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=1_000_000, help="embedded corpus (turns)")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--os-turns", type=int, default=200_000, help="OpenSearch corpus (turns)")
    parser.add_argument("--only", choices=("embedded", "opensearch", "e2e"))
    parser.add_argument("--data-dir", help="where the embedded index goes (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs per query kind")
    parser.add_argument("--live-calls", type=int, default=1000, help="calls written through the live path")
    parser.add_argument("--e2e-calls", type=int, default=10, help="concurrent real-time calls end to end")
    args = parser.parse_args()
    conditions(args)
    results = Results()
    if args.only in (None, "embedded"):
        asyncio.run(bench_embedded(args, results))
    if args.only in (None, "opensearch"):
        asyncio.run(bench_opensearch(args, results))
    if args.only in (None, "e2e"):
        bench_e2e(args, results)
    summary(results)


if __name__ == "__main__":
    main()
