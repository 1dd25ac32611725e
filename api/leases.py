"""Leases on live calls: a call is live only while the API process streaming it is.

Every API process has an ``owner`` id (host name, pid, a random token). A stream's call is stored with
that owner and a lease (``LEASE_S`` ahead), renewed every ``RENEW_S`` for all its live calls in one
write. A process that dies (SIGKILL, a crash, a lost machine) stops renewing. The sweeper of every API
process (at start-up, then every ``SWEEP_S``) ends a live call as ``end_reason: "lost"`` when its owner
is gone: its lease ran out, or, on this machine, its owner's process is no longer there (a restart
after a crash needs no wait). The figures known so far go with it: the call's host, if it is still
alive (a Ray cluster outlives an API process), finishes the call and gives its figures and last turns;
otherwise the stored turns stand, and the call says what happened (``error``).

A terminal status callback (``completed``, ``busy``, ...) for a call whose owner is gone ends it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any

from ray.actor import ActorHandle

from engine.events import TURN_ENDED, iso_utc
from engine.store.base import CallStore

log = logging.getLogger("mise.leases")

LEASE_S = 15.0
RENEW_S = 5.0
SWEEP_S = 5.0
LOST = "the process streaming this call stopped; the call was ended without its stream's end"


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_gone(owner: str | None, lease_until: float | None, now: float, me: str) -> bool:
    """Whether a live call's owner is gone: no owner or lease (a call from before leases), a lease run
    out, or an owner on this machine whose process is not running (or is this process under an earlier
    token: a restart that was given the same pid). ``me``: this process's own owner id."""
    if owner == me:
        return False
    if owner is None or lease_until is None or lease_until < now:
        return True
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process: its lease says whether it is there
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # running, as another user
        return False
    return False


class Leases:
    def __init__(self, *, store: CallStore, directory: ActorHandle[Any], metrics: Any) -> None:
        self.owner = new_owner()
        self._store = store
        self._directory = directory
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self.lost = 0

    @staticmethod
    def until() -> float:
        return time.time() + LEASE_S

    async def start(self) -> None:
        await self.sweep()  # before serving: what a crashed predecessor left live ends now
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(RENEW_S, self.renew)),
            loop.create_task(self._every(SWEEP_S, self.sweep)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # the store is busy or away: next time
                log.exception("lease upkeep failed; retrying in %.0f s", seconds)

    async def renew(self) -> None:
        await asyncio.to_thread(self._store.renew_leases, self.owner, self.until())

    async def sweep(self) -> int:
        """End the live calls whose owner is gone; how many."""
        now = time.time()
        leases = await asyncio.to_thread(self._store.live_leases)
        ended = 0
        for lease in leases:
            if owner_gone(lease["owner"], lease["lease_until"], now, self.owner):
                ended += await self.end_lost(lease["tenant"], lease["call_sid"], lease["owner"])
        return ended

    async def end_lost(self, tenant: str, call_sid: str, owner: str | None) -> bool:
        """End one call whose owner is gone, with whatever its host still knows."""
        final: dict[str, Any] = {"error": LOST}
        with contextlib.suppress(Exception):
            found: tuple[str, str, ActorHandle[Any]] | None = await asyncio.wait_for(
                self._directory.lookup.remote(call_sid), 10
            )
            if found is not None and found[0] == tenant:
                _, _, host = found
                final = (await asyncio.wait_for(host.finish.remote(call_sid, "lost"), 30)) or final
                final["error"] = LOST
                await self._directory.release.remote(call_sid)
        events = final.pop("events", [])
        turns = [{k: v for k, v in e.items() if k not in ("type", "id")} for _, e in events if e["type"] == TURN_ENDED]
        if turns:
            await asyncio.to_thread(self._store.add_turns, tenant, turns)
        lost = await asyncio.to_thread(
            self._store.lose, tenant, call_sid, owner=owner, ended_at=iso_utc(now := time.time()), final=final
        )
        if lost:
            self.lost += 1
            self._metrics.streams.labels("lost").inc()
            log.warning("call %s: its stream's process (%s) is gone; ended as lost at %.0f", call_sid, owner, now)
        return lost

    async def end_if_orphaned(self, tenant: str, call_sid: str) -> bool:
        """A terminal status callback came: end the call now if it is live and its owner is gone."""
        leases = await asyncio.to_thread(self._store.live_leases)
        now = time.time()
        for lease in leases:
            mine = lease["tenant"] == tenant and lease["call_sid"] == call_sid
            if mine and owner_gone(lease["owner"], lease["lease_until"], now, self.owner):
                return await self.end_lost(tenant, call_sid, lease["owner"])
        return False
