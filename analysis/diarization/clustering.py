"""Clustering window-level speaker embeddings into global speakers, and mapping windows onto them."""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit-length rows, so cosine similarity is a dot product."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def centroids_of(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k, dim) unit mean embedding of clusters 0..k-1."""
    k = int(labels.max()) + 1 if len(labels) else 0
    return normalize(np.stack([embeddings[labels == c].mean(axis=0) for c in range(k)])) if k else \
        np.zeros((0, embeddings.shape[1]), dtype=np.float32)


def training_runs(clean_s: np.ndarray, fresh: np.ndarray, min_clean_s: float, min_runs: int) -> np.ndarray:
    """Indices of the runs whose embeddings shape the clusters: distinct runs with enough clean speech.

    CAM++ embeddings of 1-2 s snippets are much noisier than of 2+ s ones, so only long runs
    vote; if a recording has fewer than `min_runs` of those, its longest runs are taken instead.
    """
    distinct = np.flatnonzero(fresh)
    long = distinct[clean_s[distinct] >= min_clean_s]
    if len(long) >= min_runs:
        return long
    return distinct[np.argsort(-clean_s[distinct], kind="stable")[:min_runs]]


def cluster(embeddings: np.ndarray, threshold: float, num_speakers: int | None = None, min_speakers: int = 1,
            max_speakers: int = 4, min_cluster_fraction: float = 0.1, max_points: int = 3000) -> np.ndarray:
    """(n,) labels 0..k-1 of (n, dim) embeddings: average-linkage AHC on cosine distance.

    The count is num_speakers when given; otherwise the number of clusters the tree holds at
    `threshold` that have at least `min_cluster_fraction` of the embeddings (a stray run's
    embedding is not a new caller), kept within [min_speakers, max_speakers]. Beyond
    `max_points` embeddings (hours of audio) an even subsample is clustered and the rest join
    the nearest centroid, keeping the O(n^2) distance matrix bounded.
    """
    if len(embeddings) > max_points:
        pick = np.linspace(0, len(embeddings) - 1, max_points).round().astype(int)
        sub = cluster(embeddings[pick], threshold, num_speakers, min_speakers, max_speakers, min_cluster_fraction)
        return (normalize(embeddings) @ centroids_of(normalize(embeddings[pick]), sub).T).argmax(axis=1)
    n = len(embeddings)
    if n < 2:
        return np.zeros(n, dtype=int)
    x = normalize(embeddings.astype(np.float64))
    tree = linkage(x, method="average", metric="cosine")
    min_size = max(2.0, min_cluster_fraction * n)
    if num_speakers is None:
        sizes = np.bincount(_dense(fcluster(tree, t=threshold, criterion="distance")))
        num_speakers = int(np.clip((sizes >= min_size).sum(), min_speakers, max_speakers))
    return _refine(x, _cut(x, tree, min(num_speakers, n), min_size))


def _cut(x: np.ndarray, tree: np.ndarray, k: int, min_size: float) -> np.ndarray:
    """k clusters that are not outliers: cut the tree deeper until k clusters have `min_size`
    members, keep those, and let every other point join the nearest of them.

    Cutting at exactly k would spend clusters on single odd runs and merge two real speakers.
    """
    for depth in range(k, min(len(x), k + 20) + 1):
        labels = _dense(fcluster(tree, t=depth, criterion="maxclust"))
        sizes = np.bincount(labels)
        if (sizes >= min_size).sum() >= k:
            break
    keep = np.argsort(-sizes, kind="stable")[:k]
    return (x @ centroids_of(x, labels)[keep].T).argmax(axis=1)


def _refine(x: np.ndarray, labels: np.ndarray, iterations: int = 3) -> np.ndarray:
    """A few k-means passes on the unit sphere: average linkage leaves border points on the wrong side."""
    for _ in range(iterations):
        labels = (x @ centroids_of(x, _dense(labels)).T).argmax(axis=1)
    return _dense(labels)


def _dense(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(int)


def assign(embeddings: np.ndarray, runs: list[tuple[int, int, int]], centroids: np.ndarray) -> np.ndarray:
    """Global speaker of each speech run of one window (-1 if there are no speakers).

    Each run goes to its most similar centroid, except where runs of different local speakers
    overlap in time: the segmentation heard two voices there, so each such group is matched
    one-to-one onto speakers (Hungarian). Matching whole local speakers, as pyannote does, would
    force the runs of one merged local speaker apart, so it is applied per overlap instead.
    """
    if len(runs) == 0 or len(centroids) == 0:
        return np.full(len(runs), -1, dtype=int)
    sims = normalize(embeddings) @ centroids.T
    out = sims.argmax(axis=1)
    group = np.arange(len(runs))
    for i, (k, a, b) in enumerate(runs):
        for j, (k2, a2, b2) in enumerate(runs[:i]):
            if k2 != k and a2 < b and a < b2:
                group[group == group[i]] = group[j]
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if 1 < len(members) <= len(centroids):
            rows, cols = linear_sum_assignment(sims[members], maximize=True)
            out[members[rows]] = cols
    return out
