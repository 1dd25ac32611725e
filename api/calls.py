"""``GET /v1/calls``, ``GET /v1/calls/{call_sid}`` (live figures merged in) and ``.../turns``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ray.actor import ActorHandle
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import KeyRing, key_from_request
from engine.events import iso_utc
from engine.search.query import QueryError, iso_to_ms
from engine.store.base import CallFilters, CallStore

MAX_LIMIT = 500
LIVE_TIMEOUT_S = 2.0

log = logging.getLogger("mise.calls")


class Calls:
    def __init__(self, *, keys: KeyRing, store: CallStore, directory: ActorHandle[Any]) -> None:
        self._keys = keys
        self._store = store
        self._directory = directory

    def _tenant(self, request: Request) -> str | None:
        return self._keys.tenant_for(key_from_request(request))

    async def list(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return error_response(401, "missing or unknown API key")
        q = request.query_params
        try:
            limit = min(MAX_LIMIT, max(1, int(q.get("limit", "50"))))
        except ValueError:
            return error_response(400, "limit must be an integer")
        live = {"true": True, "false": False}.get(q.get("live", "").lower())
        try:
            filters = call_filters(q)
        except ValueError as exc:
            return error_response(400, str(exc))
        calls = await run_in_threadpool(
            self._store.recent, tenant, limit=limit, before=q.get("before"), live=live, filters=filters
        )
        await asyncio.gather(*(self._merge_live(tenant, c) for c in calls if c["live"]))
        next_before = f"{calls[-1]['first_seen_at']}|{calls[-1]['call_sid']}" if len(calls) == limit else None
        return JSONResponse({"calls": calls, "next_before": next_before})

    async def get(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return error_response(401, "missing or unknown API key")
        call = await run_in_threadpool(self._store.get, tenant, request.path_params["call_sid"])
        if call is None:
            return error_response(404, "no such call")
        if call["live"]:
            await self._merge_live(tenant, call)
        return JSONResponse(call)

    async def turns(self, request: Request) -> Response:
        """A call's finished turns so far (live calls too: each turn is stored as it ends)."""
        found = await owned_call(request, self._keys, self._store)
        if isinstance(found, Response):
            return found
        tenant, call_sid, call = found
        turns = await run_in_threadpool(self._store.turns, tenant, call_sid)
        return JSONResponse({"call_sid": call_sid, "live": call["live"], "turns": turns})

    async def _merge_live(self, tenant: str, call: dict[str, Any]) -> None:
        """Live calls' durations and track figures come from their host actor, as of now."""
        try:
            found: tuple[str, str, Any] | None = await asyncio.wait_for(
                self._directory.lookup.remote(call["call_sid"]), LIVE_TIMEOUT_S
            )
            if found is None or found[0] != tenant:
                return
            snapshot = await asyncio.wait_for(found[2].snapshot.remote(call["call_sid"]), LIVE_TIMEOUT_S)
        except Exception:
            log.warning("call %s: live figures unavailable; showing the stored record", call["call_sid"])
            return
        if snapshot:
            call["tracks"] = snapshot["tracks"]
            call["duration_ms"] = snapshot["duration_ms"]
            call["summary"] = snapshot.get("summary", {})


_LIST_PARAMS = frozenset({"limit", "live", "before", "api_key"})


def call_filters(params: Mapping[str, str]) -> CallFilters | None:
    """The call-metadata filters of ``GET /v1/calls``; ValueError naming a bad parameter."""
    found: dict[str, Any] = {}
    custom: dict[str, str] = {}
    for name, raw in params.items():
        if name in _LIST_PARAMS:
            continue
        if name in ("from", "to", "direction", "status"):
            found["from_" if name == "from" else name] = raw
        elif name in ("started_after", "started_before"):
            try:  # stored times are iso_utc's form: compare like with like
                found[name] = iso_utc(iso_to_ms(raw, name) / 1000)
            except QueryError as exc:
                raise ValueError(str(exc)) from None
        elif name in ("min_duration_ms", "max_duration_ms"):
            if not raw.isdigit():
                raise ValueError(f"{name}: expected a whole number of milliseconds, got {raw!r}")
            found[name] = int(raw)
        elif name.startswith("custom.") and len(name) > len("custom."):
            custom[name[len("custom.") :]] = raw
        else:
            raise ValueError(f"{name}: unknown parameter")
    if not found and not custom:
        return None
    return CallFilters(**found, custom=custom)


async def owned_call(request: Request, keys: KeyRing, store: CallStore) -> tuple[str, str, dict[str, Any]] | Response:
    """The request's ``{call_sid}`` as (tenant, call_sid, call record), or the answer when it cannot be had:
    401 without a valid key, 404 when the key's tenant has no such call (another tenant's included)."""
    tenant = keys.tenant_for(key_from_request(request))
    if tenant is None:
        return error_response(401, "missing or unknown API key")
    call_sid = request.path_params["call_sid"]
    call = await run_in_threadpool(store.get, tenant, call_sid)
    if call is None:
        return error_response(404, "no such call")
    return tenant, call_sid, call


def error_response(status: int, detail: str) -> JSONResponse:
    """The API's error body: ``{"error": detail}`` with ``status``."""
    return JSONResponse({"error": detail}, status_code=status)
