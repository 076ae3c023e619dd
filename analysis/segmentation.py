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
