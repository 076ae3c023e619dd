"""VAD endpointing for one live leg: finds where each utterance starts and ends as audio arrives.

silero VAD (analysis/vad.py: the ONNX export, one implementation for live and batch) runs on
32 ms chunks at the leg's own rate (8 or 16 kHz, both native to silero), in fresh-state windows
giving the batch segmenter's probabilities chunk for chunk (so a whisper after a shout is heard),
with hysteresis: speech starts at p >= `threshold` and an utterance ends after
`endpoint_silence_s` below `neg_threshold`,
the same thresholds the batch segmenter uses (segmentation.vad_threshold / vad_neg_threshold,
chosen on telephone audio). Times are leg time (seconds of audio since the leg started), and each
event also carries the wall-clock time the deciding audio arrived, so latency is measured from
when the speaker actually stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from emotivoice.analysis.audio import SAMPLE_RATE
from emotivoice.analysis.vad import WindowedStream
from emotivoice.config import LiveConfig, SegmentationConfig


def to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    """int16 or float PCM at `rate` -> float32 at 16 kHz (polyphase, as the telephone training copies)."""
    x = pcm.astype(np.float32) / (32768.0 if pcm.dtype == np.int16 else 1.0)
    if rate == SAMPLE_RATE:
        return x
    g = np.gcd(SAMPLE_RATE, rate)
    return resample_poly(x.astype(np.float64), SAMPLE_RATE // g, rate // g).astype(np.float32)


@dataclass(frozen=True)
class Speech:
    """An utterance so far (final=False: a rolling update) or finished (final=True)."""

    start: float  # leg time, seconds
    end: float
    clip: np.ndarray  # int16 at the leg's rate, start..end (with pre-roll)
    final: bool
    end_wall: float  # time.time() when the audio deciding `end` arrived


class Endpointer:
    def __init__(self, rate: int, endpoint_silence_s: float = 0.4, min_speech_s: float = 0.25,
                 max_utterance_s: float = 15.0, rolling_update_s: float = 2.5,
                 threshold: float = SegmentationConfig.vad_threshold,
                 neg_threshold: float = SegmentationConfig.vad_neg_threshold,
                 window_s: float = SegmentationConfig.vad_window_s,
                 warmup_s: float = SegmentationConfig.vad_warmup_s,
                 pre_roll_s: float = LiveConfig.pre_roll_s):
        self._vad = WindowedStream(rate, window_s, warmup_s)  # refuses rates silero does not run at
        self.rate, self.chunk = rate, self._vad.chunk
        self.threshold, self.neg_threshold = threshold, neg_threshold
        self.endpoint_silence_s, self.min_speech_s = endpoint_silence_s, min_speech_s
        self.max_utterance_s, self.rolling_update_s = max_utterance_s, rolling_update_s
        self.pre_roll = int(pre_roll_s * rate)  # audio kept before the detected onset
        self._pending = np.zeros(0, np.int16)  # samples not yet a full chunk
        self._samples = 0  # samples fed to the VAD so far
        self._audio: list[np.ndarray] = []  # current utterance (or pre-roll while silent)
        self._audio_start = 0  # leg sample index of _audio[0][0]
        self._speech_start: int | None = None
        self._last_speech_end = 0  # sample index just after the latest speech chunk
        self._last_speech_wall = 0.0
        self._last_update = 0

    def feed(self, pcm: np.ndarray, arrived: float | None = None) -> list[Speech]:
        """Add int16 samples; return utterances finished (and rolling updates due) in order."""
        arrived = time.time() if arrived is None else arrived
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = len(data) // self.chunk
        self._pending = data[n * self.chunk:].copy()
        out: list[Speech] = []
        if n == 0:
            return out
        chunks = data[: n * self.chunk].reshape(n, self.chunk)
        scaled = chunks.astype(np.float32) / 32768.0
        for chunk, x in zip(chunks, scaled):
            out += [s for s in self._step(chunk, self._probability(x), arrived) if s is not None]
        return out

    def _probability(self, x: np.ndarray) -> float:
        return self._vad.probability(x)

    def flush(self) -> list[Speech]:
        """The leg ended: finish the utterance in progress, if any."""
        if self._speech_start is None:
            return []
        return [s for s in [self._emit(final=True)] if s is not None]

    def _step(self, chunk: np.ndarray, p: float, arrived: float) -> list[Speech | None]:
        start = self._samples
        self._samples += len(chunk)
        self._audio.append(chunk)
        if self._speech_start is None:
            if p >= self.threshold:
                self._speech_start = max(self._audio_start, start - self.pre_roll)
                self._last_speech_end, self._last_speech_wall = self._samples, arrived
                self._last_update = self._samples
                self._trim_to(self._speech_start)
            else:
                self._trim_to(self._samples - self.pre_roll)
            return []
        if p >= self.neg_threshold:
            self._last_speech_end, self._last_speech_wall = self._samples, arrived
        silence = (self._samples - self._last_speech_end) / self.rate
        length = (self._last_speech_end - self._speech_start) / self.rate
        if silence >= self.endpoint_silence_s:
            return [self._emit(final=True)]
        if length >= self.max_utterance_s:
            return [self._emit(final=True, continues=True)]
        if (self._samples - self._last_update) / self.rate >= self.rolling_update_s:
            self._last_update = self._samples
            return [self._speech(final=False, end=self._samples, wall=arrived)]
        return []

    def _speech(self, final: bool, end: int, wall: float) -> Speech:
        audio = np.concatenate(self._audio)
        clip = audio[self._speech_start - self._audio_start: end - self._audio_start]
        return Speech(self._speech_start / self.rate, end / self.rate, clip, final, wall)

    def _emit(self, final: bool, continues: bool = False) -> Speech | None:
        speech = self._speech(final, self._last_speech_end, self._last_speech_wall)
        if speech.end - speech.start < self.min_speech_s:
            speech = None
        if continues:  # over-long speech: cut here and go on with a new utterance at once
            self._speech_start = self._last_speech_end
            self._last_update = self._samples
            self._trim_to(self._speech_start)
        else:
            self._speech_start = None
            self._trim_to(self._samples - self.pre_roll)
        return speech  # None: a click, not speech

    def _trim_to(self, sample: int) -> None:
        """Drop buffered audio before leg sample `sample`."""
        if sample <= self._audio_start or not self._audio:
            return
        audio = np.concatenate(self._audio)
        cut = min(sample - self._audio_start, len(audio))
        self._audio = [audio[cut:]] if cut < len(audio) else []
        self._audio_start += cut
