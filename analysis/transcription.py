"""Transcription of one leg's utterances with faster-whisper, words mapped back to call time.

The utterances of a leg are joined with short silences into one speech-only track and decoded
in one pass: Whisper always encodes 30 s windows, so a 3 s utterance decoded alone would pay
for ten times its length. Each word then goes back to the utterance its midpoint falls in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.audio import SAMPLE_RATE

JOIN_GAP_S = 1.0  # silence between joined utterances, so Whisper sees a clear pause


@dataclass(frozen=True)
class Word:
    word: str  # as Whisper wrote it, with its leading space and punctuation
    start: float  # seconds from the start of the call
    end: float
    probability: float


@dataclass(frozen=True)
class LegTranscript:
    language: str
    language_probability: float
    words: list[list[Word]]  # per utterance, in order

    def text(self, index: int) -> str:
        return "".join(w.word for w in self.words[index]).strip()


def transcribe_utterances(whisper, clips: list[np.ndarray], starts: list[float],
                          language: str | None = None, beam_size: int = 5) -> LegTranscript:
    """Transcribe clips that start at `starts` (call time); returns words per clip."""
    if not clips:
        return LegTranscript(language or "", 0.0, [])
    gap = np.zeros(int(JOIN_GAP_S * SAMPLE_RATE), dtype=np.float32)
    offsets: list[float] = []  # where each clip begins in the joined track
    pieces: list[np.ndarray] = []
    cursor = 0
    for clip in clips:
        offsets.append(cursor / SAMPLE_RATE)
        pieces += [clip.astype(np.float32), gap]
        cursor += len(clip) + len(gap)
    joined = np.concatenate(pieces)
    segments, info = whisper.transcribe(joined, language=language, beam_size=beam_size)
    ends = [offsets[i] + len(clips[i]) / SAMPLE_RATE for i in range(len(clips))]
    words: list[list[Word]] = [[] for _ in clips]
    for segment in segments:
        for w in segment.words or []:
            mid = (w.start + w.end) / 2
            i = min(max(int(np.searchsorted(offsets, mid, side="right")) - 1, 0), len(clips) - 1)
            if mid > ends[i] and i + 1 < len(clips) and offsets[i + 1] - mid < mid - ends[i]:
                i += 1  # a word in the gap belongs to the nearer utterance
            shift = starts[i] - offsets[i]
            start = min(max(w.start, offsets[i]), ends[i]) + shift
            end = min(max(w.end, offsets[i]), ends[i]) + shift
            words[i].append(Word(w.word, round(start, 3), round(end, 3), round(float(w.probability), 4)))
    return LegTranscript(info.language, float(info.language_probability), words)
