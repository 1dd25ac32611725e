"""``GET /v1/calls`` and ``GET /v1/calls/{call_sid}``: call records, live figures merged in."""

from __future__ import annotations

from typing import Any

from ray.actor import ActorHandle
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import KeyRing, key_from_request
from engine.store.base import CallStore

MAX_LIMIT = 500


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
            return _error(401, "missing or unknown API key")
        q = request.query_params
        try:
            limit = min(MAX_LIMIT, max(1, int(q.get("limit", "50"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        live = {"true": True, "false": False}.get(q.get("live", "").lower())
        calls = await run_in_threadpool(self._store.recent, tenant, limit=limit, before=q.get("before"), live=live)
        for call in calls:
            if call["live"]:
                await self._merge_live(tenant, call)
        next_before = calls[-1]["first_seen_at"] if len(calls) == limit else None
        return JSONResponse({"calls": calls, "next_before": next_before})

    async def get(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _error(401, "missing or unknown API key")
        call = await run_in_threadpool(self._store.get, tenant, request.path_params["call_sid"])
        if call is None:
            return _error(404, "no such call")
        if call["live"]:
            await self._merge_live(tenant, call)
        return JSONResponse(call)

    async def _merge_live(self, tenant: str, call: dict[str, Any]) -> None:
        """Live calls' durations and track figures come from their host actor, as of now."""
        found = await self._directory.lookup.remote(call["call_sid"])
        if found is None or found[0] != tenant:
            return
        snapshot = await found[2].snapshot.remote(call["call_sid"])
        if snapshot:
            call["tracks"] = snapshot["tracks"]
            call["duration_ms"] = snapshot["duration_ms"]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": detail}, status_code=status)
