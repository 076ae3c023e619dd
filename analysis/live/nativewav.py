"""Legs pjmedia records itself (connector.media_path = "native"): reading a WAV still being written.

pjmedia's WAV writer writes its header with zero sizes when it opens the file and the real sizes
only when it closes it, so while a call runs (and after a kill -9) the header's data size says
nothing: the data is read by file size from the data chunk's start. The writer records at the
conference bridge's rate (16 kHz); `Decimator` brings a leg back to its own rate (8 kHz for
G.711) with a stateful low-pass, so a leg read in pieces as it grows (connector/nativeleg.py)
and the same file read whole by crash recovery (analysis/live/recovery.py) give the same samples.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from scipy.signal import firwin, lfilter

TAPS = 63  # low-pass taps at the bridge's rate: flat to ~3.4 kHz of an 8 kHz leg, 60 dB down past 4 kHz


def wav_layout(head: bytes) -> tuple[int, int] | None:
    """(data start offset, sample rate) of a 16-bit mono PCM WAV from its first bytes, whatever
    its header's sizes say; None while the header is not all there or is not one of pjmedia's."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, rate = 12, None
    while pos + 8 <= len(head):
        tag, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if tag == b"data":
            return (pos + 8, rate) if rate else None
        if tag == b"fmt ":
            if pos + 24 > len(head):
                return None
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, pos + 8)
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"not 16-bit mono PCM (format {fmt}, {channels} channels, {bits} bits)")
        pos += 8 + size + (size & 1)
    return None


def closed_length(head: bytes, data_start: int) -> int:
    """The data size the header declares: 0 while the writer has the file open (or was killed)."""
    return struct.unpack_from("<I", head, data_start - 4)[0] if len(head) >= data_start else 0


class Decimator:
    """Bridge-rate samples to the leg's rate, piece by piece (an integer ratio; 1 passes through)."""

    def __init__(self, rate_in: int, rate_out: int):
        if rate_in % rate_out:
            raise ValueError(f"cannot take {rate_in} Hz to {rate_out} Hz by an integer ratio")
        self.factor = rate_in // rate_out
        self._n = 0  # input samples seen so far: which of the next ones are kept
        if self.factor > 1:
            self._b = firwin(TAPS, 0.85 * rate_out / 2, fs=rate_in)
            self._zi = np.zeros(TAPS - 1)

    def feed(self, pcm: np.ndarray) -> np.ndarray:
        """int16 samples at rate_in -> int16 samples at rate_out (the filter's state carries over)."""
        if self.factor == 1 or not len(pcm):
            return np.asarray(pcm, dtype=np.int16)
        y, self._zi = lfilter(self._b, 1.0, pcm.astype(np.float64), zi=self._zi)
        first = (-self._n) % self.factor
        self._n += len(pcm)
        return np.clip(np.rint(y[first::self.factor]), -32768, 32767).astype(np.int16)


def read_leg(path: Path, rate: int) -> np.ndarray:
    """A native leg's samples at `rate`, closed or not (a killed writer's file is read by size)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    layout = wav_layout(data[:4096])
    if layout is None:
        return np.zeros(0, np.int16)
    start, native_rate = layout
    body = data[start: start + (len(data) - start) // 2 * 2]
    return Decimator(native_rate, rate).feed(np.frombuffer(body, dtype="<i2"))
