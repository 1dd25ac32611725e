"""RingBuffer: audio placed by sample index; gaps, late, duplicate, out-of-order; bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ring import RingBuffer


def frame(value: int, n: int = 160) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_in_order_writes_read_back() -> None:
    ring = RingBuffer(1600)
    for k in range(5):
        ring.write(k * 160, frame(k + 1))
    assert ring.head == 800 and ring.received == 800 and ring.missing == 0
    assert ring.read(0, 800).tolist() == np.repeat(np.arange(1, 6), 160).tolist()


def test_gap_reads_as_silence_until_a_late_frame_fills_it() -> None:
    ring = RingBuffer(1600)
    ring.write(0, frame(1))
    ring.write(320, frame(3))  # frame 2 missing
    assert ring.missing == 160
    assert ring.read(160, 320).tolist() == [0] * 160
    assert ring.arrived_count(160, 320) == 0 and ring.arrived_count(0, 480) == 320
    result = ring.write(160, frame(2))  # arrives late, still inside the window
    assert result.written == 160 and ring.missing == 0
    assert ring.read(0, 480).tolist() == [1] * 160 + [2] * 160 + [3] * 160


def test_duplicates_never_overwrite_the_first_write() -> None:
    ring = RingBuffer(1600)
    ring.write(0, frame(1))
    result = ring.write(0, frame(9))
    assert (result.written, result.duplicate) == (0, 160)
    partial = ring.write(80, frame(7))  # half old, half new
    assert (partial.written, partial.duplicate) == (80, 80)
    assert ring.read(0, 240).tolist() == [1] * 160 + [7] * 80
    assert ring.duplicate == 240


def test_writes_older_than_the_window_are_dropped_as_late() -> None:
    ring = RingBuffer(800)
    ring.write(1600, frame(5))  # head 1760, oldest 960
    result = ring.write(0, frame(1))
    assert (result.written, result.late) == (0, 160) and ring.late == 160
    straddling = ring.write(880, frame(2))  # 880..1040: 80 too old, 80 kept
    assert (straddling.written, straddling.late) == (80, 80)
    assert ring.read(960, 1040).tolist() == [2] * 80
    with pytest.raises(IndexError):
        ring.read(0, 160)


def test_wraparound_keeps_the_last_capacity_samples() -> None:
    ring = RingBuffer(500)  # not a multiple of the frame size on purpose
    for k in range(20):
        ring.write(k * 160, frame(k))
    assert ring.head == 3200 and ring.oldest == 2700
    expected = np.repeat(np.arange(20), 160)[2700:3200]
    assert ring.read(2700, 3200).tolist() == expected.tolist()


def test_a_jump_far_ahead_clears_stale_audio() -> None:
    ring = RingBuffer(480)
    ring.write(0, frame(1, 480))
    ring.write(10_000, frame(2))
    assert ring.read(ring.oldest, ring.head).tolist() == [0] * 320 + [2] * 160


def test_a_write_longer_than_the_buffer_keeps_its_tail() -> None:
    ring = RingBuffer(100)
    result = ring.write(0, np.arange(250, dtype=np.int16))
    assert (result.written, result.late) == (100, 150)
    assert ring.read(150, 250).tolist() == list(range(150, 250))


def test_memory_is_fixed() -> None:
    ring = RingBuffer(8000)
    before = ring._pcm.nbytes + ring._arrived.nbytes
    for k in range(2000):
        ring.write(k * 160, frame(k % 100))
    assert ring._pcm.nbytes + ring._arrived.nbytes == before == 8000 * 3


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(40)), st.sets(st.integers(0, 39), max_size=8), st.lists(st.integers(0, 39), max_size=8))
def test_any_arrival_order_gives_the_same_audio(order: list[int], dropped: set[int], dupes: list[int]) -> None:
    """Out of order, with drops and duplicates: each frame lands in its slot; dropped ones are silence."""
    ring = RingBuffer(40 * 160)
    for k in [*order, *dupes]:
        if k not in dropped:
            ring.write(k * 160, frame(k + 1))
    head = max((k for k in range(40) if k not in dropped), default=-1) + 1
    expected = [0 if k in dropped else k + 1 for k in range(head) for _ in range(160)]
    assert ring.head == head * 160
    assert ring.read(0, ring.head).tolist() == expected
    assert ring.missing == sum(160 for k in dropped if k < head)
