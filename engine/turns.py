"""Turns per speaker and what happens between them: overlap, interruptions, backchannels, gaps,
response latency and silences. Pure and streaming: one 20 ms frame of speech flags per track in,
events out, on the stream clock (frame k = [20 k, 20 k + 20) ms).

- A turn is one contiguous hold of the floor by one party: speech spans on its track joined across
  pauses shorter than ``hold_ms``; turns shorter than ``min_turn_ms`` are blips and dropped. The
  end-of-turn decision therefore comes ``hold_ms`` after the speech ends (stream time).
- A backchannel is a short turn (<= ``backchannel_max_ms``) made entirely while the other party held
  the floor ("mm-hmm"): flagged, and never an interruption.
- An interruption: a turn that starts while the other party holds the floor, overlaps it by at least
  ``min_overlap_ms`` and is not a backchannel. ``interrupted_other`` is set on the interrupting turn,
  ``interrupted_by_other`` on the interrupted one.
- ``gap_before_ms``: from the end of the latest earlier turn (either party) to this turn's start;
  ``response_latency_ms``: the same gap when that earlier turn was the other party's and this turn
  does not overlap it (a reply), else None.
- A silence: nobody holds the floor for >= ``silence_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.frames import SPEAKER_OF_TRACK, TRACKS
from engine.vad import FRAME, FRAME_MS, CallVad, Hysteresis

OTHER = {"inbound": "outbound", "outbound": "inbound"}


@dataclass
class Turn:
    """A finished turn. Times in ms on the stream clock."""

    turn_id: int
    track: str
    start_ms: int
    end_ms: int
    overlap_ms: int = 0
    backchannel: bool = False
    interrupted_other: bool = False
    interrupted_by_other: bool = False
    gap_before_ms: int | None = None
    response_latency_ms: int | None = None

    @property
    def speaker(self) -> str:
        return SPEAKER_OF_TRACK[self.track]

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Interruption:
    by: str  # track of the party who barged in
    at_ms: int
    overlap_ms: int
    turn_id: int  # the interrupting turn


@dataclass(frozen=True, slots=True)
class Silence:
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


Event = Turn | Interruption | Silence


@dataclass
class TurnTracker:
    hold_ms: int = 500
    min_turn_ms: int = 120
    backchannel_max_ms: int = 1000
    min_overlap_ms: int = 200
    silence_ms: int = 3000
    _floor: dict[str, Hysteresis] = field(init=False, default_factory=dict)
    _turns: dict[str, list[Turn]] = field(init=False, default_factory=dict)  # the last few finished turns, in order
    _next_id: int = field(init=False, default=0)
    _quiet_since_ms: int = field(init=False, default=0)  # end of the latest turn of anyone (or 0)

    def __post_init__(self) -> None:
        for track in TRACKS:
            self._floor[track] = Hysteresis(onset=2, hangover=max(1, self.hold_ms // FRAME_MS))
            self._turns[track] = []

    def open_start_ms(self, track: str) -> int | None:
        """Start of the turn ``track`` is holding now, if any."""
        start = self._floor[track].open_start
        return None if start is None else start * FRAME_MS

    def open_speech_end_ms(self, track: str) -> int | None:
        """End of the last speech of the turn ``track`` is holding now, if any: the turn ends there unless
        the track speaks again within the hold."""
        end = self._floor[track].open_end
        return None if end is None else end * FRAME_MS

    def push(self, speech: dict[str, bool]) -> list[Event]:
        """One frame of VAD flags per track (``{"inbound": bool, "outbound": bool}``)."""
        decided, _ = self.push_block({track: b"\x01" if speech.get(track, False) else b"\x00" for track in TRACKS})
        return decided.get(0, [])

    def push_block(
        self, speech: Mapping[str, bytes | npt.NDArray[np.uint8]]
    ) -> tuple[dict[int, list[Event]], dict[str, list[int]]]:
        """Consecutive frames of VAD flags per track (same length; nonzero: speech) -> the events decided, by
        the frame (index in the block) that decided them, only frames that did; and per track, the first frame
        of the turn it holds after each frame (-1: none). A frame's starts come before its ends, inbound before
        outbound, as one frame at a time would give them."""
        n = len(next(iter(speech.values()))) if speech else 0
        before = {track: self._floor[track].open_start for track in TRACKS}
        rows = {track: self._floor[track].run(speech.get(track, bytes(n))).tolist() for track in TRACKS}
        opens = {track: [row[0] for row in rows[track]] for track in TRACKS}
        starts: dict[str, set[int]] = {track: set() for track in TRACKS}
        ends: dict[str, dict[int, tuple[int, int]]] = {track: {} for track in TRACKS}
        for track in TRACKS:
            was_open = before[track] is not None
            for i, (open_start, closed_start, closed_end) in enumerate(rows[track]):
                if open_start >= 0 and not was_open:
                    starts[track].add(i)
                if closed_start >= 0:
                    ends[track][i] = (closed_start * FRAME_MS, closed_end * FRAME_MS)
                was_open = open_start >= 0
        decided: dict[int, list[Event]] = {}
        for i in sorted(set().union(*starts.values(), *ends.values())):
            events: list[Event] = []
            for track in TRACKS:
                if i in starts[track]:
                    events += self._on_start(opens[track][i] * FRAME_MS, other_open=opens[OTHER[track]][i] >= 0)
            for track in TRACKS:
                if i in ends[track]:
                    other_open = opens[OTHER[track]][i]
                    events += self._on_end(track, *ends[track][i], None if other_open < 0 else other_open * FRAME_MS)
            if events:
                decided[i] = events
        return decided, opens

    def continue_from(self, turn_id: int) -> None:
        """Number the next turn ``turn_id`` (or higher): a call that went on from another host."""
        self._next_id = max(self._next_id, turn_id)

    @property
    def idle(self) -> bool:
        """Nobody holds the floor, not even a turn still inside its hold (``skip`` is allowed)."""
        return not any(h.active for h in self._floor.values())

    def skip(self, frames: int) -> None:
        """Advance the clock by ``frames`` frames without speech at once (a long gap); only while
        ``idle``. Same result as pushing that many silent frames: an idle tracker decides nothing."""
        for h in self._floor.values():
            h.skip(frames)

    def flush(self) -> list[Event]:
        events: list[Event] = []
        for track in TRACKS:
            span = self._floor[track].flush()
            if span is not None:
                events += self._on_end(
                    track, span.start * FRAME_MS, span.end * FRAME_MS, self.open_start_ms(OTHER[track])
                )
        return events

    def _on_start(self, start: int, other_open: bool) -> list[Event]:
        """A turn opened at ``start`` (ms); ``other_open``: the other party holds the floor then."""
        if not other_open and start - self._quiet_since_ms >= self.silence_ms:
            return [Silence(self._quiet_since_ms, start)]
        return []

    def _on_end(self, track: str, start: int, end: int, other_open: int | None) -> list[Event]:
        """``track``'s turn from ``start`` to ``end`` (ms) closed; ``other_open``: when the turn the other party
        holds then started (None: it holds none)."""
        if end - start < self.min_turn_ms:
            return []
        other = OTHER[track]
        other_spans: list[tuple[int, int, Turn | None]] = [(t.start_ms, t.end_ms, t) for t in self._turns[other]]
        if other_open is not None:
            other_spans.append((other_open, end, None))  # the other party still holds the floor
        turn = Turn(self._next_id, track, start, end)
        self._next_id += 1
        turn.overlap_ms = sum(max(0, min(end, e) - max(start, s)) for s, e, _ in other_spans)
        holding = [(s, e) for s, e, _ in other_spans if s < start and e > start]
        turn.backchannel = turn.duration_ms <= self.backchannel_max_ms and any(e >= end for s, e in holding)
        events: list[Event] = []
        if not turn.backchannel and any(min(e, end) - start >= self.min_overlap_ms for s, e in holding):
            turn.interrupted_other = True
            events.append(Interruption(track, start, turn.overlap_ms, turn.turn_id))
        # Interrupted by the other: it started inside this turn, overlapped enough, and was no backchannel
        # (an open turn that outlasts this one took the floor).
        for s, e, t in other_spans:
            if start < s and min(e, end) - s >= self.min_overlap_ms and (t is None or not t.backchannel):
                turn.interrupted_by_other = True
        before = [t for tr in TRACKS for t in self._turns[tr] if t.end_ms <= start and not t.backchannel]
        if before:
            latest = max(before, key=lambda t: t.end_ms)
            turn.gap_before_ms = start - latest.end_ms
            if latest.track == other and not any(s < start < e for s, e in holding):
                turn.response_latency_ms = turn.gap_before_ms
        self._turns[track].append(turn)
        self._turns[track] = self._turns[track][-8:]  # the tracker only looks back a few turns
        self._quiet_since_ms = max(self._quiet_since_ms, end)
        return [turn, *events]


def track_call(inbound: npt.NDArray[np.int16], outbound: npt.NDArray[np.int16], **options: int) -> list[Event]:
    """Offline convenience: two whole tracks (int16, 8 kHz, same clock) in, every event out, in order."""
    vad, tracker = CallVad(), TurnTracker(**options)
    events: list[Event] = []
    for k in range(min(len(inbound), len(outbound)) // FRAME):
        flags = vad.push(inbound[k * FRAME : (k + 1) * FRAME], outbound[k * FRAME : (k + 1) * FRAME])
        events += tracker.push({track: speech for track, (speech, _) in flags.items()})
    return events + tracker.flush()
