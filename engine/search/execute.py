"""Run a validated ``Query`` on any ``SearchIndex``: the one place results are shaped.

The backend answers primitive questions (a page of turns, calls by matches, a step's candidates,
aggregations); sequences, highlights and ``explain`` are computed here, so every backend returns the
same JSON for the same corpus. Result shape (``docs/search.md``):

``{"total": turns matching, "hits": [hit], "next_cursor": str|null}`` for turns;
``{"total_calls": n, "groups": [{"call_sid", "matches", "call", "hits": [hit]}], ...}`` grouped;
``{"total": n, "sequences": [{"call_sid", "call", "hits": [hit per step]}], ...}`` for sequences
(with ``group_by: call``, ``groups`` whose ``sequences`` are that call's matches); plus ``aggs``.
A hit is ``{"id", "call_sid", "turn_id", "score", "turn", "call", "highlight", "explain"}``.
"""

from __future__ import annotations

import asyncio
from itertools import groupby
from typing import Any

from engine.search import text as T
from engine.search.query import MAX_STEP_CANDIDATES, Equals, Filter, Query, Range, Step
from engine.search.sequence import join
from engine.store.index import CALL_SID, TURN_INDEX, Candidate, Row, SearchIndex

_CALL_FIELDS = ("from", "to", "direction", "call_status", "call_started_at", "call_duration_ms")


async def execute(index: SearchIndex, tenant: str, q: Query) -> dict[str, Any]:
    if q.steps:
        return await _sequences(index, tenant, q)
    out: dict[str, Any] = {}
    aggs = asyncio.ensure_future(index.aggregate(tenant, q.filter, q.aggs)) if q.aggs else None
    if q.group_by_call:
        total_calls, page = await index.group(tenant, q.filter, q.min_matches, q.offset, q.limit)
        rows = await index.turns_of(tenant, q.filter, [sid for sid, _ in page], q.turns_per_group)
        out["total_calls"] = total_calls
        out["groups"] = [
            {
                "call_sid": sid,
                "matches": n,
                "call": _call(rows[sid][0].doc) if rows.get(sid) else None,
                "hits": [hit(r, q.filter, q) for r in rows.get(sid, [])],
            }
            for sid, n in page
        ]
        more = q.offset + len(page) < total_calls
    elif q.limit:
        total, found = await index.find(tenant, q.filter, q.sort, q.offset, q.limit)
        out["total"] = total
        out["hits"] = [hit(r, q.filter, q) for r in found]
        more = q.offset + len(found) < total
    else:
        out["total"] = (await index.find(tenant, q.filter, q.sort, 0, 0))[0]
        out["hits"] = []
        more = False
    out["next_cursor"] = q.cursor_after(q.limit) if more else None
    if aggs is not None:
        out["aggs"] = await aggs
    return out


async def _sequences(index: SearchIndex, tenant: str, q: Query) -> dict[str, Any]:
    candidates = await asyncio.gather(*(index.candidates(tenant, s.filter, MAX_STEP_CANDIDATES) for s in q.steps))
    matches = join(q.steps, candidates)
    out: dict[str, Any] = {}
    if q.group_by_call:
        calls = [(sid, list(ms)) for sid, ms in groupby(matches, key=lambda m: m[0][CALL_SID])]
        calls = [(sid, ms) for sid, ms in calls if len(ms) >= q.min_matches]
        calls.sort(key=lambda c: (-len(c[1]), c[0]))
        page_calls = calls[q.offset : q.offset + q.limit]
        shown = [m for _, ms in page_calls for m in ms[: q.turns_per_group]]
        docs = await _docs(index, tenant, shown)
        out["total_calls"] = len(calls)
        out["groups"] = [
            {
                "call_sid": sid,
                "matches": len(ms),
                "call": _call(docs[ms[0][0][CALL_SID], ms[0][0][TURN_INDEX]]),
                "sequences": [_sequence(m, docs, q) for m in ms[: q.turns_per_group]],
            }
            for sid, ms in page_calls
        ]
        more = q.offset + len(page_calls) < len(calls)
    else:
        page = matches[q.offset : q.offset + q.limit]
        docs = await _docs(index, tenant, page)
        out["total"] = len(matches)
        out["sequences"] = [
            {"call_sid": m[0][CALL_SID], "call": _call(docs[m[0][CALL_SID], m[0][TURN_INDEX]]), **_sequence(m, docs, q)}
            for m in page
        ]
        more = q.offset + len(page) < len(matches)
    out["next_cursor"] = q.cursor_after(q.limit) if more else None
    return out


