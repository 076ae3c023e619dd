"""Who spoke when in a mono call: segmentation-3.0 windows, CAM++ embeddings, AHC, reconstruction.

Two stages, so that re-clustering (a known speaker count, another threshold) does not rerun the
models: `Diarizer.analyse` streams the audio through the networks and keeps only small per-window
arrays; `Diarizer.resolve` clusters and rebuilds turns from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from emotivoice.analysis.diarization.aggregate import aggregate, binarize, turns_of
from emotivoice.analysis.diarization.clustering import assign, centroids_of, cluster, normalize, training_runs
from emotivoice.analysis.diarization.runs import RunEmbedder
from emotivoice.analysis.diarization.segmentation import SAMPLE_RATE, iter_windows, load_segmentation
from emotivoice.config import DiarizationConfig

log = logging.getLogger(__name__)

Progress = Callable[[float, float | None], None]  # (seconds processed, total seconds if known)


@dataclass(frozen=True)
class SpeakerTurn:
    speaker: int  # 0 = first to speak
    start: float  # seconds
    end: float


@dataclass(frozen=True)
class Diarization:
    turns: list[SpeakerTurn]
    num_speakers: int
    centroids: np.ndarray = field(repr=False)  # (num_speakers, 192) unit CAM++ mean embedding per speaker


@dataclass(frozen=True)
class WindowAnalysis:
    """What the models said about each 10 s window: everything clustering needs, nothing more."""

    starts: np.ndarray  # (windows,) first frame of each window on the global frame grid
    activity: np.ndarray  # (windows, frames, 3) bool local-speaker activity
    runs: np.ndarray  # (runs, 4) [window, local speaker, first frame, end frame] of each embedded speech run
    embeddings: np.ndarray  # (runs, 192) CAM++ embedding of each run
    clean_s: np.ndarray  # (runs,) seconds of the run where it is the only voice
    fresh: np.ndarray  # (runs,) bool: first sighting (later windows reuse the embedding of the same stretch)
    duration_s: float
    frame_step_s: float
    frame_duration_s: float


class Diarizer:
    """Offline speaker diarization; models load once per process and are shared by instances.
    `config` is the settings tree's diarization section (settings.diarization)."""

    def __init__(self, config: DiarizationConfig = DiarizationConfig()) -> None:
        self.config = config
        self.segmentation = load_segmentation(config.segmentation_backend)

    def __call__(self, samples: np.ndarray | Iterable[np.ndarray], num_speakers: int | None = None,
                 on_progress: Progress | None = None) -> Diarization:
        """Diarize mono float32 16 kHz audio (an array, or an iterable of blocks for long files)."""
        return self.resolve(self.analyse(samples, on_progress), num_speakers)

    def analyse(self, samples: np.ndarray | Iterable[np.ndarray],
                on_progress: Progress | None = None) -> WindowAnalysis:
        """Run segmentation and embeddings window by window, in batches, keeping per-window results only."""
        cfg, seg = self.config, self.segmentation
        total = samples.size / SAMPLE_RATE if isinstance(samples, np.ndarray) else None
        counted = _Counter([samples] if isinstance(samples, np.ndarray) else samples)
        embedder = RunEmbedder(seg.frame_step_s, seg.frame_duration_s, cfg.min_assign_speech_s, cfg.max_run_s)
        starts, acts, runs, found = [], [], [], []
        batch: list[tuple[int, np.ndarray]] = []
        windows = iter_windows(counted, seg.window, round(cfg.window_step_s * SAMPLE_RATE))
        while True:
            item = next(windows, None)
            if item is not None:
                batch.append((item[0], item[1].copy()))
            if batch and (item is None or len(batch) == cfg.batch_size):
                for (start, chunk), act in zip(batch, seg(np.stack([chunk for _, chunk in batch]))):
                    first = round(start / SAMPLE_RATE / seg.frame_step_s)
                    found.append(embedder(chunk, act, first))
                    runs += [(len(starts), k, a, b) for k, a, b in found[-1].runs]
                    starts.append(first), acts.append(act)
                if on_progress:
                    on_progress(min(batch[-1][0] + seg.window, counted.n) / SAMPLE_RATE, total)
                batch = []
            if item is None:
                break
        return WindowAnalysis(np.array(starts, dtype=int), np.stack(acts) if acts else np.zeros((0, 0, 3), bool),
                              np.array(runs, dtype=int).reshape(-1, 4),
                              (np.concatenate([f.embeddings for f in found]) if found
                               else np.zeros((0, 192), np.float32)),
                              np.concatenate([f.clean_s for f in found]) if found else np.zeros(0, np.float32),
                              np.concatenate([f.fresh for f in found]) if found else np.zeros(0, bool),
                              counted.n / SAMPLE_RATE, seg.frame_step_s, seg.frame_duration_s)

    def resolve(self, analysis: WindowAnalysis, num_speakers: int | None = None,
                threshold: float | None = None) -> Diarization:
        """Cluster the run embeddings and rebuild turns (cheap: no model runs)."""
        cfg, a = self.config, analysis
        train = a.embeddings[training_runs(a.clean_s, a.fresh, cfg.min_embedding_speech_s, cfg.min_cluster_runs)]
        labels = cluster(train, cfg.clustering_threshold if threshold is None else threshold, num_speakers,
                         cfg.min_speakers, cfg.max_speakers, cfg.min_cluster_fraction)
        centroids = centroids_of(normalize(train), labels)
        assigned = np.full(len(a.runs), -1, dtype=int)
        bounds = np.searchsorted(a.runs[:, 0], np.arange(len(a.starts) + 1))
        for w in range(len(a.starts)):
            lo, hi = bounds[w], bounds[w + 1]
            assigned[lo:hi] = assign(a.embeddings[lo:hi], [tuple(r[1:]) for r in a.runs[lo:hi]], centroids)
        num_frames = int(np.ceil(a.duration_s / a.frame_step_s)) + 1
        score, count = aggregate(a.starts, a.activity, a.runs, assigned, len(centroids), num_frames)
        raw = turns_of(binarize(score, count), a.frame_step_s, a.frame_duration_s, a.duration_s,
                       cfg.min_duration_off_s, cfg.min_duration_on_s)
        order = list(dict.fromkeys(k for k, _, _ in raw))  # by first appearance
        turns = [SpeakerTurn(order.index(k), s, e) for k, s, e in raw]
        log.info("diarized %.1f s: %d speakers, %d turns", a.duration_s, len(order), len(turns))
        return Diarization(turns, len(order), centroids[order] if order else centroids[:0])


class _Counter:
    """Pass blocks through while counting samples, so streamed input knows its length at the end."""

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        self.blocks, self.n = blocks, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self.blocks:
            self.n += np.asarray(block).size
            yield block
