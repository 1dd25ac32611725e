"""Compile the query model to OpenSearch DSL and read aggregation answers back (pure, no I/O).

Mirrors ``engine.search.sql`` so both backends decide matches, order and aggregations alike: the turn
index holds the flat documents of ``engine.search.documents``, with the date as epoch ms
(``call_started_ms``) and call custom parameters as ``name=value`` keywords (``custom_kv``).
"""

from __future__ import annotations

import math
from typing import Any, Final

from engine.search import fields as F
from engine.search.query import MAX_BUCKETS, Agg, Equals, Filter, Range, Sort
from engine.search.text import Atom, Near, Phrase, Prefix, TextQuery

DATE_FIELD: Final = "call_started_ms"  # the DATE field as indexed (epoch ms, long)
_TIE_BREAK: Final = ({"call_sid": {"order": "asc"}}, {"turn_index": {"order": "asc"}})
_MATCH_NONE: Final[dict[str, Any]] = {"match_none": {}}


def field_of(name: str) -> str:
    """The indexed field behind a canonical query field."""
    return DATE_FIELD if F.FIELDS.get(name) == F.Kind.DATE else name


def compile_filter(tenant: str, f: Filter) -> dict[str, Any]:
    """A bool query: the tenant and every condition as non-scoring filters, the text in must/must_not."""
    filters: list[dict[str, Any]] = [{"term": {"tenant": tenant}}]
    for c in f.conditions:
        filters.append(_equals(c) if isinstance(c, Equals) else _range(c))
    query: dict[str, Any] = {"filter": filters}
    if f.text is not None:
        must, must_not = _text(f.text)
        if must:
            query["must"] = must
        if must_not:
            query["must_not"] = must_not
    return {"bool": query}


def _equals(c: Equals) -> dict[str, Any]:
    if c.field.startswith(F.CUSTOM_PREFIX):
        name = c.field[len(F.CUSTOM_PREFIX) :]
        return _terms("custom_kv", [f"{name}={v}" for v in c.values])
    kind = F.kind_of(c.field)
    values = list(c.values)
    if kind in (F.Kind.INTEGER, F.Kind.DATE):
        # A long field rejects (or rounds) a fractional term; SQL's `=` never matches one: drop them.
        values = [int(v) for v in values if float(v).is_integer()]
        if not values:
            return _MATCH_NONE
    return _terms(field_of(c.field), values)


def _terms(field: str, values: list[Any]) -> dict[str, Any]:
    return {"term": {field: values[0]}} if len(values) == 1 else {"terms": {field: values}}


def _range(c: Range) -> dict[str, Any]:
    return {"range": {field_of(c.field): dict(c.bounds())}}


def _text(q: TextQuery) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    must = [
        _atom(group[0])
        if len(group) == 1
        else {"bool": {"should": [_atom(a) for a in group], "minimum_should_match": 1}}
        for group in q.groups
    ]
    return must, [_atom(a) for a in q.excluded]


def _atom(atom: Atom) -> dict[str, Any]:
    text = F.TEXT_FIELD
    if isinstance(atom, Phrase):
        # The words are index tokens already, so analysis leaves them as they are.
        if len(atom.words) == 1:
            return {"match": {text: {"query": atom.words[0]}}}
        return {"match_phrase": {text: {"query": " ".join(atom.words), "slop": 0}}}
    if isinstance(atom, Prefix):
        return {"prefix": {text: {"value": atom.prefix}}}
    assert isinstance(atom, Near)
    # slop counts the positions between the two spans: exactly "at most N words between". Unordered
    # spans may overlap, so `x NEAR/n x` would match one lone x; ordered ones need two distinct x.
    return {
        "span_near": {
            "clauses": [{"span_term": {text: atom.left}}, {"span_term": {text: atom.right}}],
            "slop": atom.distance,
            "in_order": atom.left == atom.right,
        }
    }


def compile_sort(sort: Sort) -> list[dict[str, Any]]:
    """The ``find`` ordering contract (engine.store.index): nulls last either way, then call_sid, turn_index."""
    if sort.key == "_score":
        return [{"_score": {"order": "desc"}}, *_TIE_BREAK]
    if sort.key == "_time":
        return [{DATE_FIELD: {"order": "desc", "missing": "_last"}}, *_TIE_BREAK]
    order = "desc" if sort.descending else "asc"
    return [{field_of(sort.key): {"order": order, "missing": "_last"}}, *_TIE_BREAK]


# --- aggregations -------------------------------------------------------------------------------


def compile_aggs(aggs: tuple[Agg, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agg in aggs:
        field = field_of(agg.field)
        if agg.kind == "terms":
            body: dict[str, Any] = {
                "terms": {"field": field, "size": agg.size, "order": [{"_count": "desc"}, {"_key": "asc"}]}
            }
            if agg.stats is not None:
                body["aggs"] = {"stats": {"stats": {"field": field_of(agg.stats)}}}
            out[agg.name] = body
        elif agg.kind == "histogram":
            out[agg.name] = {"histogram": {"field": field, "interval": agg.interval, "min_doc_count": 1}}
        else:
            out[agg.name] = {"stats": {"field": field}}
    return out


def read_aggs(aggs: tuple[Agg, ...], answer: dict[str, Any]) -> dict[str, Any]:
    """The engine's aggregation shapes (as the SQLite backend gives them) from OpenSearch's answer."""
    out: dict[str, Any] = {}
    for agg in aggs:
        raw = answer[agg.name]
        if agg.kind == "terms":
            boolean = F.kind_of(agg.field) == F.Kind.BOOLEAN
            buckets = []
            for b in raw["buckets"]:
                # Booleans come back keyed 1/0 (key_as_string "true"/"false"); the API speaks JSON booleans.
                key = b["key_as_string"] == "true" if boolean else b["key"]
                bucket: dict[str, Any] = {"key": key, "count": b["doc_count"]}
                if agg.stats is not None:
                    bucket["stats"] = read_stats(b["stats"])
                buckets.append(bucket)
            out[agg.name] = {"buckets": buckets, "other": raw.get("sum_other_doc_count", 0)}
        elif agg.kind == "histogram":
            buckets = [{"key": float(b["key"]), "count": b["doc_count"]} for b in raw["buckets"] if b["doc_count"]]
            out[agg.name] = {"interval": agg.interval, "buckets": buckets[:MAX_BUCKETS]}
        else:
            out[agg.name] = read_stats(raw)
    return out


def read_stats(raw: dict[str, Any]) -> dict[str, Any]:
    count = int(raw.get("count") or 0)

    def value(name: str) -> float | None:
        v = raw.get(name)
        return None if count == 0 or v is None or not math.isfinite(v) else float(v)

    return {"count": count, "min": value("min"), "max": value("max"), "avg": value("avg"), "sum": value("sum") or 0.0}
