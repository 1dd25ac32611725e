"""Index documents, built by pure functions from a stored turn and its call record.

A turn document is flat: every field of ``engine.search.fields.FIELDS`` (null when unknown), plus
``tenant``, ``doc_id``, ``text``, ``custom_kv`` (the call's custom parameters as ``name=value``
strings), ``call_started_ms`` (the call's start as epoch ms) and ``source`` (the turn as the API shows
it). Its id is ``{tenant}:{call_sid}:{turn_id}``: a call SID is alphanumeric, so the id is unambiguous
read from the right, and two tenants' calls never share a document even if they share a SID. Built
again whenever the turn or its call changes (words arrive, the call ends): indexing it again
replaces it, so the index never holds a turn twice.
"""

from __future__ import annotations

from typing import Any

from engine.search.fields import EMOTIONS, FEATURES, FIELDS
from engine.search.query import QueryError, iso_to_ms


def turn_id_of(tenant: str, call_sid: str, turn_id: int) -> str:
    return f"{tenant}:{call_sid}:{turn_id}"


def call_id_of(tenant: str, call_sid: str) -> str:
    return f"{tenant}:{call_sid}"


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(iso_to_ms(iso))
    except QueryError:
        return None


def turn_document(tenant: str, turn: dict[str, Any], call: dict[str, Any] | None) -> dict[str, Any]:
    """The flat index document of one turn (``turn``: a ``turn.ended`` payload as stored; ``call``: its
    call record as ``CallStore.get`` returns it, or None)."""
    call = call or {}
    features = turn.get("features") or {}
    emotion = turn.get("emotion") or {}
    scores = emotion.get("scores") or {}
    duration = call.get("duration_ms") if not call.get("live") else None
    start_ms = int(turn["start_ms"])
    doc: dict[str, Any] = dict.fromkeys(FIELDS)
    doc.update(
        {
            "call_sid": turn["call_sid"],
            "stream_sid": turn.get("stream_sid") or call.get("stream_sid"),
            "turn_id": int(turn["turn_id"]),
            "turn_index": int(turn["turn_id"]),
            "speaker": turn.get("speaker"),
            "track": turn.get("track"),
            "start_ms": start_ms,
            "end_ms": int(turn["end_ms"]),
            "duration_ms": int(turn.get("duration_ms") or (int(turn["end_ms"]) - start_ms)),
            "ms_from_start": start_ms,
            "ms_to_end": max(0, int(duration) - start_ms) if duration is not None else None,
            "gap_before_ms": turn.get("gap_before_ms"),
            "response_latency_ms": turn.get("response_latency_ms"),
            "overlap_ms": turn.get("overlap_ms"),
            "interrupted_other": bool(turn.get("interrupted_other")),
            "interrupted_by_other": bool(turn.get("interrupted_by_other")),
            "backchannel": bool(turn.get("backchannel")),
            "frustration": turn.get("frustration"),
            "arousal": emotion.get("arousal"),
            "emotion": emotion.get("label"),
            "from": call.get("from"),
            "to": call.get("to"),
            "direction": call.get("direction"),
            "call_status": call.get("status"),
            "call_started_at": call.get("started_at") or call.get("first_seen_at"),
            "call_duration_ms": duration,
        }
    )
    for name in FEATURES:
        value = features.get(name)
        doc[name] = float(value) if isinstance(value, int | float) else None
    for label in EMOTIONS:
        value = scores.get(label)
        doc[f"emotion_{label}"] = float(value) if isinstance(value, int | float) else None
    custom = call.get("custom_parameters") or {}
    doc.update(
        {
            "tenant": tenant,
            "doc_id": turn_id_of(tenant, turn["call_sid"], int(turn["turn_id"])),
            "text": turn.get("text") or None,
            "custom_kv": sorted(f"{k}={v}" for k, v in custom.items()),
            "call_started_ms": _ms(doc["call_started_at"]),
            "source": turn,
        }
    )
    return doc


def call_document(tenant: str, call: dict[str, Any]) -> dict[str, Any]:
    """The index document of one call: its record (``CallStore.get``) plus what filters need."""
    custom = call.get("custom_parameters") or {}
    started = call.get("started_at") or call.get("first_seen_at")
    return {
        "tenant": tenant,
        "doc_id": call_id_of(tenant, call["call_sid"]),
        "call_sid": call["call_sid"],
        "from": call.get("from"),
        "to": call.get("to"),
        "direction": call.get("direction"),
        "status": call.get("status"),
        "live": bool(call.get("live")),
        "started_at": started,
        "started_ms": _ms(started),
        "ended_at": call.get("ended_at"),
        "duration_ms": call.get("duration_ms"),
        "end_reason": call.get("end_reason"),
        "custom_kv": sorted(f"{k}={v}" for k, v in custom.items()),
        "source": call,
    }
