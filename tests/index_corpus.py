"""A small, fixed corpus for the search index contract: two tenants, a handful of calls, hand-countable.

Turns have the shape of a stored ``turn.ended`` payload (docs/events.examples.jsonl) and calls the shape of
``CallStore.get`` (engine/store/sqlite.py ``_record``); both go through ``engine.search.documents`` into
``IndexOp``s exactly as the indexer builds them. Everything is written out rather than generated so that a
test's expected answer can be counted by reading the tables below.

Timing: turn ``i`` of a call starts at ``i * 5000`` ms and lasts 4000 ms (so the gap before it is 1000 ms).
"""

from __future__ import annotations

from typing import Any

from engine.search.documents import call_document, turn_document
from engine.search.fields import EMOTIONS, FEATURES
from engine.store.index import IndexOp

A = "acme"
B = "globex"
TURN_MS = 5000
SPOKEN_MS = 4000

# (tenant, call_sid): call record fields. CA3 never learned its start time; CA4 is still live (no duration).
CALLS: dict[tuple[str, str], dict[str, Any]] = {
    (A, "CA1"): {
        "started_at": "2026-03-01T10:00:00.000Z",
        "duration_ms": 40000,
        "direction": "inbound",
        "from": "+15550001",
        "custom": {"campaign": "spring", "tier": "gold"},
    },
    (A, "CA2"): {
        "started_at": "2026-03-02T09:00:00.000Z",
        "duration_ms": 30000,
        "direction": "outbound-api",
        "from": "+15550002",
        "custom": {"campaign": "summer"},
    },
    (A, "CA3"): {"started_at": None, "duration_ms": 20000, "direction": "inbound", "from": "+15550003", "custom": {}},
    (A, "CA4"): {
        "started_at": "2026-02-28T08:00:00.000Z",
        "duration_ms": None,
        "direction": "inbound",
        "from": "+15550004",
        "custom": {},
    },
    # globex reuses the SID CA1: the tenants' documents must still never meet.
    (B, "CA1"): {
        "started_at": "2026-03-05T12:00:00.000Z",
        "duration_ms": 10000,
        "direction": "inbound",
        "from": "+15559001",
        "custom": {"campaign": "spring"},
    },
    (B, "CB2"): {
        "started_at": "2026-03-04T12:00:00.000Z",
        "duration_ms": 5000,
        "direction": "inbound",
        "from": "+15559002",
        "custom": {},
    },
}

# (tenant, call_sid) -> turns in order: (speaker, text, frustration, emotion label, interrupted_other).
# Agents have no frustration score (null), which the sort tests use for "nulls last".
TURNS: dict[tuple[str, str], list[tuple[str, str | None, float | None, str, bool]]] = {
    (A, "CA1"): [
        ("agent", "Thank you for calling, how can I help", None, "neutral", False),
        ("caller", "I want to cancel my account", 0.5, "angry", False),
        ("agent", "I can help you cancel the account today", None, "neutral", True),
        ("caller", "Also I need a refund for last month", 0.7, "angry", False),
        ("agent", "The refund is processed", None, "happy", False),
        ("caller", "thanks goodbye", 0.1, "happy", False),
    ],
    (A, "CA2"): [
        ("agent", "Hello, how can I help", None, "neutral", False),
        ("caller", "My internet is down again", 0.5, "sad", False),
        ("agent", "Let me check the connection", None, "neutral", False),
        ("caller", "This is ridiculous, cancel everything", 0.9, "angry", True),
        ("agent", "I understand, I am sorry", None, "neutral", False),
        ("caller", "refunds please", 0.3, "neutral", False),
    ],
    (A, "CA3"): [
        ("caller", "Café problems with billing", 0.2, "neutral", False),
        ("agent", "Billing can help with the refund", None, "neutral", False),
        ("caller", None, 0.6, "angry", False),  # no transcript
        ("agent", "account closed", None, "neutral", False),
    ],
    (A, "CA4"): [
        ("caller", "cancel the order please", 0.4, "angry", False),
        ("agent", "one moment", None, "neutral", False),
    ],
    (B, "CA1"): [
        ("caller", "refund refund refund now", 0.8, "angry", True),
        ("agent", "cancel the refund account", None, "neutral", False),
    ],
    (B, "CB2"): [
        ("caller", "hello there", 0.1, "happy", False),
    ],
}


