"""Compile the query model to SQLite SQL over the index schema of ``engine.store.sqlite_index`` (pure).

The schema: ``turns t`` has one column per field of ``engine.search.fields.FIELDS`` (quoted, since
``from`` and ``to`` are keywords), except that ``call_started_at`` is compared through the column
``call_started_ms`` (epoch ms; ``parse_query`` has already turned ISO bounds into ms); ``custom_kv`` is a
JSON array of ``name=value`` strings; ``turns_fts`` is an external-content FTS5 table over ``t.text``
keyed by ``t.rowid``.

Each tenant's turns hold one range of rowids (``SqliteIndex`` gives tenant number k the rowids from
``k << 40``), so a MATCH keeps to the tenant with ``rowid BETWEEN`` (FTS5 seeks its doclists to the
range): with 10 tenants, a tenth of the matches to look up, and bm25 exactly as over one table
(``t.tenant = ?`` still decides).

Positive text drives the query (``joined=True``): ``turns_fts CROSS JOIN turns t`` with the FTS table
first, one MATCH, then a rowid lookup per hit; left to itself the planner may walk the tenant's turns
and probe the matches for each (measured at 1M turns: 40-80 ms instead of a few). Exclusions alone are
``t.rowid NOT IN (SELECT rowid FROM turns_fts WHERE turns_fts MATCH ? AND rowid BETWEEN ? AND ?)``.
Everything here builds strings and parameter lists: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from engine.search import fields as F
from engine.search.query import Equals, Filter, QueryError, Range, Sort
from engine.search.text import Atom, Near, Phrase, Prefix, TextQuery

FTS: Final = "turns_fts"
BM25: Final = f"bm25({FTS})"
ROWIDS: Final = 1 << 40  # rowids per tenant: tenant number k holds [k * ROWIDS, (k + 1) * ROWIDS)
_OPS: Final = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
# Ties always break the same way in every backend (engine/store/index.py).
TIE_BREAK: Final = 't."call_sid" ASC, t."turn_index" ASC'


def column_name(field: str) -> str:
    """The turns column holding a canonical field (the DATE field is stored as epoch ms)."""
    if field == "call_started_at":
        return "call_started_ms"
    if field not in F.FIELDS:
        raise QueryError(f"{field!r} is not a field of a turn")
    return field


def column(field: str) -> str:
    """The quoted, alias-qualified column of a field, for use in SQL."""
    return f't."{column_name(field)}"'


def rowid_range(k: int | None) -> tuple[int, int]:
    """The (first, last) rowid of tenant number ``k``; None (a tenant without turns): an empty range."""
    return (0, -1) if k is None else (k * ROWIDS, (k + 1) * ROWIDS - 1)


def has_text(f: Filter) -> bool:
    """Whether the filter has positive text (what relevance ranks)."""
    return f.text is not None and f.text.positive


def source_sql(f: Filter, joined: bool = False) -> str:
    """The FROM clause ``compile_filter(f, joined=joined)``'s WHERE is written against."""
    if joined and has_text(f):
        # CROSS JOIN fixes the FTS table as the outer loop: one MATCH, then a rowid lookup per hit.
        return f"{FTS} CROSS JOIN turns t ON t.rowid = {FTS}.rowid"
    return "turns t"


def compile_filter(f: Filter, *, joined: bool = False, rowids: tuple[int, int] | None = None) -> tuple[str, list[Any]]:
    """(WHERE expression without the tenant, its parameters); ``1`` when the filter is empty.

    With ``joined`` (and positive text) the text becomes ``turns_fts MATCH ?`` against the FTS table
    of ``source_sql(f, joined=True)``, so that ``bm25(turns_fts)`` can be selected. With ``rowids``
    (the tenant's ``rowid_range``) the MATCH keeps to them (the caller still filters on ``t.tenant``)."""
    parts: list[str] = []
    params: list[Any] = []
    for condition in f.conditions:
        sql, args = _condition(condition)
        parts.append(sql)
        params.extend(args)
    if f.text is not None:
        sql, args = _text(f.text, joined, rowids)
        parts.append(sql)
        params.extend(args)
    return (" AND ".join(parts) if parts else "1"), params


