"""Where each media payload goes in a track's recording, and the recording read back as WAV.

A track's recording is the G.711 mu-law bytes as received, one byte per sample, at the sample index
Twilio's ``media.timestamp`` gives it (``timestamp_ms * 8``), the same index the ring buffers use, so a
recording and the turns' times share one clock. A span no frame covered is silence: mu-law 0xFF (a
sparse file would read 0x00, which is mu-law's loudest negative sample). As in the ring buffers, the
first write of a sample wins: a duplicate changes nothing, and a late frame fills only what is still a
gap.

``TrackLayout`` turns payloads into ordered writes and keeps only the length and the open gaps. For
playback, ``wav_header`` and ``pcm_frames`` build a WAV's parts, and ``parse_range`` / ``sample_span`` map an
HTTP byte range onto the samples it covers, so a WAV is never built whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.g711 import SAMPLE_RATE, decode_ulaw

SILENCE = 0xFF  # mu-law's zero
MAX_GAPS = 4096  # gaps still fillable by late frames, per track; older ones stay silence
WAV_HEADER_BYTES = 44


Write = tuple[int, "bytearray | int"]  # (offset, bytes to write there) or (offset, that many bytes of silence)


class TrackLayout:
    """One track's recording layout: payloads in, writes out (``take``), first write of a sample wins.

    Writes come out in the order they must be applied: the tail grows by appends, a gap becomes a run of
    silence (a count, never bytes in memory: a timestamp that jumps an hour costs no memory), and a late
    frame patches the part of a gap it fills."""

    def __init__(self, length: int = 0) -> None:
        self.length = length  # samples covered so far (written or silence-filled)
        self.received = 0  # samples that came in frames (each counted once)
        self.late_filled = 0  # of those, samples that filled a gap after later audio was placed
        self._gaps: list[list[int]] = []  # [lo, hi) spans never written, oldest first
        self._pending: list[Write] = []

    @property
    def gap_samples(self) -> int:
        return sum(hi - lo for lo, hi in self._gaps)

    def place(self, start: int, payload: bytes) -> None:
        """Put ``payload`` (mu-law, one byte per sample) at sample index ``start`` (>= 0)."""
        end = start + len(payload)
        if start >= self.length:  # in order (or after a gap): the common case
            pending = self._pending
            if start > self.length:
                pending.append((self.length, start - self.length))
                self._gaps.append([self.length, start])
                if len(self._gaps) > MAX_GAPS:
                    del self._gaps[0]
            last = pending[-1] if pending else None
            if last is not None and isinstance(last[1], bytearray) and last[0] + len(last[1]) == start:
                last[1].extend(payload)
            else:
                pending.append((start, bytearray(payload)))
            self.length = end
            self.received += len(payload)
            return
        if end > self.length:  # straddles the tail: the part past it is plain new audio
            cut = self.length - start
            self.place(self.length, payload[cut:])
            payload, end = payload[:cut], start + cut
        self._fill(start, end, payload)

    def _fill(self, start: int, end: int, payload: bytes) -> None:
        """Write the parts of ``[start, end)`` that are still gaps; the rest arrived before (duplicates)."""
        kept: list[list[int]] = []
        for lo, hi in self._gaps:
            a, b = max(lo, start), min(hi, end)
            if a >= b:
                kept.append([lo, hi])
                continue
            self._pending.append((a, bytearray(payload[a - start : b - start])))
            self.received += b - a
            self.late_filled += b - a
            if lo < a:
                kept.append([lo, a])
            if b < hi:
                kept.append([b, hi])
        self._gaps = kept

    def take(self) -> list[Write]:
        """The writes since the last ``take``, in order."""
        writes, self._pending = self._pending, []
        return writes

    def restore(self, writes: list[Write]) -> None:
        """Give back writes taken but not applied (the disk refused them): they go first again."""
        self._pending = writes + self._pending


# --- WAV for playback -----------------------------------------------------------------------------------------------


def wav_header(*, frames: int, channels: int, rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit PCM: ``frames`` sample frames of ``channels`` channels."""
    data = frames * channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def pcm_frames(tracks: list[bytes | None], frames: int) -> npt.NDArray[np.int16]:
    """``frames`` sample frames of PCM16 from mu-law ``tracks`` (interleaved when several); a track shorter
    than ``frames`` (or None: never recorded) is padded with silence."""
    out = np.zeros((frames, len(tracks)), dtype=np.int16)
    for channel, data in enumerate(tracks):
        if data:
            n = min(frames, len(data))
            out[:n, channel] = decode_ulaw(data[:n])
    return out


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int  # first byte
    end: int  # one past the last byte


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range of an HTTP ``Range: bytes=...`` header within ``size`` bytes; None without a header.
    Raises ValueError for a range that cannot be served (the caller answers 416)."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise ValueError("only one range of bytes is served")
    first, sep, last = spec.strip().partition("-")
    if not sep:
        raise ValueError(f"bad range {header!r}")
    try:
        if first == "":  # the last N bytes
            n = int(last)
            if n <= 0:
                raise ValueError(f"bad range {header!r}")
            return ByteRange(max(0, size - n), size)
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        raise ValueError(f"bad range {header!r}") from None
    if start < 0 or start >= size or end <= start:
        raise ValueError(f"range {header!r} is outside the {size} bytes")
    return ByteRange(start, end)


def sample_span(byte_range: ByteRange, channels: int) -> tuple[int, int]:
    """The sample frames ``[lo, hi)`` whose PCM bytes a range of a WAV's bytes touches (header excluded)."""
    frame_bytes = channels * 2
    lo = max(0, byte_range.start - WAV_HEADER_BYTES) // frame_bytes
    hi = -(-max(0, byte_range.end - WAV_HEADER_BYTES) // frame_bytes)
    return lo, max(lo, hi)
