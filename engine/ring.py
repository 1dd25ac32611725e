"""A bounded per-track audio buffer addressed by absolute sample index.

Audio is placed where Twilio's ``media.timestamp`` says it belongs, never by arrival order:
- a write past the head advances the head; the skipped span reads as silence (0) until, if ever, a
  late frame fills it;
- a write inside the retained window fills only samples not written before (the first write of a
  sample wins, so duplicates and overlaps are deterministic and never corrupt audio);
- a write older than the window is dropped and counted as late.
Memory is fixed at construction: ``capacity`` int16 samples plus one byte of "arrived" flag each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int  # samples newly stored
    duplicate: int  # samples that had arrived before (ignored)
    late: int  # samples older than the window (dropped)


class RingBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._pcm = np.zeros(capacity, dtype=np.int16)
        self._arrived = np.zeros(capacity, dtype=np.bool_)
        self.head = 0  # one past the highest sample index covered (written or silence-filled)
        self.received = 0  # distinct samples that arrived, over the whole stream
        self.duplicate = 0
        self.late = 0

    @property
    def oldest(self) -> int:
        """Smallest sample index still held."""
        return max(0, self.head - self.capacity)

    @property
    def missing(self) -> int:
        """Samples up to the head that never arrived (read as silence)."""
        return self.head - self.received

    def write(self, start: int, samples: npt.NDArray[np.int16]) -> WriteResult:
        """Store ``samples`` (int16, shape ``(n,)``) at absolute sample index ``start`` (>= 0)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        end = start + len(samples)
        lo = start % self.capacity
        if start == self.head and lo + len(samples) <= self.capacity:
            # The common case, in-order audio: a plain copy (the slots held expired audio).
            self._pcm[lo : lo + len(samples)] = samples
            self._arrived[lo : lo + len(samples)] = True
            self.head = end
            self.received += len(samples)
            return WriteResult(len(samples), 0, 0)
        if end > self.head:
            self._clear(max(self.head, end - self.capacity), end)
            self.head = end
        late = 0
        if start < self.oldest:  # older than the window (or longer than the whole buffer)
            late = min(end, self.oldest) - start
            if late == len(samples):
                self.late += late
                return WriteResult(0, 0, late)
            samples = samples[late:]
            start += late
        written = 0
        for lo, hi, src in self._spans(start, end):
            fresh = ~self._arrived[lo:hi]
            count = int(fresh.sum())
            if count == hi - lo:
                self._pcm[lo:hi] = samples[src : src + hi - lo]
            elif count:
                np.copyto(self._pcm[lo:hi], samples[src : src + hi - lo], where=fresh)
            self._arrived[lo:hi] = True
            written += count
        duplicate = len(samples) - written
        self.received += written
        self.duplicate += duplicate
        self.late += late
        return WriteResult(written, duplicate, late)

    def read(self, start: int, end: int) -> npt.NDArray[np.int16]:
        """Samples ``[start, end)`` as a new array; never-arrived samples are 0 (silence)."""
        if start < self.oldest or end > self.head or start > end:
            raise IndexError(f"[{start}, {end}) is outside the held window [{self.oldest}, {self.head})")
        lo = start % self.capacity
        if lo + end - start <= self.capacity:  # the common case: one slice of the ring
            return self._pcm[lo : lo + end - start].copy()
        out = np.empty(end - start, dtype=np.int16)
        for lo, hi, dst in self._spans(start, end):
            out[dst : dst + hi - lo] = self._pcm[lo:hi]
        return out

    def arrived_count(self, start: int, end: int) -> int:
        """How many samples of ``[start, end)`` actually arrived."""
        if start < self.oldest or end > self.head or start > end:
            raise IndexError(f"[{start}, {end}) is outside the held window [{self.oldest}, {self.head})")
        return sum(int(np.count_nonzero(self._arrived[lo:hi])) for lo, hi, _ in self._spans(start, end))

    def _clear(self, start: int, end: int) -> None:
        for lo, hi, _ in self._spans(start, end):
            self._pcm[lo:hi] = 0
            self._arrived[lo:hi] = False

    def _spans(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """Split absolute ``[start, end)`` (at most ``capacity`` long) into contiguous ring slices:
        ``(ring_lo, ring_hi, offset_from_start)``."""
        offset = 0
        while start < end:
            lo = start % self.capacity
            hi = min(self.capacity, lo + (end - start))
            yield lo, hi, offset
            offset += hi - lo
            start += hi - lo