def call_record(tenant: str, call_sid: str) -> dict[str, Any]:
    """The call as ``CallStore.get`` returns it."""
    spec = CALLS[tenant, call_sid]
    live = spec["duration_ms"] is None
    n = sum(ord(c) for c in call_sid) % 90 + 10  # a stable two-digit suffix for the SIDs
    return {
        "call_sid": call_sid,
        "account_sid": f"AC{tenant}",
        "stream_sid": f"MZ{call_sid}{n}",
        "from": spec["from"],
        "to": "+15557770000",
        "direction": spec["direction"],
        "parent_call_sid": None,
        "status": "in-progress" if live else "completed",
        "live": live,
        "first_seen_at": spec["started_at"],
        "started_at": spec["started_at"],
        "ended_at": None if live else "2026-03-06T00:00:00.000Z",
        "duration_ms": spec["duration_ms"],
        "call_duration_s": None if live else spec["duration_ms"] // 1000,
        "tracks_declared": ["inbound", "outbound"],
        "tracks": {},
        "custom_parameters": dict(spec["custom"]),
        "lifecycle": [],
        "end_reason": None if live else "stop",
        "summary": {},
    }


def turn_payload(tenant: str, call_sid: str, index: int, text: str | None = None) -> dict[str, Any]:
    """Turn ``index`` of a call as a stored ``turn.ended`` payload (``text`` overrides the table's)."""
    speaker, table_text, frustration, label, interrupted = TURNS[tenant, call_sid][index]
    start = index * TURN_MS
    caller = speaker == "caller"
    scores = {e: (0.65 if e == label else 0.05) for e in EMOTIONS}
    features: dict[str, float | None] = {name: None for name in FEATURES}
    if caller:  # agents' prosody is not measured in this corpus: null features must stay null
        features.update({"pitch_mean_hz": 150.0 + 10 * index, "energy_db": -30.0 + index, "speaking_rate": 4.0})
    return {
        "type": "turn.ended",
        "id": f"{call_sid}:{index:08d}",
        "call_sid": call_sid,
        "stream_sid": call_record(tenant, call_sid)["stream_sid"],
        "turn_id": index,
        "speaker": speaker,
        "track": "inbound" if caller else "outbound",
        "start_ms": start,
        "end_ms": start + SPOKEN_MS,
        "duration_ms": SPOKEN_MS,
        "text": text if text is not None else table_text,
        "backchannel": False,
        "overlap_ms": 0,
        "interrupted_other": interrupted,
        "interrupted_by_other": False,
        "gap_before_ms": None if index == 0 else TURN_MS - SPOKEN_MS,
        "response_latency_ms": TURN_MS - SPOKEN_MS if index > 0 and not caller else None,
        "features": features,
        "features_window_ms": SPOKEN_MS,
        "features_skipped": None,
        "frustration": frustration,
        "emotion": {"label": label, "scores": scores, "arousal": 0.7 if label == "angry" else 0.4},
    }


def turn_op(tenant: str, call_sid: str, index: int, text: str | None = None) -> IndexOp:
    doc = turn_document(tenant, turn_payload(tenant, call_sid, index, text), call_record(tenant, call_sid))
    return IndexOp("turn", tenant, doc)


def corpus_ops() -> list[IndexOp]:
    """Every call document, then its turns: what the indexer would write for the corpus."""
    ops: list[IndexOp] = []
    for tenant, call_sid in CALLS:
        ops.append(IndexOp("call", tenant, call_document(tenant, call_record(tenant, call_sid))))
        ops.extend(turn_op(tenant, call_sid, i) for i in range(len(TURNS[tenant, call_sid])))
    return ops


def turn_count(tenant: str, call_sid: str | None = None) -> int:
    return sum(len(turns) for (t, sid), turns in TURNS.items() if t == tenant and call_sid in (None, sid))
