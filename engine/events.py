"""Events of one call, as the engine emits them: typed, on the stream clock, no wall time.

``CallEvent.type`` is one of the event types of ARCHITECTURE.md; ``data`` is its JSON payload (plain
values only). The edge that publishes an event (the call host) stamps it with the call SID, an id and
a wall-clock ``at`` via ``to_json``; the engine itself never reads the clock, so every analysis is
replayable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

CALL_STARTED: Final = "call.started"
CALL_STATUS: Final = "call.status"
TURN_STARTED: Final = "turn.started"
TURN_ENDED: Final = "turn.ended"
TURN_TRANSCRIBED: Final = "turn.transcribed"
INTERRUPTION: Final = "interruption"
SILENCE: Final = "silence"
CALL_ENDED: Final = "call.ended"
FRUSTRATION_ALERT: Final = "frustration.alert"


def iso_utc(epoch_s: float) -> str:
    """``epoch_s`` as the ``*_at`` fields write it: ISO 8601 UTC, milliseconds, ``Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class CallEvent:
    type: str
    seq: int  # per stream of a call, from 0, in emission order
    at_ms: int  # stream time the event was decided at (ms since the stream started)
    data: dict[str, Any] = field(hash=False)
    # A turn.ended's audio for the transcriber, when the analysis keeps clips: (stream ms of its first sample,
    # int16 8 kHz samples). Never in the JSON.
    clip: tuple[int, npt.NDArray[np.int16]] | None = field(default=None, hash=False, compare=False, repr=False)

    def event_id(self, call_sid: str, stream_sid: str) -> str:
        """Unique within a tenant: a call's next stream numbers its events from 0 again; sorts by emission
        order within one stream."""
        return f"{call_sid}:{stream_sid}:{self.seq:08d}"

    def to_json(self, call_sid: str, stream_sid: str, at: str) -> dict[str, Any]:
        """The public form: ``type``, ``id``, ``call_sid``, ``stream_sid``, ``at`` (ISO 8601 UTC), ``at_ms``,
        then the payload."""
        return {
            "type": self.type,
            "id": self.event_id(call_sid, stream_sid),
            "call_sid": call_sid,
            "stream_sid": stream_sid,
            "at": at,
            "at_ms": self.at_ms,
            **self.data,
        }


def seq_of(event: dict[str, Any]) -> int | None:
    """The sequence in a call event's id (exactly ``{call_sid}:{stream_sid}:{seq:08d}``); None for other
    events (``call.status``: ``{call_sid}:status-...``)."""
    head, _, tail = str(event.get("id", "")).rpartition(":")
    if len(tail) != 8 or not tail.isdigit() or head != f"{event.get('call_sid')}:{event.get('stream_sid')}":
        return None
    return int(tail)
