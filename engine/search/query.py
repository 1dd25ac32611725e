"""The query model: one JSON shape for API, CLI, page and notebook, parsed and validated once.

``parse_query(obj)`` turns a JSON object into a frozen ``Query`` or raises ``QueryError`` naming the
path of the problem (``where.frustration.gte: expected a number, got 'high'``). Backends never see
unvalidated input: ``engine.search.sql`` and ``engine.search.dsl`` compile a ``Query``'s parts, and
``engine.search.execute`` runs it. The JSON Schema is ``docs/search.schema.json``.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from engine.search import fields as F
from engine.search.text import TextQuery, TextSyntaxError, parse_text

MAX_LIMIT: Final = 200
MAX_OFFSET: Final = 10_000  # how deep a cursor may page (hits, groups or sequences)
MAX_STEPS: Final = 4
MAX_CONDITIONS: Final = 32
MAX_VALUES: Final = 100
MAX_AGGS: Final = 8
MAX_BUCKETS: Final = 200
MAX_TURNS_PER_GROUP: Final = 10
MAX_STEP_CANDIDATES: Final = 100_000  # turns one sequence step may match before it must be narrowed
MAX_WITHIN_TURNS: Final = 50


class QueryError(ValueError):
    """A query that cannot run; the message names the part at fault. The API answers 400 with it."""


@dataclass(frozen=True, slots=True)
class Equals:
    field: str
    values: tuple[Any, ...]  # any of these (str for keywords, bool, or numbers)


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def bounds(self) -> list[tuple[str, float]]:
        return [
            (op, v)
            for op, v in (("gte", self.gte), ("gt", self.gt), ("lte", self.lte), ("lt", self.lt))
            if v is not None
        ]


Condition = Equals | Range


@dataclass(frozen=True, slots=True)
class Filter:
    """Conditions on one turn (all must hold) and optional text."""

    conditions: tuple[Condition, ...] = ()
    text: TextQuery | None = None


@dataclass(frozen=True, slots=True)
class Step:
    filter: Filter
    within_turns: int | None = None  # at most this many turns after the previous step's turn
    within_ms: int | None = None  # starts at most this long after the previous step's turn ended


@dataclass(frozen=True, slots=True)
class Sort:
    key: str  # "_score", "_time" or a field
    descending: bool

    @property
    def spelled(self) -> str:
        return {"_score": "relevance", "_time": "time"}.get(self.key) or ("-" if self.descending else "") + self.key


RELEVANCE: Final = Sort("_score", True)
TIME: Final = Sort("_time", True)  # newest call first, then turn order


@dataclass(frozen=True, slots=True)
class Agg:
    name: str
    kind: str  # "terms" | "histogram" | "stats"
    field: str
    size: int = 10  # terms: buckets kept
    interval: float = 0.0  # histogram
    stats: str | None = None  # terms: stats of this field per bucket


@dataclass(frozen=True, slots=True)
class Query:
    filter: Filter = field(default_factory=Filter)
    steps: tuple[Step, ...] = ()  # a sequence when non-empty (then ``filter`` is empty)
    group_by_call: bool = False
    min_matches: int = 1
    turns_per_group: int = 3
    sort: Sort = TIME
    limit: int = 20
    offset: int = 0  # from the cursor
    aggs: tuple[Agg, ...] = ()
    highlight: bool = True
    explain: bool = False

    def cursor_after(self, returned: int) -> str:
        return encode_cursor(self.offset + returned)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset})).decode().rstrip("=")


def _decode_cursor(value: Any) -> int:
    if not isinstance(value, str):
        raise QueryError("cursor: expected the next_cursor string of a previous page")
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))["o"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise QueryError("cursor: not a cursor of this API (use next_cursor from a previous page)") from None
    if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"cursor: pages end {MAX_OFFSET} results deep; narrow the query")
    return offset


_TOP_KEYS: Final = frozenset(
    {"text", "where", "speaker", "first_s", "last_s", "sequence", "group_by", "min_matches", "turns_per_group"}
    | {"sort", "limit", "cursor", "aggs", "highlight", "explain"}
)
_STEP_KEYS: Final = frozenset({"text", "where", "speaker", "first_s", "last_s", "within_turns", "within_s"})


def parse_query(obj: Any) -> Query:
    if not isinstance(obj, dict):
        raise QueryError("the query must be a JSON object")
    _no_unknown(obj, _TOP_KEYS, "")
    steps: tuple[Step, ...] = ()
    if "sequence" in obj:
        seq = obj["sequence"]
        if not isinstance(seq, list) or not 2 <= len(seq) <= MAX_STEPS:
            raise QueryError(f"sequence: expected a list of 2 to {MAX_STEPS} steps")
        clash = sorted(k for k in ("text", "where", "speaker", "first_s", "last_s") if k in obj)
        if clash:
            raise QueryError(f"{clash[0]}: with a sequence, put conditions inside its steps")
        steps = tuple(_step(s, i) for i, s in enumerate(seq))
        filt = Filter()
    else:
        filt = _filter(obj, "")
    group_by = obj.get("group_by")
    if group_by not in (None, "call"):
        raise QueryError(f"group_by: expected 'call' or null, got {group_by!r}")
    has_text = filt.text is not None and filt.text.positive
    sort = _sort(obj.get("sort"), has_text, bool(steps), group_by == "call")
    aggs = _aggs(obj.get("aggs"))
    if aggs and steps:
        raise QueryError("aggs: aggregations apply to turn queries, not to sequences")
    return Query(
        filter=filt,
        steps=steps,
        group_by_call=group_by == "call",
        min_matches=_int(obj.get("min_matches", 1), "min_matches", 1, 100),
        turns_per_group=_int(obj.get("turns_per_group", 3), "turns_per_group", 1, MAX_TURNS_PER_GROUP),
        sort=sort,
        limit=_int(obj.get("limit", 20), "limit", 0, MAX_LIMIT),  # 0: counts (and aggs) only
        offset=_decode_cursor(obj["cursor"]) if obj.get("cursor") is not None else 0,
        aggs=aggs,
        highlight=_bool(obj.get("highlight", True), "highlight"),
        explain=_bool(obj.get("explain", False), "explain"),
    )


def _no_unknown(obj: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise QueryError(f"{path}{key}: unknown key (expected one of {', '.join(sorted(allowed))})")


def _step(obj: Any, i: int) -> Step:
    path = f"sequence[{i}]."
    if not isinstance(obj, dict):
        raise QueryError(f"sequence[{i}]: expected an object")
    _no_unknown(obj, _STEP_KEYS, path)
    if i == 0 and ("within_turns" in obj or "within_s" in obj):
        raise QueryError(f"{path}within_*: the first step has no previous step")
    within_turns = (
        _int(obj["within_turns"], path + "within_turns", 1, MAX_WITHIN_TURNS) if "within_turns" in obj else None
    )
    within_ms = None
    if "within_s" in obj:
        within_ms = round(_number(obj["within_s"], path + "within_s", 0, 24 * 3600) * 1000)
    if i > 0 and within_turns is None and within_ms is None:
        within_turns = 1  # the next turn by default
    filt = _filter(obj, path)
    if not filt.conditions and filt.text is None:
        raise QueryError(f"sequence[{i}]: a step needs at least one condition or text")
    return Step(filt, within_turns, within_ms)


def _filter(obj: dict[str, Any], path: str) -> Filter:
    conditions: list[Condition] = []
    where = obj.get("where", {})
    if not isinstance(where, dict):
        raise QueryError(f"{path}where: expected an object of field: condition")
    if "speaker" in obj:
        if "speaker" in where:
            raise QueryError(f"{path}speaker: given twice (also in where)")
        where = {**where, "speaker": obj["speaker"]}
    if len(where) > MAX_CONDITIONS:
        raise QueryError(f"{path}where: {len(where)} conditions; at most {MAX_CONDITIONS}")
    for name, value in where.items():
        conditions.append(_condition(name, value, f"{path}where.{name}"))
    if obj.get("first_s") is not None:
        ms = round(_number(obj["first_s"], path + "first_s", 0, 10**7) * 1000)
        conditions.append(Range("ms_from_start", lte=ms))
    if obj.get("last_s") is not None:
        ms = round(_number(obj["last_s"], path + "last_s", 0, 10**7) * 1000)
        conditions.append(Range("ms_to_end", lte=ms))
    text = None
    if obj.get("text") not in (None, ""):
        if not isinstance(obj["text"], str):
            raise QueryError(f"{path}text: expected a string")
        try:
            text = parse_text(obj["text"])
        except TextSyntaxError as e:
            raise QueryError(f"{path}text: {e}") from None
    return Filter(tuple(conditions), text)


def _condition(name: str, value: Any, path: str) -> Condition:
    canonical = F.resolve(name)
    if canonical is None:
        raise QueryError(f"{path}: unknown field{F.suggest(name)}")
    kind = F.kind_of(canonical)
    if isinstance(value, dict):
        if kind in (F.Kind.KEYWORD, F.Kind.BOOLEAN):
            raise QueryError(f"{path}: {kind} fields take a value or a list of values, not a range")
        _no_unknown(value, frozenset({"gte", "gt", "lte", "lt"}), path + ".")
        if not value:
            raise QueryError(f"{path}: an empty range")
        bounds = {op: _bound(v, kind, f"{path}.{op}") for op, v in value.items()}
        if ("gte" in bounds and "gt" in bounds) or ("lte" in bounds and "lt" in bounds):
            raise QueryError(f"{path}: give one lower bound (gte or gt) and one upper bound (lte or lt)")
        low = bounds.get("gte", bounds.get("gt"))
        high = bounds.get("lte", bounds.get("lt"))
        if (
            low is not None
            and high is not None
            and (low > high or (low == high and ("gt" in bounds or "lt" in bounds)))
        ):
            raise QueryError(f"{path}: the range is empty (lower bound {low:g} above upper bound {high:g})")
        return Range(canonical, **bounds)
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_VALUES:
        raise QueryError(f"{path}: expected 1 to {MAX_VALUES} values")
    if kind == F.Kind.KEYWORD:
        if not all(isinstance(v, str) and 0 < len(v) <= 500 for v in values):
            raise QueryError(f"{path}: expected a string or a list of strings (1 to 500 characters)")
        return Equals(canonical, tuple(values))
    if kind == F.Kind.BOOLEAN:
        if len(values) != 1 or not isinstance(values[0], bool):
            raise QueryError(f"{path}: expected true or false")
        return Equals(canonical, (values[0],))
    return Equals(canonical, tuple(_bound(v, kind, path) for v in values))


def _bound(value: Any, kind: F.Kind, path: str) -> float:
    if kind == F.Kind.DATE:
        if isinstance(value, str):
            return iso_to_ms(value, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QueryError(f"{path}: expected an ISO 8601 time or epoch milliseconds, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise QueryError(f"{path}: expected a number, got {value!r}")
    return float(value)


def iso_to_ms(value: str, path: str = "time") -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{path}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise QueryError(f"{path}: {value!r} needs a time zone (e.g. Z)")
    return float(round(parsed.timestamp() * 1000))


def _sort(value: Any, has_text: bool, sequence: bool, grouped: bool) -> Sort:
    if value is None:
        return RELEVANCE if has_text and not sequence and not grouped else TIME
    if not isinstance(value, str) or not value:
        raise QueryError("sort: expected 'relevance', 'time' or a field name (prefix - for descending)")
    if value == "relevance":
        if not has_text:
            raise QueryError("sort: relevance needs text to search for")
        if sequence or grouped:
            raise QueryError("sort: sequences and groups sort by time")
        return RELEVANCE
    if value == "time":
        return TIME
    if sequence or grouped:
        raise QueryError("sort: sequences and groups sort by time")
    descending = value.startswith("-")
    name = value.lstrip("-")
    canonical = F.resolve(name)
    if canonical is None or canonical.startswith(F.CUSTOM_PREFIX):
        raise QueryError(f"sort: unknown field {name!r}{F.suggest(name)}")
    if canonical not in F.SORTABLE:
        raise QueryError(f"sort: {canonical!r} cannot be sorted on")
    return Sort(canonical, descending)


def _aggs(value: Any) -> tuple[Agg, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > MAX_AGGS:
        raise QueryError(f"aggs: expected an object of up to {MAX_AGGS} named aggregations")
    out = []
    for name, spec in value.items():
        path = f"aggs.{name}"
        if not isinstance(spec, dict):
            raise QueryError(f"{path}: expected an object such as {{'terms': 'emotion'}}")
        kinds = [k for k in ("terms", "histogram") if k in spec] or (["stats"] if "stats" in spec else [])
        if len(kinds) != 1:
            raise QueryError(f"{path}: give exactly one of terms, histogram, stats")
        kind = kinds[0]  # a terms aggregation may also carry "stats": the stats of a field per bucket
        allowed = {"terms": {"terms", "size", "stats"}, "histogram": {"histogram", "interval"}, "stats": {"stats"}}
        _no_unknown(spec, frozenset(allowed[kind]), path + ".")
        target = F.resolve(spec[kind]) if isinstance(spec[kind], str) else None
        if target is None or target.startswith(F.CUSTOM_PREFIX):
            raise QueryError(f"{path}.{kind}: unknown field {spec[kind]!r}")
        if kind == "terms":
            if target not in F.TERMS_FIELDS:
                raise QueryError(f"{path}.terms: {target!r} is numeric; use histogram or stats")
            stats = None
            if "stats" in spec:
                stats = F.resolve(spec["stats"]) if isinstance(spec["stats"], str) else None
                if stats is None or stats not in F.STATS_FIELDS:
                    raise QueryError(f"{path}.stats: expected a numeric or boolean field, got {spec['stats']!r}")
            out.append(Agg(name, kind, target, size=_int(spec.get("size", 10), path + ".size", 1, 100), stats=stats))
        elif kind == "histogram":
            if target not in F.NUMERIC:
                raise QueryError(f"{path}.histogram: {target!r} is not numeric")
            interval = _number(spec.get("interval"), path + ".interval", 0, 10**12)
            if interval <= 0:
                raise QueryError(f"{path}.interval: must be above 0")
            out.append(Agg(name, kind, target, interval=interval))
        else:
            if target not in F.STATS_FIELDS:
                raise QueryError(f"{path}.stats: {target!r} is a keyword; use terms")
            out.append(Agg(name, kind, target))
    return tuple(out)


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{path}: expected a whole number, got {value!r}")
    if not low <= value <= high:
        raise QueryError(f"{path}: {value} is out of range ({low} to {high})")
    return value


def _number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise QueryError(f"{path}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise QueryError(f"{path}: {value:g} is out of range ({low:g} to {high:g})")
    return float(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise QueryError(f"{path}: expected true or false")
    return value
