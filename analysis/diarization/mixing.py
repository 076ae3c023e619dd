"""Mono test conversations with known speaker turns, built from single-speaker clips.

Used by the diarization tests and benchmark: clips are trimmed to their speech, levelled,
laid out as turns with pauses and occasional cross-talk, and the exact reference is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Conversation:
    audio: np.ndarray  # (samples,) float32, 16 kHz mono
    reference: list[tuple[float, float, str]]  # (start s, end s, speaker)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def speech_regions(clip: np.ndarray, frame: int = 320, bridge_s: float = 0.5,
                   min_s: float = 0.1) -> list[tuple[float, float]]:
    """(start, end) seconds where a clean single-speaker clip is louder than its room noise.

    The threshold sits 25 dB under the clip's loud frames (and 8 dB over its quiet ones); pauses
    under `bridge_s` are bridged, as a human annotator would keep a phrase as one stretch, and
    blips under `min_s` (clicks) dropped.
    """
    n = len(clip) // frame
    if n == 0:
        return []
    db = 10 * np.log10(np.mean(clip[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = db > max(np.percentile(db, 95) - 25, np.percentile(db, 10) + 8)
    edges = np.diff(np.concatenate([[0], loud.astype(np.int8), [0]]))
    step = frame / SAMPLE_RATE
    regions: list[list[float]] = []
    for a, b in zip(np.flatnonzero(edges == 1) * step, np.flatnonzero(edges == -1) * step):
        if regions and a - regions[-1][1] < bridge_s:
            regions[-1][1] = b
        else:
            regions.append([a, b])
    return [(a, b) for a, b in regions if b - a >= min_s]


def trim_speech(clip: np.ndarray, pad_s: float = 0.05) -> np.ndarray:
    """Cut a clip's leading/trailing room noise so a turn starts and ends with speech."""
    regions = speech_regions(clip, bridge_s=0.3)
    if not regions:
        return clip
    start, end = max(0, int((regions[0][0] - pad_s) * SAMPLE_RATE)), int((regions[-1][1] + pad_s) * SAMPLE_RATE)
    return clip[start:end]


def mix(turns: list[tuple[str, list[np.ndarray]]], rng: np.random.Generator, pause_s: tuple[float, float] = (0.3, 1.5),
        overlap_s: tuple[float, float] = (0.3, 1.0), overlap_prob: float = 0.2, lead_s: float = 0.5,
        level_db: float = -23.0, bridge_s: float = 0.5) -> Conversation:
    """Lay out (speaker, clips) turns one after another; a turn's clips are spoken back to back.

    Each gap is a pause drawn from `pause_s` or, with `overlap_prob`, cross-talk drawn from
    `overlap_s` (at most half the previous turn). Each speaker keeps one level (a random offset
    around `level_db` RMS per clip), and a faint noise floor fills the pauses as on a real line.
    The reference marks where each clip is audibly speech (`speech_regions`), not the whole clip:
    a second of room noise between two sentences is nobody speaking; a speaker's stretches less
    than `bridge_s` apart are one.
    """
    offset = {spk: rng.uniform(-4, 4) for spk in dict.fromkeys(s for s, _ in turns)}
    pieces, reference, cursor, prev = [], [], lead_s, None
    for spk, clips in turns:
        dur = sum(len(c) for c in clips) / SAMPLE_RATE
        if prev is not None:
            cross = rng.random() < overlap_prob
            gap = -min(rng.uniform(*overlap_s), (prev[1] - prev[0]) / 2) if cross else rng.uniform(*pause_s)
            cursor = max(prev[0] + 0.1, cursor + gap)
        prev, at = (cursor, cursor + dur), cursor
        for clip in clips:
            gain = 10 ** ((level_db + offset[spk]) / 20) / max(float(np.sqrt(np.mean(clip ** 2))), 1e-6)
            pieces.append((int(round(at * SAMPLE_RATE)), gain * clip))
            reference += [(round(at + a, 3), round(at + b, 3), spk) for a, b in speech_regions(clip, bridge_s=bridge_s)]
            at += len(clip) / SAMPLE_RATE
        cursor += dur
    end = max(i + len(c) for i, c in pieces) / SAMPLE_RATE + lead_s
    audio = (rng.standard_normal(int(end * SAMPLE_RATE)) * 10 ** (-62 / 20)).astype(np.float32)
    for i, clip in pieces:
        audio[i:i + len(clip)] += clip
    merged: list[list] = []  # a speaker's regions closer than the bridge are one stretch, across clips too
    for start, stop, spk in sorted(reference, key=lambda r: (r[2], r[0])):
        if merged and merged[-1][2] == spk and start - merged[-1][1] < bridge_s:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop, spk])
    return Conversation(np.clip(audio, -1, 1), sorted((a, b, spk) for a, b, spk in merged))


def telephone(audio: np.ndarray) -> np.ndarray:
    """The same audio as heard through an 8 kHz G.711 mu-law line (300 Hz high-pass), back at 16 kHz."""
    narrow = resample_poly(audio.astype(np.float64), 1, 2)
    narrow = sosfilt(butter(4, 300, btype="highpass", fs=8000, output="sos"), narrow)
    x = np.clip(narrow, -1, 1)
    code = np.round(np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255) * 127)  # 8-bit companding
    y = np.sign(code) * np.expm1(np.abs(code) / 127 * np.log1p(255)) / 255
    return resample_poly(y, 2, 1).astype(np.float32)[:len(audio)]
