"""G.711 µ-law <-> signed 16-bit PCM with numpy lookup tables.

Twilio Media Streams and Genesys AudioHook both carry 8 kHz µ-law. The standard library's
audioop is gone in Python 3.13, so decoding is one table lookup per byte (256 entries) and
encoding one lookup per 16-bit sample (65536 entries), both built once at import.
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84  # 132: added before the segment search, as G.711 specifies
_CLIP = 32635


def _build_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    sample = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(sample < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(sample), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7  # segment 0..7: bit position above 2**7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


DECODE_TABLE = _build_decode_table()
_ENCODE_TABLE = _build_encode_table()


def mulaw_to_pcm16(data: bytes) -> np.ndarray:
    """Decode µ-law bytes to int16 samples (one sample per byte)."""
    return DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_to_pcm16_bytes(data: bytes) -> bytes:
    """Decode µ-law bytes straight to the boundary's signed 16-bit little-endian PCM."""
    return mulaw_to_pcm16(data).astype("<i2", copy=False).tobytes()


def pcm16_to_mulaw(samples: np.ndarray) -> bytes:
    """Encode int16 samples to µ-law bytes (for clients, tests and any audio sent back)."""
    index = np.asarray(samples, dtype=np.int16).astype(np.int32) + 32768
    return _ENCODE_TABLE[index].tobytes()
