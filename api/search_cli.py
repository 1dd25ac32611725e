"""``mise search``: the query model from a shell, against a server or an embedded index on disk.

Flags build the common query (text, speaker, ranges, position, grouping); ``--query`` takes the full
JSON model (or ``@file``). The query is validated here first: a bad one exits 2 with the problem named,
as the server's 400 would; an unreachable server exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from engine.search.query import QueryError, parse_query


def add_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search turns by words and by how they sounded")
    p.add_argument("text", nargs="?", help='words, "phrases", OR, -exclude, prefix*, a NEAR/3 b')
    p.add_argument("--speaker", choices=["caller", "agent"])
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE", help="equality (repeatable)")
    p.add_argument("--min", action="append", default=[], metavar="FIELD=N", help="FIELD >= N (repeatable)")
    p.add_argument("--max", action="append", default=[], metavar="FIELD=N", help="FIELD <= N (repeatable)")
    p.add_argument("--first-s", type=float, help="turns starting in the call's first N seconds")
    p.add_argument("--last-s", type=float, help="turns starting in the call's last N seconds")
    p.add_argument("--group-by", choices=["call"], help="calls with their matching turns")
    p.add_argument("--min-matches", type=int, help="with --group-by call: calls with at least N matching turns")
    p.add_argument("--sort", help="relevance, time, or a field (prefix - for descending)")
    p.add_argument("--limit", type=int)
    p.add_argument("--query", help="the full JSON query model, or @file.json (flags above are merged in)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--url", default=os.environ.get("MISE_URL", "http://127.0.0.1:8000"), help="server base URL")
    p.add_argument(
        "--api-key", default=os.environ.get("MISE_API_KEY"), help="(default: MISE_API_KEY, or the local key)"
    )
    p.add_argument("--data-dir", type=Path, help="query the embedded index in this folder instead of a server")
    p.add_argument("--tenant", default="default", help="with --data-dir: the tenant to search")


def build_query(args: argparse.Namespace) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if args.query:
        raw = Path(args.query[1:]).read_bytes() if args.query.startswith("@") else args.query.encode()
        try:
            query = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise QueryError(f"--query is not JSON: {exc}") from None
        if not isinstance(query, dict):
            raise QueryError("--query must be a JSON object")
    where: dict[str, Any] = dict(query.get("where") or {})
    if args.text:
        query["text"] = args.text
    if args.speaker:
        where["speaker"] = args.speaker
    for item in args.where:
        name, value = _pair(item, "--where")
        where[name] = {"true": True, "false": False}.get(value, value)
    for flag, op, items in (("--min", "gte", args.min), ("--max", "lte", args.max)):
        for item in items:
            name, value = _pair(item, flag)
            try:
                number: Any = float(value)
            except ValueError:
                number = value  # an ISO time for call_started_at; the parser judges
            where.setdefault(name, {})[op] = number
    if where:
        query["where"] = where
    for key in ("first_s", "last_s", "group_by", "min_matches", "sort", "limit"):
        value = getattr(args, key)
        if value is not None:
            query[key] = value
    return query


def _pair(item: str, flag: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise QueryError(f"{flag} {item!r}: expected FIELD=VALUE")
    return name, value


def run(args: argparse.Namespace) -> int:
    try:
        query = build_query(args)
        parsed = parse_query(query)
    except (QueryError, OSError) as exc:
        print(f"mise search: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        result = asyncio.run(_embedded(args.data_dir, args.tenant, parsed))
    else:
        key = args.api_key or _local_key()
        try:
            response = httpx.post(
                f"{args.url.rstrip('/')}/v1/search", json=query, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
        except httpx.HTTPError as exc:
            print(f"mise search: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
        if response.status_code != 200:
            detail = (
                response.json().get("error")
                if response.headers.get("content-type", "").startswith("application/json")
                else response.text
            )
            print(f"mise search: {response.status_code}: {detail}", file=sys.stderr)
            return 2 if response.status_code == 400 else 1
        result = response.json()
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(result))
    return 0


def _local_key() -> str:
    path = Path(os.environ.get("MISE_DATA_DIR", ".mise-data")) / "api_key"
    return path.read_text().strip() if path.exists() else ""


async def _embedded(data_dir: Path, tenant: str, query: Any) -> dict[str, Any]:
    from engine.search.execute import execute
    from engine.store.sqlite_shards import ShardedSqliteIndex

    index = ShardedSqliteIndex(data_dir / "index")
    try:
        return await execute(index, tenant, query)
    finally:
        await index.close()


def render(result: dict[str, Any]) -> str:
    """A readable table: one line per turn (call, time, speaker, frustration, emotion, text)."""
    lines: list[str] = []
    if "groups" in result:
        lines.append(f"{result['total_calls']} calls")
        for g in result["groups"]:
            lines.append(f"{g['call_sid']}  {g['matches']} matches")
            for hit in g.get("hits", []):
                lines.append("  " + _line(hit))
            for seq in g.get("sequences", []):
                lines.append("  " + "  ->  ".join(_line(h, short=True) for h in seq["hits"]))
    elif "sequences" in result:
        lines.append(f"{result['total']} sequences")
        for seq in result["sequences"]:
            lines.append(f"{seq['call_sid']}  " + "  ->  ".join(_line(h, short=True) for h in seq["hits"]))
    else:
        lines.append(f"{result['total']} turns")
        lines += [_line(h) for h in result["hits"]]
    for name, agg in (result.get("aggs") or {}).items():
        lines.append(f"{name}: {orjson.dumps(agg).decode()}")
    if result.get("next_cursor"):
        lines.append(f'more: --query \'{{"cursor": "{result["next_cursor"]}"}}\' (with the same query)')
    return "\n".join(lines)


def _line(hit: dict[str, Any], *, short: bool = False) -> str:
    t = hit["turn"]
    at = f"{t['start_ms'] / 1000:7.1f}s"
    frustration = t.get("frustration")
    emotion = (t.get("emotion") or {}).get("label") or "-"
    text = (hit.get("highlight") or t.get("text") or "").replace("<em>", "[").replace("</em>", "]")
    if short:
        return f"#{t['turn_id']} {t['speaker']} {at}"
    f = f"{frustration:.2f}" if isinstance(frustration, int | float) else "  - "
    return f"{hit['call_sid']}  #{t['turn_id']:<3} {at}  {t['speaker']:<6}  frus {f}  {emotion:<9} {text[:80]}"
