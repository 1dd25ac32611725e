"""The pure parts of recording: where payloads land in a track's file, and WAV/Range arithmetic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from api.recorder import apply_writes
from engine.recording import SILENCE, ByteRange, TrackLayout, parse_range, pcm_frames, sample_span, wav_header
from engine.store.audio import recording_key, safe_part


def replay(frames: list[tuple[int, bytes]], path: Path, *, flush_every: int = 3) -> bytes:
    layout = TrackLayout()
    for i, (start, payload) in enumerate(frames):
        layout.place(start, payload)
        if i % flush_every == 0:
            apply_writes(path, layout.take())
    apply_writes(path, layout.take())
    return path.read_bytes()


def reference(frames: list[tuple[int, bytes]]) -> bytes:
    """What the file must hold: first write of each sample wins, never-written samples are silence."""
    end = max(start + len(p) for start, p in frames)
    out = bytearray([SILENCE]) * end
    written = [False] * end
    for start, payload in frames:
        for k, byte in enumerate(payload):
            if not written[start + k]:
                out[start + k] = byte
                written[start + k] = True
    return bytes(out)


def test_in_order_frames_are_appended_and_gaps_are_mu_law_silence(tmp_path: Path) -> None:
    frames = [(0, b"\x01" * 160), (160, b"\x02" * 160), (480, b"\x03" * 160)]  # 160..480 never came
    data = replay(frames, tmp_path / "t.ulaw")
    assert data == b"\x01" * 160 + b"\x02" * 160 + b"\xff" * 160 + b"\x03" * 160


def test_a_late_frame_fills_its_gap_and_a_duplicate_changes_nothing(tmp_path: Path) -> None:
    frames = [(0, b"\x01" * 160), (320, b"\x03" * 160), (160, b"\x02" * 160), (160, b"\x09" * 160), (0, b"\x08" * 320)]
    layout = TrackLayout()
    data = replay(frames, tmp_path / "t.ulaw", flush_every=1)
    assert data == b"\x01" * 160 + b"\x02" * 160 + b"\x03" * 160
    for start, payload in frames:
        layout.place(start, payload)
    assert layout.received == 480 and layout.late_filled == 160 and layout.gap_samples == 0


def test_a_timestamp_jump_costs_no_memory(tmp_path: Path) -> None:
    layout = TrackLayout()
    layout.place(0, b"\x01" * 160)
    layout.place(8000 * 3600, b"\x02" * 160)  # an hour later
    writes = layout.take()
    assert writes[1] == (160, 8000 * 3600 - 160)  # a count of silence, not bytes
    assert sum(len(w[1]) for w in writes if not isinstance(w[1], int)) == 320


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 3), st.integers(0, 255)), min_size=1, max_size=30),
    st.integers(1, 5),
)
def test_any_order_of_frames_gives_first_write_wins(
    tmp_path_factory: pytest.TempPathFactory, spec: list[tuple[int, int, int]], flush_every: int
) -> None:
    frames = [(slot * 10, bytes([value]) * (10 * length)) for slot, length, value in spec]
    path = tmp_path_factory.mktemp("layout") / "t.ulaw"
    assert replay(frames, path, flush_every=flush_every) == reference(frames)


def test_wav_header_and_samples_read_back_with_soundfile() -> None:
    pcm = pcm_frames([b"\x00\x80\xff", b"\x7f"], 3)  # the second track is shorter: padded with silence
    assert pcm.shape == (3, 2) and pcm[1, 1] == 0 and pcm[2, 1] == 0
    data = wav_header(frames=3, channels=2) + pcm.tobytes()
    read, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert rate == 8000 and np.array_equal(read, pcm)


def test_ranges() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 10)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 100)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 100)
    assert parse_range("bytes=50-500", 100) == ByteRange(50, 100)
    for bad in ("bytes=100-", "bytes=5-2", "items=0-1", "bytes=0-1,4-5", "bytes=x-"):
        with pytest.raises(ValueError):
            parse_range(bad, 100)
    assert sample_span(ByteRange(0, 44), 2) == (0, 0)  # the header alone
    assert sample_span(ByteRange(45, 50), 2) == (0, 2)  # bytes 1..5 of the samples: frames 0 and 1 (4 bytes each)


def test_keys_cannot_leave_their_folder() -> None:
    assert safe_part("CA" + "a" * 32) == "CA" + "a" * 32
    assert "/" not in safe_part("../../etc") and safe_part("../../etc").startswith("h-")
    assert recording_key("acme", "CA1", "MZ1", "inbound") == "acme/CA1/MZ1/inbound.ulaw"


def test_writes_the_disk_refused_are_kept_for_the_next_flush(tmp_path: Path) -> None:
    layout = TrackLayout()
    layout.place(0, b"\x01" * 160)
    layout.place(320, b"\x03" * 160)
    taken = layout.take()
    blocked = tmp_path / "t.ulaw"
    blocked.mkdir()  # a folder where the file should be: the write fails
    with pytest.raises(OSError):
        apply_writes(blocked, taken)
    layout.restore(taken)
    layout.place(160, b"\x02" * 160)  # a late frame came meanwhile
    blocked.rmdir()
    apply_writes(blocked, layout.take())
    assert blocked.read_bytes() == b"\x01" * 160 + b"\x02" * 160 + b"\x03" * 160
