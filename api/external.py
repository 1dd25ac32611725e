"""``POST /v1/calls/{call_sid}/transcripts``: words for a call's turns from the platform that has them.

A voice agent knows what it said and what its STT heard; posting that here gives the call's turns those
words (``engine/external.py``: segments matched to turns by track and overlap), redacted before anything
is kept, stored on the turns, indexed and announced as ``turn.transcribed`` (``api/words.py``). Posted
words win over the built-in transcriber's unless ``MISE_TRANSCRIPT_PRECEDENCE=asr``.

Live or after the call: segments are kept (redacted) with the call, and a segment whose turn has not
ended yet is matched when it does (``turns_stored``, called once a call's new turns are stored).
Tenant-scoped (another tenant's call is 404), validated (400 naming the problem), idempotent: a retried
request (same segments, or the same segment ids) changes nothing and announces nothing again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import KeyRing, key_from_request
from api.calls import error_response
from api.words import TurnWords
from engine import external
from engine.store.base import CallStore

log = logging.getLogger("mise.external")


class ExternalTranscripts:
    def __init__(self, *, keys: KeyRing, store: CallStore, words: TurnWords, redact: bool) -> None:
        self._keys = keys
        self._store = store
        self._words = words
        self._redact = redact

    async def __call__(self, request: Request) -> Response:
        tenant = self._keys.tenant_for(key_from_request(request))
        if tenant is None:
            return error_response(401, "missing or unknown API key")
        call_sid = request.path_params["call_sid"]
        if await asyncio.to_thread(self._store.get, tenant, call_sid) is None:
            return error_response(404, "no such call")
        try:
            segments = external.parse(orjson.loads(await request.body()))
        except orjson.JSONDecodeError:
            return error_response(400, "the body is not JSON")
        except ValueError as exc:
            return error_response(400, str(exc))
        kept = [external.redacted(s, redact=self._redact) for s in segments]
        new = await asyncio.to_thread(self._store.add_segments, tenant, call_sid, kept)
        changed, waiting = await self._match(tenant, call_sid, None)
        log.info("call %s: %d transcript segments posted (%d new), %d turns changed", call_sid, len(kept), new, changed)
        body = {"call_sid": call_sid, "segments": len(kept), "new": new, "turns_changed": changed, "waiting": waiting}
        return JSONResponse(body)

    async def turns_stored(self, tenant: str, call_sid: str, turns: list[dict[str, Any]]) -> None:
        """New turns of a call are stored: give them the call's posted words that fall in them, if any."""
        segments = await asyncio.to_thread(self._store.segments, tenant, call_sid)
        if segments:
            await self._match(tenant, call_sid, turns, segments=segments)

    async def _match(
        self,
        tenant: str,
        call_sid: str,
        turns: list[dict[str, Any]] | None,
        *,
        segments: list[dict[str, Any]] | None = None,
    ) -> tuple[int, int]:
        """Give ``turns`` (None: all the call's stored turns) the words of the call's segments that fall in
        them: (turns changed, segments matching no turn yet)."""
        if segments is None:
            segments = await asyncio.to_thread(self._store.segments, tenant, call_sid)
        every = await asyncio.to_thread(self._store.turns, tenant, call_sid)
        matched = external.match(every, segments)
        placed = {s["id"] for segs in matched.values() for s in segs}
        if turns is not None:
            wanted = {int(t["turn_id"]) for t in turns}
            matched = {turn_id: segs for turn_id, segs in matched.items() if turn_id in wanted}
        changes = {turn_id: external.turn_fields(segs, redact=self._redact) for turn_id, segs in matched.items()}
        # Called from the turns' own store write (``turns_stored``): nothing of theirs left to wait for.
        changed = await self._words.apply(tenant, call_sid, changes, source="external", drain=turns is None)
        return len(changed), sum(1 for s in segments if s["id"] not in placed)
