"""The storage seam: what the API needs to keep call records, whatever holds them.

Every method is scoped to a tenant; no method can read or write another tenant's calls.
Implementations: ``engine.store.sqlite.SqliteStore`` (embedded default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.call import CallMeta


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """One Twilio status callback (or stream status callback), already parsed from the form."""

    call_sid: str
    account_sid: str
    status: str  # CallStatus, or "stream-started"/"stream-stopped"/"stream-error" for stream events
    at: str  # ISO 8601 UTC (from Twilio's Timestamp, else time of receipt)
    sequence: int | None  # SequenceNumber; None for stream status callbacks
    dedup_key: str  # identical callbacks share it (retries are idempotent)
    fields: dict[str, str]  # From, To, Direction, CallDuration, ParentCallSid, StreamError...


@dataclass(frozen=True, slots=True)
class CallFilters:
    """Call-metadata filters of ``GET /v1/calls`` (all given must hold). Times are ISO 8601 UTC."""

    from_: str | None = None
    to: str | None = None
    direction: str | None = None
    status: str | None = None
    started_after: str | None = None
    started_before: str | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    custom: dict[str, str] = field(default_factory=dict)


class CallStore(Protocol):
    def stream_started(self, meta: CallMeta, *, owner: str | None = None, lease_until: float | None = None) -> int:
        """Record a call's stream start (creates the call if no callback came first), streamed by the API
        process ``owner`` whose lease on it runs to ``lease_until`` (epoch s; ``api/leases.py``). Returns the
        turn id the stream numbers its turns from: after the turns of the call's earlier streams, if any."""

    def renew_leases(self, owner: str, until: float) -> int:
        """Extend the lease of every live call ``owner`` streams; how many there are."""

    def live_leases(self) -> list[dict[str, Any]]:
        """Every live call's ``tenant``, ``call_sid``, ``owner`` and ``lease_until``."""

    def lose(self, tenant: str, call_sid: str, *, owner: str | None, ended_at: str, final: dict[str, Any]) -> bool:
        """End a live call whose owner is gone (``end_reason`` "lost") if still live under ``owner``."""

    def stream_ended(
        self, tenant: str, call_sid: str, *, ended_at: str, end_reason: str, final: dict[str, Any]
    ) -> None:
        """Record how the stream ended and its final figures (``tracks``, ``duration_ms``, ...)."""

    def status_callback(self, tenant: str, callback: StatusCallback) -> bool:
        """Store a callback; False if it was a duplicate. Status follows the highest SequenceNumber."""

    def get(self, tenant: str, call_sid: str) -> dict[str, Any] | None: ...

    def call_keys(self) -> list[tuple[str, str]]:
        """(tenant, call_sid) of every call, oldest first (rebuilding the search index walks them)."""

    def add_turns(self, tenant: str, turns: list[dict[str, Any]]) -> None:
        """Store finished turns (``turn.ended`` payloads with ``call_sid``, ``stream_sid``, ``turn_id``);
        storing the same turn again replaces it."""

    def turns(self, tenant: str, call_sid: str) -> list[dict[str, Any]]:
        """A call's turns in stream order (stream, then start)."""

    def turns_by_id(self, tenant: str, call_sid: str, turn_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Those of a call's turns that are stored, by id (a call's turn ids are unique across its streams)."""

    def add_segments(self, tenant: str, call_sid: str, segments: list[dict[str, Any]]) -> int:
        """Keep a call's posted transcript segments (``engine.external.redacted``), by id: one already kept
        is left as it is (a retry). Returns how many were new."""

    def segments(self, tenant: str, call_sid: str) -> list[dict[str, Any]]:
        """A call's kept transcript segments."""

    def erase(self, tenant: str, call_sid: str) -> dict[str, int]:
        """Delete everything stored of a call (record, lifecycle, turns, segments); counts by kind."""

    def aged_calls(
        self, before: str, *, tenant: str | None = None, exclude: tuple[str, ...] = (), limit: int = 500
    ) -> list[tuple[str, str]]:
        """(tenant, call_sid) of calls not live first seen before ``before`` (ISO 8601 UTC), oldest first."""

    def recent(
        self,
        tenant: str,
        *,
        limit: int = 50,
        before: str | None = None,
        live: bool | None = None,
        filters: CallFilters | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` is the cursor ``"first_seen_at|call_sid"`` of the last call of the
        previous page (or a bare time)."""

    def close(self) -> None: ...
