"""VAD endpointing for one live leg: finds where each utterance starts and ends as audio arrives.

silero VAD runs on 32 ms chunks at the leg's own rate (8 or 16 kHz, both native to silero) with
hysteresis: speech starts at p >= 0.5, and an utterance ends after `endpoint_silence_s` below
0.35. All legs share one ONNX Runtime session of silero's ONNX export and each keeps its own
recurrent state: 0.08 ms a chunk against 0.35 ms through the TorchScript model, with the same
probabilities (checked to 1e-6), which is what lets one ingest thread keep up with 16+ legs. Times are
leg time (seconds of audio since the leg started), and each event also carries the wall-clock
time the deciding audio arrived, so latency is measured from when the speaker actually stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from analysis.audio import SAMPLE_RATE

START_P, STOP_P = 0.5, 0.35
PRE_ROLL_S = 0.2  # audio kept before the detected onset: silero reacts a little late


CONTEXT = {8000: 32, 16000: 64}  # samples of the previous chunk silero's ONNX model expects in front


@lru_cache(maxsize=1)
def _silero_session():
    import onnxruntime
    from importlib import resources

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = resources.files("silero_vad") / "data" / "silero_vad.onnx"
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


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
                 max_utterance_s: float = 15.0, rolling_update_s: float = 2.5):
        if rate not in (8000, 16000):
            raise ValueError(f"VAD runs at 8 or 16 kHz, not {rate} Hz: resample the leg first")
        self.rate = rate
        self.chunk = 256 if rate == 8000 else 512
        self._session = _silero_session()
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT[rate]), np.float32)
        self._sr = np.array(rate, dtype=np.int64)
        self.endpoint_silence_s, self.min_speech_s = endpoint_silence_s, min_speech_s
        self.max_utterance_s, self.rolling_update_s = max_utterance_s, rolling_update_s
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
        inp = np.concatenate([self._context, x[None, :]], axis=1)
        p, self._state = self._session.run(None, {"input": inp, "state": self._state, "sr": self._sr})
        self._context = inp[:, -self._context.shape[1]:]
        return float(p[0, 0])

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
            if p >= START_P:
                self._speech_start = max(self._audio_start, start - int(PRE_ROLL_S * self.rate))
                self._last_speech_end, self._last_speech_wall = self._samples, arrived
                self._last_update = self._samples
                self._trim_to(self._speech_start)
            else:
                self._trim_to(self._samples - int(PRE_ROLL_S * self.rate))
            return []
        if p >= STOP_P:
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
            self._trim_to(self._samples - int(PRE_ROLL_S * self.rate))
        return speech  # None: a click, not speech

    def _trim_to(self, sample: int) -> None:
        """Drop buffered audio before leg sample `sample`."""
        if sample <= self._audio_start or not self._audio:
            return
        audio = np.concatenate(self._audio)
        cut = min(sample - self._audio_start, len(audio))
        self._audio = [audio[cut:]] if cut < len(audio) else []
        self._audio_start += cut
