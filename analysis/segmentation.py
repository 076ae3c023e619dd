"""Speech segmentation: where each speaker talks, cut into utterances.

silero VAD finds speech; if it cannot load, the seed's energy rule (-40 dBFS frames, pauses
over 500 ms) stands in. Regions are then shaped into utterances: short ones merged with a close
neighbour toward about 10 s, long ones split, so every utterance suits both Whisper and the
emotion head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from analysis.audio import SAMPLE_RATE
from emotivoice.config import SegmentationConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    start: float  # seconds
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@lru_cache(maxsize=1)
def _silero():
    from silero_vad import get_speech_timestamps, load_silero_vad

    return load_silero_vad(), get_speech_timestamps


def silero_regions(samples: np.ndarray, cfg: SegmentationConfig) -> list[Region]:
    import torch

    model, get_speech_timestamps = _silero()
    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), model,
        sampling_rate=SAMPLE_RATE, min_silence_duration_ms=int(cfg.min_silence_s * 1000),
        min_speech_duration_ms=int(cfg.min_speech_s * 1000), speech_pad_ms=int(cfg.speech_pad_s * 1000),
    )
    return [Region(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def energy_regions(samples: np.ndarray, cfg: SegmentationConfig, frame_s: float = 0.03) -> list[Region]:
    """The seed's rule: frames above the dBFS threshold are speech; short pauses are bridged."""
    hop = int(frame_s * SAMPLE_RATE)
    n = len(samples) // hop
    if n == 0:
        return []
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    voiced = db >= cfg.energy_threshold_dbfs
    regions: list[Region] = []
    start = None
    for i, v in enumerate(np.append(voiced, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            regions.append(Region(start * frame_s, i * frame_s))
            start = None
    bridged: list[Region] = []
    for r in regions:
        if bridged and r.start - bridged[-1].end <= cfg.min_silence_s:
            bridged[-1] = Region(bridged[-1].start, r.end)
        else:
            bridged.append(r)
    total = len(samples) / SAMPLE_RATE
    return [Region(max(0.0, r.start - cfg.speech_pad_s), min(total, r.end + cfg.speech_pad_s))
            for r in bridged if r.duration >= cfg.min_speech_s]


def speech_regions(samples: np.ndarray, cfg: SegmentationConfig) -> tuple[list[Region], str]:
    """Speech regions and the name of the method that found them."""
    if cfg.use_silero:
        try:
            return silero_regions(samples, cfg), "silero"
        except Exception as exc:  # a dead VAD model must not stop the analysis
            log.warning("silero VAD unavailable, using the energy rule", extra={"error": str(exc)})
    return energy_regions(samples, cfg), "energy"


def shape_utterances(regions: list[Region], cfg: SegmentationConfig) -> list[Region]:
    """Merge short regions into close neighbours toward the target length; split long ones."""
    merged: list[Region] = []
    for r in regions:
        if merged:
            prev = merged[-1]
            gap = r.start - prev.end
            either_short = prev.duration < cfg.min_utterance_s or r.duration < cfg.min_utterance_s
            if gap <= cfg.merge_gap_s and either_short and r.end - prev.start <= cfg.target_utterance_s:
                merged[-1] = Region(prev.start, r.end)
                continue
        merged.append(r)
    shaped: list[Region] = []
    for r in merged:
        if r.duration <= cfg.max_utterance_s:
            shaped.append(r)
            continue
        pieces = int(np.ceil(r.duration / cfg.target_utterance_s))
        step = r.duration / pieces
        shaped.extend(Region(r.start + i * step, r.start + (i + 1) * step) for i in range(pieces))
    return shaped


CONTEXT_S = 1.0  # audio kept before carried speech, so the VAD sees its onset in context


class StreamingSegmenter:
    """Cuts one leg's audio into utterances as it arrives, in blocks of any size.

    Speech still running at the end of a block is held back and finished with the next block,
    so block edges never split an utterance; at most one block plus the held speech is kept.
    """

    def __init__(self, cfg: SegmentationConfig):
        self.cfg = cfg
        self.methods: set[str] = set()
        self._held = np.zeros(0, np.float32)
        self._held_start = 0.0  # call time of _held[0]
        self._context = 0.0  # seconds at the head of _held that were already finalised

    def push(self, block: np.ndarray, final: bool = False) -> list[tuple[Region, np.ndarray]]:
        """Add audio; return the utterances that are complete, in call time, with raw clips."""
        buffer = np.concatenate([self._held, block.astype(np.float32)])
        peak = float(np.max(np.abs(buffer))) if buffer.size else 0.0
        regions, method = speech_regions(buffer * (0.95 / peak) if peak > 1e-4 else buffer, self.cfg)
        self.methods.add(method)
        regions = [r for r in regions if r.end > self._context]  # already emitted last time
        end = len(buffer) / SAMPLE_RATE
        cut = end
        if not final:
            still_open = [r for r in regions if r.end > end - self.cfg.min_silence_s]
            if still_open and still_open[0].start > CONTEXT_S:
                cut = still_open[0].start  # otherwise it fills the buffer: cut at the edge
        shaped = shape_utterances([r for r in regions if r.start < cut], self.cfg)
        out = [(Region(r.start + self._held_start, r.end + self._held_start),
                buffer[int(r.start * SAMPLE_RATE): int(r.end * SAMPLE_RATE)]) for r in shaped]
        keep_from = int(max(0.0, cut - CONTEXT_S) * SAMPLE_RATE) if cut < end else len(buffer)
        self._held = buffer[keep_from:].copy()
        self._context = max(0.0, cut - keep_from / SAMPLE_RATE) if cut < end else 0.0
        self._held_start += keep_from / SAMPLE_RATE
        return out
