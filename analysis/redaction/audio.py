"""Cut redacted time spans out of a kept WAV: silence, or a tone so a listener hears the cut.

The recording is rewritten block by block (bounded memory for hour-long calls) into an owner-only
temp file beside it and renamed over the target, so a crash leaves either the old file or the
redacted one, never half of each. Header and trailing chunks are copied as they were; samples are
changed in place in their own encoding: 16/32-bit PCM, 32-bit float, and G.711 mu-law and A-law
(telephony recordings are often kept as 8 kHz mu-law).
"""

from __future__ import annotations

import math
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from emotivoice.analysis.redaction.stage import RedactedSpan, merge_spans

BLOCK_FRAMES = 1 << 16  # frames rewritten at a time (~4 s of 16 kHz audio)
PCM, FLOAT, ALAW, MULAW, EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
MULAW_SILENCE, ALAW_SILENCE = 0xFF, 0xD5  # the codes that decode to zero


class WavError(ValueError):
    """Not a WAV this module can rewrite (another container or an unsupported sample format)."""


@dataclass(frozen=True)
class WavLayout:
    fmt: int
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_bytes: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


def read_layout(path: Path) -> WavLayout:
    """Parse the RIFF chunks up to the data chunk."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavError(f"{path.name}: not a RIFF/WAVE file")
        fmt = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise WavError(f"{path.name}: no data chunk")
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = f.read(clen + (clen & 1))
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]
                fmt = (tag, channels, rate, bits)
            elif cid == b"data":
                if fmt is None:
                    raise WavError(f"{path.name}: data before fmt")
                offset = f.tell()
                data_bytes = min(clen, size - offset)  # a streamed WAV may say 0xFFFFFFFF
                layout = WavLayout(fmt[0], fmt[1], fmt[2], fmt[3], offset, data_bytes)
                _check(layout, path)
                return layout
            else:
                f.seek(clen + (clen & 1), 1)


def _check(layout: WavLayout, path: Path) -> None:
    ok = {(PCM, 16), (PCM, 32), (FLOAT, 32), (MULAW, 8), (ALAW, 8)}
    if (layout.fmt, layout.bits) not in ok or layout.channels < 1:
        raise WavError(f"{path.name}: unsupported WAV sample format {layout.fmt}/{layout.bits}-bit")


def _dtype(layout: WavLayout):
    return {(PCM, 16): "<i2", (PCM, 32): "<i4", (FLOAT, 32): "<f4"}.get((layout.fmt, layout.bits), "u1")


def _silence(layout: WavLayout) -> int:
    return {MULAW: MULAW_SILENCE, ALAW: ALAW_SILENCE}.get(layout.fmt, 0)


def _tone(layout: WavLayout, first: int, count: int, hz: float, dbfs: float) -> np.ndarray:
    """`count` frames of a sine from absolute frame `first` (phase-continuous across blocks),
    encoded like the file's samples."""
    t = (np.arange(first, first + count, dtype=np.float64)) / layout.rate
    x = np.sin(2 * np.pi * hz * t) * 10 ** (dbfs / 20)
    if layout.fmt == FLOAT:
        return x.astype("<f4")
    if layout.bits == 32:
        return (x * 2**31).astype("<i4")
    pcm = (x * 32767).astype(np.int16)
    if layout.fmt == MULAW:
        return mulaw_encode(pcm)
    if layout.fmt == ALAW:
        return alaw_encode(pcm)
    return pcm.astype("<i2")


def mulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """G.711 mu-law codes of 16-bit samples."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """G.711 A-law codes of 16-bit samples."""
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag)
    low = np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg, 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | low)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def redact_wav(src: Path, spans: Sequence[RedactedSpan], dst: Path | None = None, fill: str = "silence",
               all_channels: bool = True, tone_hz: float = 1000.0, tone_dbfs: float = -20.0) -> float:
    """Write `src` with `spans` silenced (or toned) to `dst` (default: over `src`), owner-only and
    atomically; returns the seconds of audio cut. A span's leg is its channel unless
    `all_channels` (or the leg is not a channel of this file, as with a mono mix)."""
    from emotivoice.storage.files import open_private

    if fill not in ("silence", "tone"):
        raise ValueError(f"fill must be 'silence' or 'tone', not {fill!r}")
    src = Path(src)
    dst = Path(dst) if dst else src
    layout = read_layout(src)
    frames = layout.data_bytes // layout.frame_bytes
    cuts = [(max(0, math.floor(s.start * layout.rate)), min(frames, math.ceil(s.end * layout.rate)),
             None if all_channels or not 0 <= s.leg < layout.channels else s.leg)
            for s in merge_spans(spans)]
    cuts = [c for c in cuts if c[1] > c[0]]
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(src, "rb") as fin, open_private(tmp, "wb") as fout:
            fout.write(fin.read(layout.data_offset))
            for first in range(0, frames, BLOCK_FRAMES):
                count = min(BLOCK_FRAMES, frames - first)
                block = np.frombuffer(fin.read(count * layout.frame_bytes), dtype=_dtype(layout))
                block = block.reshape(count, layout.channels).copy()
                _cut_block(block, first, cuts, layout, fill, tone_hz, tone_dbfs)
                fout.write(block.tobytes())
            fout.write(fin.read(layout.data_bytes - frames * layout.frame_bytes))  # a partial last frame
            while chunk := fin.read(1 << 20):  # chunks after the data (LIST, id3)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = 0.0
    for a, b, _ in cuts:
        seconds += (b - a) / layout.rate
    return seconds


def _cut_block(block: np.ndarray, first: int, cuts, layout: WavLayout, fill: str, hz: float, dbfs: float) -> None:
    last = first + len(block)
    for a, b, channel in cuts:
        lo, hi = max(a, first), min(b, last)
        if lo >= hi:
            continue
        cols = slice(None) if channel is None else slice(channel, channel + 1)
        if fill == "tone":
            block[lo - first:hi - first, cols] = _tone(layout, lo, hi - lo, hz, dbfs)[:, None]
        else:
            block[lo - first:hi - first, cols] = _silence(layout)
