"""Does received audio match what was sent? Compared by loudness envelope, so codecs, gain and
small time shifts (a dropped or held frame, a resampler's delay) do not matter but content does.
`CollectingSink` keeps what a connector delivers, for the comparison."""

from __future__ import annotations

import collections
import threading

import numpy as np


class CollectingSink:
    """A LiveSink that keeps every call start, frame and end a connector hands it."""

    def __init__(self):
        self.started, self.ended = [], []
        self.frames = collections.defaultdict(list)
        self.lock = threading.Lock()

    def start(self, call):
        self.started.append(call)

    def push(self, frame):
        with self.lock:
            self.frames[(frame.call_id, frame.leg)].append(frame)
        return True

    def end(self, call):
        self.ended.append(call)

    def pcm(self, call_id, leg, max_gap_frames: int = 25):
        """One leg's audio on its own timeline. The connector numbers frames by the media clock's
        wall time, so ticks the clock skipped (a CPU-bound moment) are gaps: filled with silence
        here as the recording front does, and allowed up to `max_gap_frames` (0.5 s) in all."""
        frames = self.frames[(call_id, leg)]
        seqs = [f.seq for f in frames]
        assert seqs == sorted(set(seqs)), "frame numbers repeat or go back"
        gaps = (seqs[-1] + 1 - len(frames)) if frames else 0
        assert gaps <= max_gap_frames, f"{gaps} frames of the leg's timeline never arrived"
        out, expected = [], 0
        for f in frames:
            if f.seq > expected:
                out.append(bytes(len(f.pcm) * (f.seq - expected)))
            out.append(f.pcm)
            expected = f.seq + 1
        return np.frombuffer(b"".join(out), dtype=np.int16)


def rms_envelope(samples: np.ndarray, rate: int, window_s: float = 0.1) -> np.ndarray:
    """RMS per non-overlapping window of `window_s` seconds (a trailing partial window is dropped)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    width = max(1, int(round(window_s * rate)))
    n = len(x) // width
    return np.sqrt(np.mean(np.square(x[: n * width]).reshape(n, width), axis=1)) if n else np.zeros(0)


def envelope_correlation(a: np.ndarray, b: np.ndarray, rate: int, window_s: float = 0.1,
                         max_lag_s: float = 0.5) -> float:
    """Pearson correlation of two signals' RMS envelopes at the best lag within +-max_lag_s.

    Both signals are at `rate` (int16 or float, any scale). Returns -1..1; 0 when either
    envelope is flat or the overlap is under two windows.
    """
    env_a, env_b = rms_envelope(a, rate, window_s), rms_envelope(b, rate, window_s)
    max_lag = int(round(max_lag_s / window_s))
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (env_a[lag:], env_b) if lag >= 0 else (env_a, env_b[-lag:])
        n = min(len(x), len(y))
        if n < 2:
            continue
        x, y = x[:n], y[:n]
        if x.std() == 0 or y.std() == 0:
            best = max(best, 0.0)
            continue
        best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best if best > -1.0 else 0.0
