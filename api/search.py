"""``GET|POST /v1/search``: the query model over HTTP, scoped to the key's tenant.

POST takes the full JSON model (``docs/search.md``); GET takes the common cases as a query string
(``query_from_params``), which the dashboard's search page also puts in its address bar. A query that
cannot run is a 400 naming the problem, never a 500; a backend that is away is a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import KeyRing, key_from_request
from api.metrics import Metrics
from engine.search import fields as F
from engine.search.execute import execute
from engine.search.query import QueryError, parse_query
from engine.store.index import IndexUnavailable, SearchIndex

log = logging.getLogger("mise.search")

MAX_BODY_BYTES = 64 * 1024
_KEYWORDS = ("call_sid", "speaker", "track", "emotion", "from", "to", "direction", "call_status")
_BOOLEANS = ("interrupted_other", "interrupted_by_other", "backchannel")
_PLAIN = {"q", "first_s", "last_s", "group_by", "min_matches", "sort", "limit", "cursor", "explain", "highlight"}


def query_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The JSON query for a GET query string; raises ``QueryError`` naming a bad parameter."""
    query: dict[str, Any] = {}
    where: dict[str, Any] = {}
    for name, raw in params.items():
        if name == "api_key":
            continue
        if name == "q":
            query["text"] = raw
        elif name in _KEYWORDS:
            values = [v for v in raw.split(",") if v]
            where[name] = values if len(values) > 1 else raw
        elif name in _BOOLEANS:
            where[name] = _bool(raw, name)
        elif name.startswith(("min_", "max_")):
            field = F.resolve(name[4:])
            if field is None or field not in F.NUMERIC:
                raise QueryError(f"{name}: unknown numeric field {name[4:]!r}{F.suggest(name[4:])}")
            bound = where.setdefault(field, {})
            if not isinstance(bound, dict):
                raise QueryError(f"{name}: {field} is given twice")
            bound["gte" if name.startswith("min_") else "lte"] = (
                raw if field == "call_started_at" else _number(raw, name)
            )
        elif name in ("first_s", "last_s"):
            query[name] = _number(raw, name)
        elif name in ("limit", "min_matches"):
            query[name] = int(_number(raw, name)) if raw.isdigit() else _fail(name, "a whole number", raw)
        elif name in ("explain", "highlight"):
            query[name] = _bool(raw, name)
        elif name in _PLAIN:
            query[name] = raw
        elif name.startswith(F.CUSTOM_PREFIX):
            where[name] = raw
        else:
            raise QueryError(f"{name}: unknown parameter (POST a JSON body for the full query model)")
    if where:
        query["where"] = where
    return query


def _number(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return _fail(name, "a number", raw)


def _bool(raw: str, name: str) -> bool:
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    return _fail(name, "true or false", raw)


def _fail(name: str, expected: str, raw: str) -> NoReturn:
    raise QueryError(f"{name}: expected {expected}, got {raw!r}")


class Search:
    def __init__(self, *, keys: KeyRing, index: SearchIndex, metrics: Metrics) -> None:
        self._keys = keys
        self._index = index
        self._metrics = metrics

    async def __call__(self, request: Request) -> Response:
        tenant = self._keys.tenant_for(key_from_request(request))
        if tenant is None:
            return JSONResponse({"error": "missing or unknown API key"}, status_code=401)
        try:
            if request.method == "POST":
                body = await request.body()
                if len(body) > MAX_BODY_BYTES:
                    raise QueryError(f"the query is {len(body)} bytes; at most {MAX_BODY_BYTES}")
                try:
                    raw = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise QueryError(f"the body is not JSON: {exc}") from None
            else:
                raw = query_from_params(request.query_params)
            query = parse_query(raw)
            result = await execute(self._index, tenant, query)
        except QueryError as exc:
            self._metrics.searches.labels("bad_query").inc()
            return JSONResponse({"error": str(exc)}, status_code=400)
        except IndexUnavailable as exc:
            self._metrics.searches.labels("unavailable").inc()
            log.warning("search: index unavailable: %s", exc)
            return JSONResponse({"error": "the search index is unavailable; retry shortly"}, status_code=503)
        except Exception:  # a backend fault (e.g. its indices not created yet): logged whole, never a bare 500
            self._metrics.searches.labels("error").inc()
            log.exception("search failed for tenant %s", tenant)
            return JSONResponse({"error": "the search index could not answer; retry shortly"}, status_code=503)
        self._metrics.searches.labels("ok").inc()
        return Response(orjson.dumps(result), media_type="application/json")
