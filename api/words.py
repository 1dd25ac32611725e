"""TurnWords: putting words on stored turns, from either source, and telling subscribers.

The built-in transcriber (``api/transcripts.py``) and posted transcripts (``api/external.py``) both end
here. A turn's words replace its stored copy (and so its search document: same id, never a second one), and
a ``turn.transcribed`` event goes to SSE subscribers through the same router as the call's other events.

Which source wins: ``precedence`` names it (``external`` by default: a platform's own text is what its
agent said or heard). Words from the other source never replace the winner's; the winner's replace
anything. The text is redacted (``engine.transcript.fields``) before it reaches this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from api.events import EventRouter
from api.metrics import Metrics
from engine.events import TURN_TRANSCRIBED, iso_utc
from engine.store.base import CallStore

log = logging.getLogger("mise.words")

SOURCES = ("asr", "external")
_EVENT_KEYS = ("turn_id", "track", "speaker", "start_ms", "end_ms", "stream_sid")
_WORD_KEYS = ("text", "words", "redactions", "transcript", "transcript_source", "transcript_skipped")


class TurnWords:
    def __init__(
        self, *, store: CallStore, events: EventRouter, metrics: Metrics, precedence: str = "external"
    ) -> None:
        if precedence not in SOURCES:
            raise ValueError(f"precedence must be one of {SOURCES}, not {precedence!r}")
        self._store = store
        self._events = events
        self._metrics = metrics
        self._precedence = precedence
        # Told of every turn whose words were stored (the recorder mutes their redacted spans in the audio).
        self.on_stored: Callable[[str, str, list[dict[str, Any]]], Awaitable[None]] | None = None

    def _wins(self, stored: dict[str, Any], source: str | None) -> bool:
        """May words from ``source`` (None: a skip) replace what ``stored`` holds?"""
        held = stored.get("transcript_source")
        if held is None:
            return True
        if source is None:  # a skip never takes words away
            return False
        return held == source or source == self._precedence

    async def apply(
        self,
        tenant: str,
        call_sid: str,
        changes: dict[int, dict[str, Any]],
        *,
        source: str | None,
        lag_s: Callable[[int], float | None] = lambda turn_id: None,
        drain: bool = True,
    ) -> list[dict[str, Any]]:
        """Put ``changes`` (turn id -> ``engine.transcript.fields`` or a skip) on the call's stored turns; the
        turns changed. Turns not stored (yet, or any more), turns whose words come from the winning source and
        turns that have these very words already (a retry) are left as they are. ``drain``: first wait for the
        call's turn.ended writes in flight (not from within one of them)."""
        if drain:
            await self._events.drain(call_sid)
        stored = await asyncio.to_thread(self._store.turns_by_id, tenant, call_sid, list(changes))
        changed = []
        for turn_id, fields in changes.items():
            turn = stored.get(turn_id)
            if turn is None:
                self._metrics.transcripts.labels("turn_unknown").inc()
                continue
            if not self._wins(turn, source):
                self._metrics.transcripts.labels("kept_other_source").inc()
                continue
            if all(turn.get(k) == v for k, v in fields.items()):
                continue  # already so
            turn.update(fields)
            changed.append(turn)
        if not changed:
            return []
        await asyncio.to_thread(self._store.add_turns, tenant, changed)
        if self.on_stored is not None:
            try:
                await self.on_stored(tenant, call_sid, changed)
            except Exception:
                log.exception("call %s: muting redacted audio failed (playback still mutes it)", call_sid)
        at = iso_utc(time.time())
        events = []
        for turn in changed:
            self._metrics.transcripts.labels(turn.get("transcript") or "none").inc()
            lag = lag_s(int(turn["turn_id"]))
            if lag is not None:
                self._metrics.asr_lag.observe(lag)
            events.append((tenant, transcribed_event(call_sid, turn, at, lag)))
        self._events.publish(events)
        return changed


def transcribed_event(call_sid: str, turn: dict[str, Any], at: str, lag_s: float | None) -> dict[str, Any]:
    """``turn.transcribed``: a turn's words (or why it has none). Its id is unique per call, turn and
    version of the words: a turn whose words change again gets another event."""
    words = {k: turn.get(k) for k in _WORD_KEYS}
    version = hashlib.sha1(repr(sorted(words.items())).encode()).hexdigest()[:10]
    return {
        "type": TURN_TRANSCRIBED,
        "id": f"{call_sid}:{turn.get('stream_sid')}:words-{turn['turn_id']}-{version}",
        "call_sid": call_sid,
        "at": at,
        **{k: turn.get(k) for k in _EVENT_KEYS},
        **words,
        "words": words["words"] or [],
        "redactions": words["redactions"] or [],
        "lag_ms": None if lag_s is None else round(lag_s * 1000),
    }
