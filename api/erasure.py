"""Forgetting calls: ``DELETE /v1/calls/{call_sid}`` on request, and retention (calls past their age).

A call is erased everywhere Mise keeps it: its recording (local files and storage), its record,
lifecycle, turns and posted transcript segments (the call store, with deleted content overwritten), its
search documents (a ``delete_call`` spooled after anything the call spooled before, so no document
comes back), and the event hub's copies of its events. The request answers only once all of that is
done; if the search index is away it says so (503) and the deletion is applied when it is back (a retry
of the DELETE then confirms it). A live call is not erased (409): its audio and turns are still coming.

The log says which call of which tenant was erased and why, with counts: never any of its content.

Retention (``MISE_RETENTION_DAYS``, per tenant ``MISE_TENANT_RETENTION_DAYS``): every
``MISE_RETENTION_SWEEP_S`` each tenant's calls first seen longer ago than its retention are erased the
same way, oldest first, counted in ``mise_erasures_total{reason="retention"}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.actor import ActorHandle
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import KeyRing
from api.calls import error_response, owned_call
from api.indexing import Indexer, IndexingStore
from api.metrics import Metrics
from api.recorder import Recorder
from engine.events import iso_utc

log = logging.getLogger("mise.erasure")

INDEX_WAIT_S = 30.0
DAY_S = 86_400.0


class Erasure:
    def __init__(
        self,
        *,
        keys: KeyRing,
        store: IndexingStore,
        indexer: Indexer,
        recorder: Recorder,
        hub: Callable[[], ActorHandle[Any]],
        metrics: Metrics,
        retention_days: float | None,
        tenant_retention_days: dict[str, float],
        sweep_s: float,
    ) -> None:
        self._keys = keys
        self._store = store
        self._indexer = indexer
        self._recorder = recorder
        self._hub = hub
        self._metrics = metrics
        self._days = retention_days  # every tenant's, unless it has its own
        self._tenant_days = tenant_retention_days
        self._sweep_s = sweep_s
        self._task: asyncio.Task[None] | None = None
        self._busy: set[tuple[str, str]] = set()

    async def delete(self, request: Request) -> Response:
        found = await owned_call(request, self._keys, self._store)
        if isinstance(found, Response):
            return found
        tenant, call_sid, call = found
        if call["live"]:
            return error_response(409, "the call is live: erase it once it has ended")
        removed, indexed = await self.erase(tenant, call_sid, reason="request")
        if not indexed:
            return JSONResponse(
                {
                    "error": "the call's audio, turns and record are erased; its search documents will be deleted"
                    " when the search index is reachable again (repeat the DELETE to confirm)",
                    "erased": removed,
                },
                status_code=503,
            )
        return JSONResponse({"call_sid": call_sid, "erased": removed})

    async def erase(self, tenant: str, call_sid: str, *, reason: str) -> tuple[dict[str, int], bool]:
        """Erase one call everywhere; (what was removed by kind, whether the index has applied it)."""
        key = (tenant, call_sid)
        while key in self._busy:  # a DELETE and the retention sweep at once: the second waits for the first
            await asyncio.sleep(0.05)
        self._busy.add(key)
        try:
            removed = await run_in_threadpool(self._store.erase, tenant, call_sid)
            upto = self._store.spooled_to()
            removed["recording_files"] = await self._recorder.erase(tenant, call_sid)
            try:
                removed["hub_events"] = await self._hub().erase.remote(tenant, call_sid)
            except Exception:  # the hub restarted meanwhile: a new hub holds nothing of this call
                log.warning("call %s: the event hub could not be reached to forget its events", call_sid)
                removed["hub_events"] = 0
            indexed = await self._indexer.applied(upto, INDEX_WAIT_S)
        finally:
            self._busy.discard(key)
        self._metrics.erasures.labels(reason).inc()
        log.info(
            "call %s of tenant %s erased (%s): %s%s",
            call_sid,
            tenant,
            reason,
            ", ".join(f"{k} {v}" for k, v in sorted(removed.items())),
            "" if indexed else "; search documents pending (index unreachable)",
        )
        return removed, indexed

    # --- retention ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._days is not None or self._tenant_days:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                erased = await self.sweep()
                if erased:
                    log.info("retention: %d calls past their age erased", erased)
            except Exception:
                log.exception("retention sweep failed; trying again in %.0f s", self._sweep_s)
            await asyncio.sleep(self._sweep_s)

    async def sweep(self, *, now: float | None = None) -> int:
        """Erase every call past its tenant's retention, oldest first; how many."""
        now = time.time() if now is None else now
        erased = 0
        for tenant, days in sorted(self._tenant_days.items()):
            erased += await self._sweep(days, now, tenant=tenant)
        if self._days is not None:
            erased += await self._sweep(self._days, now, exclude=tuple(self._tenant_days))
        return erased

    async def _sweep(self, days: float, now: float, *, tenant: str | None = None, exclude: tuple[str, ...] = ()) -> int:
        cutoff = iso_utc(now - days * DAY_S)
        erased = 0
        while aged := await run_in_threadpool(
            self._store.aged_calls, cutoff, tenant=tenant, exclude=exclude, limit=200
        ):
            for t, sid in aged:
                await self.erase(t, sid, reason="retention")
                erased += 1
        return erased
