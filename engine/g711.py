"""G.711 mu-law decoding by lookup table.

Twilio Media Streams carry raw G.711 mu-law bytes (8 kHz, mono). torchaudio's ``mu_law_decoding`` is
the continuous companding curve, not these bytes, and the stdlib ``audioop`` is gone in Python 3.13,
so the 256-entry table is built here from the ITU-T G.711 definition.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
SAMPLES_PER_MS = SAMPLE_RATE // 1000
_BIAS = 0x84  # 132: the bias G.711 adds before segment encoding


def _decode_code(code: int) -> int:
    """Decode one mu-law byte to a 16-bit linear sample (G.711, as in the reference C code)."""
    u = ~code & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    return _BIAS - magnitude if u & 0x80 else magnitude - _BIAS


ULAW_TO_INT16: npt.NDArray[np.int16] = np.array([_decode_code(c) for c in range(256)], dtype=np.int16)
ULAW_TO_INT16.setflags(write=False)


def decode_ulaw(payload: bytes | npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to int16 PCM, one sample per byte (shape ``(len(payload),)``)."""
    codes = np.frombuffer(payload, dtype=np.uint8) if isinstance(payload, bytes) else payload
    return ULAW_TO_INT16[codes]


def to_float(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """int16 PCM to float32 in [-1, 1)."""
    return pcm.astype(np.float32) / 32768.0


_CLIP = 32635


def encode_ulaw(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM to G.711 mu-law bytes (the inverse of ``decode_ulaw`` up to quantisation)."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes())
