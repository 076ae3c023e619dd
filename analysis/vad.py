"""silero VAD through its ONNX export: the one voice-activity model, for live legs and recordings.

silero runs natively at 8 and 16 kHz (32 ms chunks of 256 or 512 samples), so a telephone leg is
judged at its own rate instead of after upsampling. One ONNX Runtime session is shared by every
stream; each stream keeps its own recurrent state and the tail of its previous chunk. Through
ONNX a chunk costs about 0.08 ms against 0.35 ms through the TorchScript model, with the same
probabilities (checked to 1e-6), which makes the batch pass's segmentation a small share of its
time and lets one live ingest thread keep up with 16+ legs.

Probabilities become speech regions with silero's own hysteresis (start at `threshold`, end
below `neg_threshold` after `min_silence_s`). `WindowedStream` computes the batch segmenter's
probabilities one chunk at a time, for the live endpointer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CHUNK = {8000: 256, 16000: 512}  # samples per silero step at each supported rate
CONTEXT = {8000: 32, 16000: 64}  # samples of the previous chunk the ONNX model expects in front


@lru_cache(maxsize=1)
def silero_session():
    """The shared ONNX Runtime session (single-threaded: a chunk is far too small to split)."""
    import onnxruntime
    from importlib import resources

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = resources.files("silero_vad") / "data" / "silero_vad.onnx"
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def vad_rate(source_rate: int) -> int:
    """The rate a leg is judged at: 8 kHz for narrowband sources (telephony), else 16 kHz."""
    return 8000 if 0 < source_rate <= 8000 else 16000


def windowed_probabilities(samples: np.ndarray, rate: int, window_s: float = 2.0, warmup_s: float = 1.0,
                           session=None) -> np.ndarray:
    """Per-chunk probabilities, each judged by a fresh model that has heard only `warmup_s` to
    `warmup_s + window_s` of the audio before it.

    silero's recurrent state remembers what it heard: after a shouted turn, a whispered one that
    silero finds at once on its own scores under 0.1 (measured on CREMA-D telephone calls of dev
    actors: over a whole leg at 8 kHz silero missed 19 of 288 turns, in 2 s windows none). Short
    windows with fresh state judge each stretch on its own; all windows run as one batch through
    the ONNX session (about 1.5x the model work of one pass, but a few session calls instead of
    one per chunk, so faster in practice). `WindowedStream` gives the same numbers live.
    """
    session = session or silero_session()
    chunk, ctx = CHUNK[rate], CONTEXT[rate]
    n = -(-len(samples) // chunk)
    hop = max(1, min(n, int(round(window_s * rate / chunk))))
    warm = int(round(warmup_s * rate / chunk))
    padded = np.zeros((n + warm) * chunk, np.float32)  # warm chunks of silence before the start
    padded[warm * chunk: warm * chunk + len(samples)] = samples
    chunks = padded.reshape(-1, chunk)
    starts = np.arange(0, n, hop)  # window b judges chunks starts[b] .. starts[b] + hop
    steps = warm + hop
    batch = len(starts)
    state = np.zeros((2, batch, 128), np.float32)
    context = np.zeros((batch, ctx), np.float32)
    out = np.zeros(n, np.float32)
    sr = np.array(rate, dtype=np.int64)
    for k in range(steps):
        rows = np.minimum(starts + k, len(chunks) - 1)  # window b's k-th chunk (in padded chunks)
        inp = np.concatenate([context, chunks[rows]], axis=1)
        p, state = session.run(None, {"input": inp, "state": state, "sr": sr})
        context = inp[:, -ctx:]
        if k >= warm:
            idx = starts + k - warm
            ok = idx < np.minimum(starts + hop, n)
            out[idx[ok]] = p[ok, 0]
    return out


class WindowedStream:
    """`windowed_probabilities` one chunk at a time, for a live leg: the same numbers, chunk for chunk.

    Window b judges chunks [b*hop, (b+1)*hop) with a model started `warm` chunks before it, so at
    most two models run at once: the current window's, and in its last `warm` chunks the next
    window's, warming up (both in one batched session call).
    """

    def __init__(self, rate: int, window_s: float = 2.0, warmup_s: float = 1.0, session=None):
        if rate not in CHUNK:
            raise ValueError(f"VAD runs at 8 or 16 kHz, not {rate} Hz: resample the leg first")
        self.rate, self.chunk = rate, CHUNK[rate]
        self._session = session or silero_session()
        self._hop = max(1, int(round(window_s * rate / self.chunk)))
        self._warm = int(round(warmup_s * rate / self.chunk))
        if self._warm > self._hop:
            raise ValueError("the warm-up may not be longer than the window")
        self._sr = np.array(rate, dtype=np.int64)
        self._i = 0
        self._models = [self._fresh()]  # [current] or [current, next]
        for _ in range(self._warm):  # window 0 warms up on silence before the leg starts
            self._run(np.zeros(self.chunk, np.float32))

    def _fresh(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, 1, 128), np.float32), np.zeros((1, CONTEXT[self.rate]), np.float32)

    def _run(self, chunk: np.ndarray) -> float:
        state = np.concatenate([m[0] for m in self._models], axis=1)
        context = np.concatenate([m[1] for m in self._models], axis=0)
        rows = np.repeat(chunk.reshape(1, -1).astype(np.float32), len(self._models), axis=0)
        inp = np.concatenate([context, rows], axis=1)
        p, state = self._session.run(None, {"input": inp, "state": state, "sr": self._sr})
        self._models = [(state[:, k:k + 1], inp[k:k + 1, -context.shape[1]:]) for k in range(len(self._models))]
        return float(p[0, 0])

    def probability(self, chunk: np.ndarray) -> float:
        """Speech probability of the next chunk (exactly `self.chunk` float32 samples)."""
        pos = self._i % self._hop
        if self._warm and pos == self._hop - self._warm:
            self._models.append(self._fresh())  # the next window starts warming up
        p = self._run(chunk)
        self._i += 1
        if self._i % self._hop == 0:
            self._models = self._models[1:] or [self._fresh()]
        return p


@dataclass(frozen=True)
class VadParams:
    threshold: float  # a chunk at or above this starts (or continues) speech
    neg_threshold: float  # speech ends after min_silence_s below this
    min_silence_s: float
    min_speech_s: float  # shorter islands are clicks, dropped
    pad_s: float  # kept after each region
    lead_s: float  # kept before each region: silero is late on a quiet onset


def regions_from_probabilities(probs: np.ndarray, rate: int, params: VadParams,
                               total_s: float | None = None) -> list[tuple[float, float]]:
    """Speech regions (seconds) from per-chunk probabilities, with silero's hysteresis and padding."""
    step = CHUNK[rate] / rate
    regions: list[list[float]] = []
    start: int | None = None
    last_speech = 0  # chunk index just after the latest chunk at or above neg_threshold
    silence_chunks = max(1, int(round(params.min_silence_s / step)))
    for i, p in enumerate(probs):
        if start is None:
            if p >= params.threshold:
                start, last_speech = i, i + 1
            continue
        if p >= params.neg_threshold:
            last_speech = i + 1
        elif i + 1 - last_speech >= silence_chunks:
            regions.append([start * step, last_speech * step])
            start = None
    if start is not None:
        regions.append([start * step, last_speech * step])
    total = len(probs) * step if total_s is None else total_s
    out: list[tuple[float, float]] = []
    for a, b in regions:
        if b - a < params.min_speech_s:
            continue
        a, b = max(0.0, a - params.lead_s), min(total, b + params.pad_s)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
