"""Speech runs of each window's local speakers, and their CAM++ embeddings.

pyannote embeds each local speaker of a window as a whole. On same-room voices the segmentation
model sometimes gives two speakers one local label, so here each uninterrupted run of a local
speaker is embedded on its own (a pause nearly always separates two callers). Consecutive
windows see most runs again unchanged; those reuse the earlier embedding instead of paying
CAM++ once per overlapping window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emotivoice.analysis.diarization.embedding import FBANK_STEP_S, MIN_FRAMES, SAMPLE_RATE, WINDOW, embed, fbank


def speech_runs(activity: np.ndarray, max_frames: int | None = None) -> list[tuple[int, int, int]]:
    """(local speaker, first frame, end frame) of every uninterrupted stretch of each local speaker,
    cut into equal pieces of at most `max_frames` (a long run may hide an unnoticed speaker change)."""
    runs = []
    for k in range(activity.shape[1]):
        edges = np.diff(np.concatenate([[0], activity[:, k].astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            cuts = np.linspace(a, b, -(-(b - a) // max_frames) + 1 if max_frames else 2).round().astype(int)
            runs += [(k, int(x), int(y)) for x, y in zip(cuts[:-1], cuts[1:])]
    return runs


@dataclass(frozen=True)
class WindowRuns:
    runs: list[tuple[int, int, int]]  # (local speaker, first frame, end frame) within the window
    embeddings: np.ndarray  # (runs, 192)
    clean_s: np.ndarray  # (runs,) seconds where the run is the only voice
    fresh: np.ndarray  # (runs,) bool: computed here, not reused from the previous window


class RunEmbedder:
    """Embeds the runs of successive windows, remembering the previous window's runs."""

    def __init__(self, frame_step_s: float, frame_duration_s: float, min_speech_s: float,
                 max_run_s: float | None = None,
                 tolerance_frames: int = 3):
        self.frame_step_s, self.frame_duration_s = frame_step_s, frame_duration_s
        self.max_frames = round(max_run_s / frame_step_s) if max_run_s else None
        self.min_speech_s = max(min_speech_s, MIN_FRAMES * FBANK_STEP_S)
        self.tolerance = tolerance_frames
        self.previous: list[tuple[int, int, np.ndarray, float]] = []  # absolute frames, embedding, clean s

    def __call__(self, chunk: np.ndarray, activity: np.ndarray, first_frame: int) -> WindowRuns:
        """Embed the runs of one window starting at global frame `first_frame`.

        A run's embedding uses the filterbank frames where it is the only voice (overlap would
        blend two), or all its frames if it has under `min_speech_s` of those. Runs with under
        `min_speech_s` of speech at all are dropped: CAM++ says little about a syllable.
        """
        runs, clean, todo, reused = [], [], [], {}
        feats = mask_of = None
        for k, a, b in speech_runs(activity, self.max_frames):
            match = next((p for p in self.previous if abs(p[0] - first_frame - a) <= self.tolerance
                          and abs(p[1] - first_frame - b) <= self.tolerance), None)
            if match is not None:
                reused[len(runs)] = match[2]
                runs.append((k, a, b)), clean.append(match[3])
                continue
            if feats is None:
                feats, mask_of = self._features(chunk, activity)
            alone, active = mask_of(k, a, b)
            mask = alone if alone.sum() * FBANK_STEP_S >= self.min_speech_s else active
            if mask.sum() * FBANK_STEP_S < self.min_speech_s:
                continue
            todo.append((len(runs), feats[torch.from_numpy(mask)]))
            runs.append((k, a, b)), clean.append(float(alone.sum() * FBANK_STEP_S))
        out = np.zeros((len(runs), 192), dtype=np.float32)
        if todo:
            out[[i for i, _ in todo]] = embed([f for _, f in todo])
        for i, e in reused.items():
            out[i] = e
        self.previous = [(first_frame + a, first_frame + b, out[i], clean[i]) for i, (_, a, b) in enumerate(runs)]
        fresh = np.array([i not in reused for i in range(len(runs))], dtype=bool)
        return WindowRuns(runs, out, np.array(clean, dtype=np.float32), fresh)

    def _features(self, chunk: np.ndarray, activity: np.ndarray):
        """Filterbank of the window, and a function giving a run's (alone, active) filterbank-frame masks."""
        feats = fbank(chunk)
        centers = np.arange(len(feats)) * FBANK_STEP_S + WINDOW / SAMPLE_RATE / 2
        seg = np.clip(np.rint((centers - self.frame_duration_s / 2) / self.frame_step_s).astype(int), 0,
                      len(activity) - 1)
        active = activity[seg]
        alone = active & (active.sum(axis=1, keepdims=True) == 1)

        def mask_of(k: int, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
            inside = (seg >= a) & (seg < b)
            return alone[:, k] & inside, active[:, k] & inside

        return feats, mask_of
