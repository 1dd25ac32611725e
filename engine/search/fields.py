"""The searchable fields of a turn document: one catalogue for the query model, SQL and OpenSearch.

A turn document (``engine.search.documents.turn_document``) is flat: every name below is one field of
it, with one type. Queries name these fields; a few dotted aliases follow the turn's own JSON shape
(``features.pitch_mean_hz``, ``emotion.scores.angry``, ``emotion.label``, ``emotion.arousal``).
Call custom parameters are ``custom.<name>`` (keyword equality only).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from engine.prosody import FEATURE_KEYS, RELATIVE_KEYS


class Kind(StrEnum):
    NUMBER = "number"  # float64 in both backends (SQLite REAL, OpenSearch double)
    INTEGER = "integer"  # whole numbers (ms, ids, counts)
    KEYWORD = "keyword"  # exact strings
    BOOLEAN = "boolean"
    DATE = "date"  # ISO 8601 UTC in queries and documents; epoch ms inside the indices


# Prosody and voice quality, then the turn against the speaker's earlier turns in the call
# (pitch_z/energy_z in standard deviations, pitch_delta_st/energy_delta_db in semitones and dB).
FEATURES: Final = (*FEATURE_KEYS, *RELATIVE_KEYS)
# The emotion model's classes (models/MODEL_CARD.md); each score is a field `emotion_<label>`.
EMOTIONS: Final = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")

FIELDS: Final[dict[str, Kind]] = {
    # identity and position
    "call_sid": Kind.KEYWORD,
    "stream_sid": Kind.KEYWORD,
    "turn_id": Kind.INTEGER,
    "turn_index": Kind.INTEGER,  # the turn's place in its call, from 0
    "speaker": Kind.KEYWORD,  # caller | agent
    "track": Kind.KEYWORD,  # inbound | outbound
    "start_ms": Kind.INTEGER,
    "end_ms": Kind.INTEGER,
    "duration_ms": Kind.INTEGER,
    "ms_from_start": Kind.INTEGER,  # = start_ms
    "ms_to_end": Kind.INTEGER,  # call duration - start_ms; null while the call is live
    # timing between turns
    "gap_before_ms": Kind.INTEGER,
    "response_latency_ms": Kind.INTEGER,
    "overlap_ms": Kind.INTEGER,
    "interrupted_other": Kind.BOOLEAN,
    "interrupted_by_other": Kind.BOOLEAN,
    "backchannel": Kind.BOOLEAN,
    # the model
    "frustration": Kind.NUMBER,
    "arousal": Kind.NUMBER,
    "emotion": Kind.KEYWORD,  # the label
    **{f"emotion_{label}": Kind.NUMBER for label in EMOTIONS},
    # prosody and voice quality
    **dict.fromkeys(FEATURES, Kind.NUMBER),
    # the call, copied into each of its turns
    "from": Kind.KEYWORD,
    "to": Kind.KEYWORD,
    "direction": Kind.KEYWORD,
    "call_status": Kind.KEYWORD,
    "call_started_at": Kind.DATE,
    "call_duration_ms": Kind.INTEGER,
}
CUSTOM_PREFIX: Final = "custom."
TEXT_FIELD: Final = "text"

ALIASES: Final[dict[str, str]] = {
    **{f"features.{name}": name for name in FEATURES},
    **{f"emotion.scores.{label}": f"emotion_{label}" for label in EMOTIONS},
    "emotion.label": "emotion",
    "emotion.arousal": "arousal",
    "call.from": "from",
    "call.to": "to",
    "call.direction": "direction",
    "call.status": "call_status",
    "call.started_at": "call_started_at",
    "call.duration_ms": "call_duration_ms",
}

NUMERIC: Final = frozenset(name for name, kind in FIELDS.items() if kind in (Kind.NUMBER, Kind.INTEGER, Kind.DATE))
# Sortable: every numeric field; keywords sort too (the tie-break is always call_sid, turn_index).
SORTABLE: Final = frozenset(name for name, kind in FIELDS.items() if kind != Kind.BOOLEAN)
# Fields that can be aggregated by terms (counts per value).
TERMS_FIELDS: Final = frozenset(name for name, kind in FIELDS.items() if kind in (Kind.KEYWORD, Kind.BOOLEAN))
# Booleans aggregate as 0/1 in stats (e.g. an interruption rate).
STATS_FIELDS: Final = frozenset(name for name, kind in FIELDS.items() if kind != Kind.KEYWORD)


def resolve(name: str) -> str | None:
    """The canonical field for a name or alias; ``custom.<name>`` stays as it is; None if unknown."""
    if name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX):
        return name
    name = ALIASES.get(name, name)
    return name if name in FIELDS else None


def kind_of(field: str) -> Kind:
    return Kind.KEYWORD if field.startswith(CUSTOM_PREFIX) else FIELDS[field]


def suggest(name: str) -> str:
    """' (did you mean X?)' for a misspelt field, or ''."""
    import difflib

    close = difflib.get_close_matches(name, [*FIELDS, *ALIASES], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