def _condition(c: Equals | Range) -> tuple[str, list[Any]]:
    if c.field.startswith(F.CUSTOM_PREFIX):
        if not isinstance(c, Equals):
            raise QueryError(f"{c.field}: custom parameters take values, not ranges")
        name = c.field[len(F.CUSTOM_PREFIX) :]
        values = [f"{name}={v}" for v in c.values]
        test = "value = ?" if len(values) == 1 else f"value IN ({_marks(len(values))})"
        return f"EXISTS (SELECT 1 FROM json_each(t.custom_kv) WHERE {test})", values
    col = column(c.field)
    if isinstance(c, Equals):
        # SQLite stores booleans as 0/1; numbers compare numerically whatever the column's affinity.
        numbers: list[Any] = [int(v) if isinstance(v, bool) else v for v in c.values]
        if len(numbers) == 1:
            return f"{col} = ?", numbers
        return f"{col} IN ({_marks(len(numbers))})", numbers
    bounds = c.bounds()
    if not bounds:
        raise QueryError(f"{c.field}: an empty range")
    return " AND ".join(f"{col} {_OPS[op]} ?" for op, _ in bounds), [v for _, v in bounds]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _text(q: TextQuery, joined: bool, rowids: tuple[int, int] | None) -> tuple[str, list[Any]]:
    within, bounds = ("", []) if rowids is None else (f" AND {FTS}.rowid BETWEEN ? AND ?", list(rowids))
    positive = fts_match(q)
    if positive is not None:
        if joined:
            return f"{FTS} MATCH ?{within}", [positive, *bounds]
        return f"t.rowid IN (SELECT rowid FROM {FTS} WHERE {FTS} MATCH ?{within})", [positive, *bounds]
    # Nothing to find, only to exclude: every turn of the tenant but those matching (turns with no
    # text included, as a search engine's must_not keeps documents without the field).
    excluded = _any(q.excluded)
    return f"t.rowid NOT IN (SELECT rowid FROM {FTS} WHERE {FTS} MATCH ?{within})", [excluded, *bounds]


def fts_match(q: TextQuery) -> str | None:
    """The FTS5 MATCH string of the positive part (with exclusions), or None when there is none."""
    if not q.positive:
        return None
    groups = [_atom(g[0]) if len(g) == 1 else _any(g) for g in q.groups]
    positive = " AND ".join(groups)
    if q.excluded:
        # FTS5's NOT is binary and binds tightest: keep both sides parenthesised.
        return f"({positive}) NOT {_any(q.excluded)}"
    return positive


def _any(atoms: tuple[Atom, ...]) -> str:
    return "(" + " OR ".join(_atom(a) for a in atoms) + ")"


def _quote(word: str) -> str:
    # Words are index tokens (letters and digits) already; doubling quotes keeps that an invariant here.
    return '"' + word.replace('"', '""') + '"'


def _atom(atom: Atom) -> str:
    if isinstance(atom, Phrase):
        return _quote(" ".join(atom.words))
    if isinstance(atom, Prefix):
        return _quote(atom.prefix) + " *"
    if isinstance(atom, Near):
        # FTS5 NEAR counts the tokens between the phrases, in either order: text.py's NEAR/N exactly.
        return f"NEAR({_quote(atom.left)} {_quote(atom.right)}, {atom.distance})"
    raise AssertionError(atom)


def compile_sort(sort: Sort, joined: bool, over: str | None = None) -> str:
    """The ORDER BY list (without the keywords) for ``find``; relevance needs the ``joined`` FROM.

    Nulls sort last in both directions. SQLite orders NULL below every value, so a descending sort
    needs no extra term (and can then walk an index such as (tenant, col DESC, call_sid, turn_index));
    an ascending one adds ``(col IS NULL)`` first. Relevance is bm25 ascending: FTS5's bm25 is
    lower-is-better. With ``over``, the list orders the rows of ``sort_columns(sort)`` selected as
    ``over`` (relevance then being its ``score`` column, -bm25, descending)."""
    tie_break = TIE_BREAK if over is None else f'{over}."call_sid" ASC, {over}."turn_index" ASC'
    if sort.key == "_score":
        if not joined:
            raise QueryError("sort: relevance needs text to search for")
        return f"{BM25} ASC, {tie_break}" if over is None else f"{over}.score DESC, {tie_break}"
    alias = over if over is not None else "t"

    def col(name: str) -> str:
        return f'{alias}."{name}"'

    if sort.key == "_time":
        return f"{col('call_started_ms')} DESC, {tie_break}"
    key = col(column_name(sort.key))
    if sort.descending:
        return f"{key} DESC, {tie_break}"
    return f"({key} IS NULL), {key} ASC, {tie_break}"


def sort_columns(sort: Sort) -> str:
    """The select list (of ``turns t``) that ``compile_sort(sort, joined, over)`` orders: the rowid as
    ``rowid``, ``score`` (``score_sql``) and the sort's columns under their own names."""
    names = ["call_sid", "turn_index"]
    if sort.key == "_time":
        names.append("call_started_ms")
    elif sort.key != "_score":
        names.append(column_name(sort.key))
    return ", ".join([f"t.rowid AS rowid, {score_sql(sort)} AS score", *(f't."{n}" AS "{n}"' for n in names)])


def score_sql(sort: Sort) -> str:
    """The score column of ``find``: -bm25 (higher is better, as the API shows it) or NULL."""
    return f"-{BM25}" if sort.key == "_score" else "NULL"
