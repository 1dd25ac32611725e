"""G.711 mu-law: the lookup table against the ITU-T definition, for all 256 codes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.g711 import ULAW_TO_INT16, decode_ulaw, encode_ulaw

# ITU-T G.711 Table 2a: mu-law segments. Segment s (0..7) spans 16 steps of 2**(s+1) on the 13-bit+sign
# scale whose first decision value is 0 for s=0; decoded values are the midpoints, scaled by 4 to 16 bits.
SEGMENT_START = [0, 31, 95, 223, 479, 991, 2015, 4063]  # first 14-bit magnitude of each segment


def reference_decode(code: int) -> int:
    """Decode one byte from the standard's segment description (independent of the table's bit tricks)."""
    inverted = code ^ 0xFF  # G.711 transmits mu-law bytes with all bits inverted
    negative = bool(inverted & 0x80)
    segment = (inverted >> 4) & 0x07
    step = inverted & 0x0F
    if segment == 0:
        magnitude = 2 * step  # 0, 2, ..., 30 (14-bit scale): segment 0 has steps of 2, starting at 0
    else:
        size = 2 ** (segment + 1)
        magnitude = SEGMENT_START[segment] + size * step + size // 2
    value = magnitude * 4  # 14-bit scale to 16-bit
    return -value if negative else value


def test_table_matches_the_g711_definition_for_all_256_codes() -> None:
    ours = [int(v) for v in ULAW_TO_INT16]
    reference = [reference_decode(c) for c in range(256)]
    assert ours == reference


def test_table_matches_cpythons_audioop_where_it_still_exists() -> None:
    """A second, independent implementation (C, removed in Python 3.13)."""
    import sys
    import warnings

    if sys.version_info >= (3, 13):
        pytest.skip("audioop was removed in Python 3.13; the definition test above still holds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    theirs = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2")
    assert theirs.tolist() == ULAW_TO_INT16.tolist()


def test_known_codes() -> None:
    assert ULAW_TO_INT16[0xFF] == 0 and ULAW_TO_INT16[0x7F] == 0  # the two zeros
    assert ULAW_TO_INT16[0x00] == -32124 and ULAW_TO_INT16[0x80] == 32124  # full scale
    assert ULAW_TO_INT16.dtype == np.int16 and len(ULAW_TO_INT16) == 256


def test_decode_bytes() -> None:
    assert decode_ulaw(bytes([0xFF, 0x80, 0x00])).tolist() == [0, 32124, -32124]


def test_encode_inverts_decode_for_every_code() -> None:
    codes = np.arange(256, dtype=np.uint8)
    again = np.frombuffer(encode_ulaw(ULAW_TO_INT16[codes]), dtype=np.uint8)
    expected = codes.copy()
    expected[0x7F] = 0xFF  # -0 re-encodes as +0
    assert again.tolist() == expected.tolist()


def test_encode_is_monotonic_and_clips() -> None:
    ramp = np.arange(-32768, 32768, 7, dtype=np.int32).astype(np.int16)
    decoded = decode_ulaw(encode_ulaw(ramp)).astype(np.int32)
    assert np.all(np.diff(decoded) >= 0)
    assert np.max(np.abs(decoded - ramp.astype(np.int32))) <= 1024  # the largest half-step, top segment
