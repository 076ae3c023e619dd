"""Speech segmentation: where each speaker talks, cut into utterances.

silero VAD (analysis/vad.py, the ONNX export, also the live endpointer's model) finds speech at the
leg's own rate: 8 kHz for a telephone recording, whose band above 4 kHz is empty anyway. If it
cannot load, the seed's energy rule (-40 dBFS frames, pauses over 500 ms) stands in. Regions are
then shaped into utterances: short ones merged with a close neighbour toward about 10 s, long
ones split, so every utterance suits both Whisper and the emotion head. Each utterance keeps the
speech regions it was made of (`parts`), so transcription can tell words over speech from words
over the pauses a merge bridged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from emotivoice.analysis.audio import SAMPLE_RATE
from emotivoice.analysis.vad import VadParams, regions_from_probabilities, silero_session, windowed_probabilities
from emotivoice.config import SegmentationConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    start: float  # seconds
    end: float
    # the speech regions (start, end) inside it; empty means all of it is speech
    parts: tuple[tuple[float, float], ...] = field(default=(), compare=False)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def speech(self) -> tuple[tuple[float, float], ...]:
        return self.parts or ((self.start, self.end),)

    def shifted(self, by: float) -> Region:
        return Region(self.start + by, self.end + by, tuple((a + by, b + by) for a, b in self.parts))


def _silero():
    """The shared ONNX session (a seam: tests break it to exercise the energy fallback)."""
    return silero_session()


def to_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz float audio at `rate` (8 or 16 kHz) for the VAD."""
    if rate == SAMPLE_RATE:
        return samples
    from scipy.signal import resample_poly

    return resample_poly(samples.astype(np.float64), rate, SAMPLE_RATE).astype(np.float32)


def vad_params(cfg: SegmentationConfig) -> VadParams:
    return VadParams(cfg.vad_threshold, cfg.vad_neg_threshold, cfg.min_silence_s, cfg.min_speech_s,
                     cfg.speech_pad_s, cfg.speech_lead_s)


def silero_probabilities(samples: np.ndarray, rate: int = SAMPLE_RATE,
                         cfg: SegmentationConfig = SegmentationConfig()) -> np.ndarray:
    """silero's speech probability per 32 ms chunk of 16 kHz `samples`, judged at `rate` in
    fresh-state windows (analysis.vad.windowed_probabilities), as the live endpointer judges them."""
    return windowed_probabilities(to_rate(samples, rate), rate, cfg.vad_window_s, cfg.vad_warmup_s, _silero())


def silero_regions(samples: np.ndarray, cfg: SegmentationConfig, rate: int = SAMPLE_RATE) -> list[Region]:
    probs = silero_probabilities(samples, rate, cfg)
    total = len(samples) / SAMPLE_RATE
    return [Region(a, b) for a, b in regions_from_probabilities(probs, rate, vad_params(cfg), total)]


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
    return [Region(max(0.0, r.start - cfg.speech_lead_s), min(total, r.end + cfg.speech_pad_s))
            for r in bridged if r.duration >= cfg.min_speech_s]


def speech_regions(samples: np.ndarray, cfg: SegmentationConfig,
                   rate: int = SAMPLE_RATE) -> tuple[list[Region], str]:
    """Speech regions of 16 kHz `samples` (silero judging them at `rate`) and the method's name."""
    if cfg.use_silero:
        try:
            return silero_regions(samples, cfg, rate), f"silero@{rate // 1000}k"
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
                merged[-1] = Region(prev.start, r.end, prev.speech + r.speech)
                continue
        merged.append(r)
    shaped: list[Region] = []
    for r in merged:
        if r.duration <= cfg.max_utterance_s:
            shaped.append(r)
            continue
        pieces = int(np.ceil(r.duration / cfg.target_utterance_s))
        step = r.duration / pieces
        for i in range(pieces):
            a, b = r.start + i * step, r.start + (i + 1) * step
            shaped.append(Region(a, b, tuple((max(a, x), min(b, y)) for x, y in r.speech if y > a and x < b)))
    return shaped


CONTEXT_S = 1.0  # audio kept before carried speech, so the VAD sees its onset in context


class StreamingSegmenter:
    """Cuts one leg's audio into utterances as it arrives, in blocks of any size.

    Speech still running at the end of a block is held back and finished with the next block,
    so block edges never split an utterance; at most one block plus the held speech is kept.
    """

    def __init__(self, cfg: SegmentationConfig, rate: int = SAMPLE_RATE):
        self.cfg, self.rate = cfg, rate  # rate: what the VAD judges the leg at (its own, 8 or 16 kHz)
        self.methods: set[str] = set()
        self._held = np.zeros(0, np.float32)
        self._held_start = 0.0  # call time of _held[0]
        self._context = 0.0  # seconds at the head of _held that were already finalised

    def push(self, block: np.ndarray, final: bool = False) -> list[tuple[Region, np.ndarray]]:
        """Add audio; return the utterances that are complete, in call time, with raw clips."""
        buffer = np.concatenate([self._held, block.astype(np.float32)])
        peak = float(np.max(np.abs(buffer))) if buffer.size else 0.0
        regions, method = speech_regions(buffer * (0.95 / peak) if peak > 1e-4 else buffer, self.cfg, self.rate)
        self.methods.add(method)
        regions = [r for r in regions if r.end > self._context]  # already emitted last time
        end = len(buffer) / SAMPLE_RATE
        cut = end
        if not final:
            still_open = [r for r in regions if r.end > end - self.cfg.min_silence_s]
            if still_open and still_open[0].start > CONTEXT_S:
                cut = still_open[0].start  # otherwise it fills the buffer: cut at the edge
        shaped = shape_utterances([r for r in regions if r.start < cut], self.cfg)
        out = [(r.shifted(self._held_start),
                buffer[int(r.start * SAMPLE_RATE): int(r.end * SAMPLE_RATE)]) for r in shaped]
        keep_from = int(max(0.0, cut - CONTEXT_S) * SAMPLE_RATE) if cut < end else len(buffer)
        self._held = buffer[keep_from:].copy()
        self._context = max(0.0, cut - keep_from / SAMPLE_RATE) if cut < end else 0.0
        self._held_start += keep_from / SAMPLE_RATE
        return out
