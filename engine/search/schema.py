"""The query model as JSON Schema (2020-12), generated from the field catalogue and the limits.

``python -m engine.search.schema > docs/search.schema.json`` writes the published file; a test holds
the file to this output, and every example of ``docs/search.examples.json`` to both the schema and
``parse_query``. The schema describes shape; ``parse_query`` is the judge (it also checks ranges are
not empty, text syntax, and how fields and aggregations combine).
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from engine.search import fields as F
from engine.search import query as Q
from engine.search.text import MAX_TEXT_CHARS


def schema() -> dict[str, Any]:
    names = sorted([*F.FIELDS, *F.ALIASES])
    numeric = sorted(n for n in names if F.kind_of(F.resolve(n) or n) in (F.Kind.NUMBER, F.Kind.INTEGER, F.Kind.DATE))
    rng = {
        "type": "object",
        "description": "A range; dates as ISO 8601 (with a zone) or epoch ms.",
        "properties": {op: {"type": ["number", "string"]} for op in ("gte", "gt", "lte", "lt")},
        "additionalProperties": False,
        "minProperties": 1,
    }
    scalar = {"type": ["string", "number", "boolean"]}
    condition = {"anyOf": [scalar, {"type": "array", "items": scalar, "minItems": 1, "maxItems": Q.MAX_VALUES}, rng]}
    where = {
        "type": "object",
        "description": "field: value, [values] (any of) or {gte, gt, lte, lt}; all must hold. "
        "custom.<name> matches a call custom parameter.",
        "propertyNames": {"anyOf": [{"enum": names}, {"pattern": r"^custom\..+"}]},
        "additionalProperties": condition,
        "maxProperties": Q.MAX_CONDITIONS,
    }
    text = {
        "type": "string",
        "maxLength": MAX_TEXT_CHARS,
        "description": 'words (all), "exact phrase", a OR b, -excluded, prefix*, a NEAR/3 b',
    }
    seconds = {"type": "number", "minimum": 0}
    turn_filter = {
        "text": text,
        "where": where,
        "speaker": {"enum": ["caller", "agent"]},
        "first_s": {**seconds, "description": "turns starting in the call's first N seconds"},
        "last_s": {**seconds, "description": "turns starting in the call's last N seconds (ended calls)"},
    }
    step = {
        "type": "object",
        "properties": {
            **turn_filter,
            "within_turns": {"type": "integer", "minimum": 1, "maximum": Q.MAX_WITHIN_TURNS},
            "within_s": {**seconds, "description": "starts at most N s after the previous step's turn ended"},
        },
        "additionalProperties": False,
    }
    agg = {
        "type": "object",
        "oneOf": [
            {
                "properties": {
                    "terms": {"enum": sorted(F.TERMS_FIELDS)},
                    "size": {"type": "integer", "minimum": 1, "maximum": 100},
                    "stats": {"enum": sorted(F.STATS_FIELDS)},
                },
                "required": ["terms"],
                "additionalProperties": False,
            },
            {
                "properties": {"histogram": {"enum": numeric}, "interval": {"type": "number", "exclusiveMinimum": 0}},
                "required": ["histogram", "interval"],
                "additionalProperties": False,
            },
            {
                "properties": {"stats": {"enum": sorted(F.STATS_FIELDS)}},
                "required": ["stats"],
                "additionalProperties": False,
            },
        ],
    }
    sortable = sorted(F.SORTABLE)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/mise/mise/docs/search.schema.json",
        "title": "Mise search query (POST /v1/search)",
        "type": "object",
        "properties": {
            **turn_filter,
            "sequence": {"type": "array", "items": step, "minItems": 2, "maxItems": Q.MAX_STEPS},
            "group_by": {"enum": ["call", None]},
            "min_matches": {"type": "integer", "minimum": 1, "maximum": 100},
            "turns_per_group": {"type": "integer", "minimum": 1, "maximum": Q.MAX_TURNS_PER_GROUP},
            "sort": {"enum": ["relevance", "time", *sortable, *[f"-{s}" for s in sortable]]},
            "limit": {"type": "integer", "minimum": 0, "maximum": Q.MAX_LIMIT},
            "cursor": {"type": ["string", "null"], "description": "next_cursor of the previous page"},
            "aggs": {"type": "object", "additionalProperties": agg, "maxProperties": Q.MAX_AGGS},
            "highlight": {"type": "boolean"},
            "explain": {"type": "boolean"},
        },
        "additionalProperties": False,
    }


def main() -> None:
    sys.stdout.write(orjson.dumps(schema(), option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
