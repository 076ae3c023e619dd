"""From per-window speaker activity to global speaker turns (pyannote 3.1 style reconstruction)."""

from __future__ import annotations

import numpy as np


def aggregate(starts: np.ndarray, activity: np.ndarray, runs: np.ndarray, labels: np.ndarray, num_clusters: int,
              num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Average the windows onto one frame grid: (clusters, frames) score and (frames,) speaker count.

    `runs` is (n, 4) [window, local speaker, first frame, end frame] sorted by window, `labels` the
    cluster of each. A cluster's score at a frame is the share of windows covering it that say its
    speaker talks; the count is the windows' mean number of simultaneous local speakers, rounded.
    Only these small arrays live at recording length (a 3-hour call is 640k frames).
    """
    frames = activity.shape[1]
    width = max(num_frames, int(starts.max()) + frames) if len(starts) else num_frames
    score = np.zeros((num_clusters, width), dtype=np.float32)
    local_count = np.zeros(width, dtype=np.float32)
    cover = np.zeros(width, dtype=np.float32)
    bounds = np.searchsorted(runs[:, 0], np.arange(len(starts) + 1)) if len(runs) else np.zeros(len(starts) + 1, int)
    for w, (start, act) in enumerate(zip(starts, activity)):
        span = slice(start, start + frames)
        cover[span] += 1
        local_count[span] += act.sum(axis=1)
        said = np.zeros((num_clusters, frames), dtype=bool)
        for (_, _, a, b), c in zip(runs[bounds[w]:bounds[w + 1]], labels[bounds[w]:bounds[w + 1]]):
            if c >= 0:
                said[c, a:b] = True
        score[:, span] += said
    cover = np.maximum(cover, 1)
    return (score / cover)[:, :num_frames], np.rint(local_count / cover)[:num_frames].astype(int)


def binarize(score: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(clusters, frames) bool: at each frame the `count` highest-scoring clusters that have any vote."""
    if score.size == 0:
        return np.zeros(score.shape, dtype=bool)
    order = np.argsort(-score, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(len(score))[:, None].repeat(score.shape[1], axis=1), axis=0)
    return (rank < count[None, :]) & (score > 0)


def turns_of(active: np.ndarray, frame_step_s: float, frame_duration_s: float, duration_s: float,
             min_off_s: float, min_on_s: float) -> list[tuple[int, float, float]]:
    """(cluster, start, end) turns from frame activity, bridging short gaps and dropping short blips."""
    out = []
    for k, row in enumerate(active):
        edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        runs: list[list[float]] = []
        for a, b in zip(starts, ends):
            start = max(0.0, a * frame_step_s + frame_duration_s / 2 - frame_step_s / 2)
            end = min(duration_s, b * frame_step_s + frame_duration_s / 2 + frame_step_s / 2)
            if runs and start - runs[-1][1] < min_off_s:
                runs[-1][1] = end
            elif end > start:
                runs.append([start, end])
        out += [(k, s, e) for s, e in runs if e - s >= min_on_s]
    return sorted(out, key=lambda t: (t[1], t[2], t[0]))
