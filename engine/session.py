"""Per-WebSocket stream state: which frames fit where in a Media Stream's life.

``StreamSession.accept`` checks a decoded frame against the stream so far (``connected`` then one
``start``, then ``media``/``dtmf``/``mark``, then ``stop``) and refuses, with a reason, frames that
cannot be placed: media before ``start``, a second ``start``, a chunk already seen, a frame for
another stream, anything after ``stop``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from engine.frames import Connected, Dtmf, Frame, Mark, Media, Reason, Rejected, Start, Stop

# How many recent chunk numbers per track are remembered for duplicate detection. Older duplicates
# still cannot corrupt audio: the ring buffer keeps the first write of every sample.
DUPLICATE_WINDOW = 4096


class Phase(Enum):
    AWAITING_START = "awaiting_start"
    LIVE = "live"
    STOPPED = "stopped"


@dataclass
class _TrackChunks:
    highest: int = 0
    seen: set[int] = field(default_factory=set)

    def add(self, chunk: int) -> bool:
        """Remember ``chunk``; False if it was already seen."""
        if chunk in self.seen:
            return False
        self.seen.add(chunk)
        if chunk > self.highest:
            self.highest = chunk
        if len(self.seen) > 2 * DUPLICATE_WINDOW:  # keep the most recent window (amortised O(1))
            self.seen = set(sorted(self.seen)[-DUPLICATE_WINDOW:])
        return True


@dataclass
class StreamSession:
    phase: Phase = Phase.AWAITING_START
    start: Start | None = None
    stop: Stop | None = None
    _chunks: dict[str, _TrackChunks] = field(default_factory=dict)

    def refuse_media(self, stream_sid: str, track: str, chunk: int) -> Rejected | None:
        """``accept`` for a media frame of a live stream, from the fields it checks: None if it fits (its chunk
        is then remembered), else why not. The hot path: one call per 20 ms of each track."""
        start = self.start
        if start is None or self.phase is not Phase.LIVE:
            refused = self.accept(Media(None, stream_sid, track, chunk, 0, b"\0"))
            return refused if isinstance(refused, Rejected) else None
        if stream_sid and stream_sid != start.stream_sid:
            return Rejected(Reason.STREAM_MISMATCH, f"streamSid {stream_sid[:40]!r} is not this stream's")
        chunks = self._chunks.get(track) or self._chunks.setdefault(track, _TrackChunks())
        if not chunks.add(chunk):
            return Rejected(Reason.DUPLICATE_CHUNK, f"{track} chunk {chunk} seen before")
        return None

    def accept(self, frame: Frame) -> Frame | Rejected:
        """The frame if it fits the stream's state, else the reason it does not."""
        if type(frame) is Media and self.start is not None and self.phase is Phase.LIVE:  # ~all of them
            return self.refuse_media(frame.stream_sid, frame.track, frame.chunk) or frame
        if isinstance(frame, Connected):
            return frame
        if self.phase is Phase.STOPPED:
            return Rejected(Reason.AFTER_STOP, f"{type(frame).__name__.lower()} after stop")
        if isinstance(frame, Start):
            if self.phase is not Phase.AWAITING_START:
                return Rejected(Reason.DUPLICATE_START, "a second start on one stream")
            self.start = frame
            self.phase = Phase.LIVE
            return frame
        if self.start is None:
            return Rejected(Reason.MEDIA_BEFORE_START, f"{type(frame).__name__.lower()} before start")
        if isinstance(frame, Media | Dtmf | Mark | Stop) and frame.stream_sid not in (
            "",
            self.start.stream_sid,
        ):
            return Rejected(Reason.STREAM_MISMATCH, f"streamSid {frame.stream_sid[:40]!r} is not this stream's")
        if isinstance(frame, Media):
            chunks = self._chunks.setdefault(frame.track, _TrackChunks())
            if not chunks.add(frame.chunk):
                return Rejected(Reason.DUPLICATE_CHUNK, f"{frame.track} chunk {frame.chunk} seen before")
            return frame
        if isinstance(frame, Stop):
            self.phase = Phase.STOPPED
            self.stop = frame
        return frame