async def _docs(
    index: SearchIndex, tenant: str, matches: list[tuple[Candidate, ...]]
) -> dict[tuple[str, int], dict[str, Any]]:
    keys = sorted({(c[CALL_SID], c[TURN_INDEX]) for m in matches for c in m})
    found = await index.get_turns(tenant, keys) if keys else []
    return {(d["call_sid"], d["turn_index"]): d for d in found}


def _sequence(match: tuple[Candidate, ...], docs: dict[tuple[str, int], dict[str, Any]], q: Query) -> dict[str, Any]:
    hits = []
    for step, c in zip(q.steps, match, strict=True):
        doc = docs.get((c[CALL_SID], c[TURN_INDEX]))
        if doc is not None:  # erased between the join and the fetch: leave it out
            hits.append(hit(Row(doc), step.filter, q, step))
    return {"hits": hits}


def _call(doc: dict[str, Any]) -> dict[str, Any]:
    call = {name: doc.get(name) for name in _CALL_FIELDS}
    call["custom_parameters"] = dict(kv.split("=", 1) for kv in doc.get("custom_kv") or [])
    return call


def hit(row: Row, f: Filter, q: Query, step: Step | None = None) -> dict[str, Any]:
    doc = row.doc
    out: dict[str, Any] = {
        "id": f"{doc['call_sid']}:{doc['turn_id']}",
        "call_sid": doc["call_sid"],
        "turn_id": doc["turn_id"],
        "score": row.score,
        "turn": doc["source"],
        "call": _call(doc),
    }
    if f.text is not None and q.highlight:
        out["highlight"] = T.highlight(f.text, doc.get("text"))
        out["spoken"] = T.spoken(f.text, doc["source"].get("words"))  # the matched words, with their times
    if q.explain:
        out["explain"] = explain(doc, f, step)
    return out


def explain(doc: dict[str, Any], f: Filter, step: Step | None = None) -> list[str]:
    """The conditions this turn met, each with the turn's own value."""
    met: list[str] = []
    if f.text is not None:
        terms = T.matched_terms(f.text, doc.get("text"))
        if terms:
            met.append("text: " + ", ".join(terms))
        if f.text.excluded:
            met.append("text: none of " + ", ".join(T.describe(a) for a in f.text.excluded))
    for c in f.conditions:
        value = _value(doc, c.field)
        if isinstance(c, Equals):
            wanted = c.values[0] if len(c.values) == 1 else list(c.values)
            met.append(f"{c.field} = {_show(wanted)}" + ("" if len(c.values) == 1 else f" ({_show(value)})"))
        elif isinstance(c, Range):
            bounds = " and ".join(f"{_OPS[op]} {v:g}" for op, v in c.bounds())
            met.append(f"{c.field} {bounds} ({_show(value)})")
    if step is not None and step.within_turns is not None:
        met.append(f"within {step.within_turns} turns of the previous step")
    if step is not None and step.within_ms is not None:
        met.append(f"within {step.within_ms / 1000:g} s of the previous step")
    return met


_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}


def _value(doc: dict[str, Any], field: str) -> Any:
    if field.startswith("custom."):
        prefix = field[len("custom.") :] + "="
        return next((kv[len(prefix) :] for kv in doc.get("custom_kv") or [] if kv.startswith(prefix)), None)
    return doc.get(field)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
