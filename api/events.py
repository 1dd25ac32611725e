"""EventRouter: where call events land in an API process once they leave their call host.

Events come back with the replies to this process's audio pushes (and with ``finish``): the one way
they leave a call host. The router stores every ``turn.ended`` as a turn of its call (for
``GET /v1/calls/{sid}/turns``), counts events by type, and hands every event to the event hub
(``actors/hub.py``, through this process's ``api.sse.EventFeed``), whence the SSE endpoints of every API
process serve them: in one hand-over whose reply nothing waits for, so a slow or missing hub never holds up
audio, at most one every ``hub_interval_s`` (100 ms by default, ``MISE_EVENT_FLUSH_MS``): an event after a
quiet spell leaves at once, and under load the events of that interval go together (a Ray call to the hub
costs ~1 ms of CPU, caller and hub together; on the hub's node it goes over a local socket instead:
docs/density.md). Store
writes run in a worker thread, never on the event loop; ``drain`` waits for the writes of one call so
that its record is complete before the call is marked ended.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from actors.host import Published, Spoken
from api.metrics import Metrics
from engine import costs
from engine.events import TURN_ENDED, seq_of
from engine.store.base import CallStore

log = logging.getLogger("mise.events")

_ENVELOPE = ("type", "id")  # a stored turn is the event's payload; these belong to the event only


class EventRouter:
    def __init__(
        self,
        *,
        store: CallStore,
        metrics: Metrics,
        publish: Callable[[list[Published]], None] | None,
        hub_interval_s: float = 0.1,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._publish = publish  # to the hub (api.sse.EventFeed.publish)
        self._hub_interval = hub_interval_s
        self._to_hub: list[Published] = []
        self._hub_due = 0.0  # the event loop's time before which the next hand-over waits
        self._hub_timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._writes: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self._numbers: dict[str, tuple[int, int]] = {}  # call -> (next event sequence, next turn id) seen
        # Where turns' audio goes (the transcriber): (tenant, call_sid, turn_id, first ms, PCM bytes)
        self.on_clip: Callable[[str, str, int, int, bytes], None] | None = None
        # Called once a call's new turns are stored (posted transcripts waiting for them: api/external.py)
        self.turns_stored: Callable[[str, str, list[dict[str, Any]]], Awaitable[None]] | None = None

    def dispatch(self, events: list[Published], clips: list[Spoken] | None = None) -> None:
        """Take a batch of events (from one push reply) and the audio of its turns; returns at once."""
        with costs.stage("events"):
            self._dispatch(events)
            self.publish(events)
            if clips and self.on_clip is not None:
                tenants = {event["call_sid"]: tenant for tenant, event in events if "call_sid" in event}
                for call_sid, turn_id, first_ms, pcm in clips:
                    tenant = tenants.get(call_sid)
                    if tenant is not None:  # always: a turn's audio comes with its turn.ended
                        self.on_clip(tenant, call_sid, turn_id, first_ms, pcm)

    def publish(self, events: list[Published]) -> None:
        """Hand events to the hub (SSE): with the others of this turn of the event loop, or of this interval
        if the last hand-over was less than ``hub_interval_s`` ago."""
        if self._publish is not None and events:
            if not self._to_hub:
                loop = asyncio.get_running_loop()
                wait = self._hub_due - loop.time()
                if wait > 0:
                    self._hub_timer = loop.call_later(wait, self._send_to_hub)
                else:
                    self._hub_timer = loop.call_soon(self._send_to_hub)
            self._to_hub += events

    def flush(self) -> None:
        """Hand what waits to the hub now (the server is stopping)."""
        if self._hub_timer is not None:
            self._hub_timer.cancel()
        if self._to_hub:
            self._send_to_hub()

    def _send_to_hub(self) -> None:
        batch, self._to_hub, self._hub_timer = self._to_hub, [], None
        self._hub_due = asyncio.get_running_loop().time() + self._hub_interval
        assert self._publish is not None
        self._publish(batch)

    def _dispatch(self, events: list[Published]) -> None:
        turns: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for tenant, event in events:
            self._metrics.events.labels(event["type"]).inc()
            self._count(event)
            if event["type"] == TURN_ENDED:
                if event.get("features_skipped"):
                    self._metrics.turns_unmeasured.labels(event["features_skipped"]).inc()
                turns[tenant, event["call_sid"]].append({k: v for k, v in event.items() if k not in _ENVELOPE})
        for (tenant, call_sid), docs in turns.items():
            task = asyncio.get_running_loop().create_task(self._write(tenant, docs))
            self._writes[call_sid].add(task)
            task.add_done_callback(functools.partial(self._done, call_sid))

    def _count(self, event: dict[str, Any]) -> None:
        sid, seq_now = event.get("call_sid"), seq_of(event)
        if sid is None or seq_now is None:
            return
        seq, turn = self._numbers.get(sid, (0, 0))
        turn_id = event.get("turn_id") if event["type"] == TURN_ENDED else None
        self._numbers[sid] = (max(seq, seq_now + 1), max(turn, turn_id + 1) if isinstance(turn_id, int) else turn)

    def next_numbers(self, call_sid: str) -> tuple[int, int]:
        """(next event sequence, next turn id) after the call's events seen here (one stream at a time is
        live): where a call that goes on from another host continues its numbering."""
        return self._numbers.get(call_sid, (0, 0))

    def forget(self, call_sid: str) -> None:
        self._numbers.pop(call_sid, None)

    async def drain(self, call_sid: str) -> None:
        """Wait until every turn of ``call_sid`` dispatched so far is stored."""
        pending = list(self._writes.get(call_sid, ()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _write(self, tenant: str, docs: list[dict[str, Any]]) -> None:
        try:
            await asyncio.to_thread(self._store_turns, tenant, docs)
        except Exception:
            self._metrics.event_errors.inc()
            log.exception("could not store %d turns of call %s", len(docs), docs[0]["call_sid"])
            return
        if self.turns_stored is not None:
            try:
                await self.turns_stored(tenant, docs[0]["call_sid"], docs)
            except Exception:
                log.exception("could not give posted words to %d turns of call %s", len(docs), docs[0]["call_sid"])

    def _store_turns(self, tenant: str, docs: list[dict[str, Any]]) -> None:
        with costs.stage("storage"):  # the call store and the index spool (api/indexing.py)
            self._store.add_turns(tenant, docs)

    def _done(self, call_sid: str, task: asyncio.Task[None]) -> None:
        tasks = self._writes.get(call_sid)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._writes[call_sid]
