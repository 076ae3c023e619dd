"""Per-speaker feature normalisation: each utterance relative to the same speaker's earlier speech.

A voice, a microphone and a phone line shift the pooled encoder features of everything a speaker
says; subtracting the speaker's running mean (and dividing by their spread) takes much of that
offset away, which is what goes wrong on corpora the head never saw (benchmarks/speaker_norm.py:
leave-one-corpus-out CREMA-D UA +0.06 to +0.11 clean with random, all-neutral or one-emotion
histories). The speaker's statistics shrink toward the global (training) ones per feature with the
empirical-Bayes weight n / (n + k0), k0 = within-speaker / between-speaker variance on the training
speakers, so a short history moves the features little and no history leaves them as they are
(the warm-up rule: the first utterance of a speaker is scored on the global statistics).

The head must be trained on features normalised the same way (training.py --speaker-norm), with
histories of mixed kinds (random, all neutral, one emotion), because a call's history is skewed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

HISTORY_KINDS = ("random", "neutral", "one_emotion")


@dataclass
class NormStats:
    mean: np.ndarray  # (dim,) global mean of the training features
    var: np.ndarray  # (dim,) global variance
    k0: np.ndarray  # (dim,) utterances of history worth as much as the global mean
    with_std: bool = True  # divide by the speaker's spread too, not only subtract their mean

    @classmethod
    def fit(cls, x: np.ndarray, groups: np.ndarray, with_std: bool = True) -> "NormStats":
        """From training rows and their speaker (one group per speaker and audio variant)."""
        mean, var = x.mean(axis=0), x.var(axis=0) + 1e-8
        parts = [x[groups == g] for g in np.unique(groups)]
        within = np.mean([p.var(axis=0) for p in parts], axis=0)
        sizes = np.array([len(p) for p in parts])[:, None]
        means = np.stack([p.mean(axis=0) for p in parts])
        # the spread of speaker means, less what their own sampling noise adds
        between = np.maximum(means.var(axis=0) - np.mean(within[None] / sizes, axis=0), 1e-3 * within)
        return cls(mean, var, within / between, with_std)

    def normalise(self, row: np.ndarray, history: np.ndarray) -> np.ndarray:
        """One feature row relative to history (n, dim) of the same speaker, mapped back onto the
        global scale; an empty history returns the row unchanged."""
        if len(history) == 0:
            return np.asarray(row, dtype=np.float64).copy()
        w = len(history) / (len(history) + self.k0)
        mean = w * history.mean(axis=0) + (1 - w) * self.mean
        z = row - mean
        if self.with_std:
            z = z * np.sqrt(self.var / (w * history.var(axis=0) + (1 - w) * self.var))
        return z + self.mean

    def normalise_rows(self, x: np.ndarray, histories: list[np.ndarray], pool: np.ndarray) -> np.ndarray:
        """Rows of x, each against its history given as indices into the rows of pool."""
        return np.stack([self.normalise(x[r], pool[h]) for r, h in enumerate(histories)]) if len(x) else x


def sample_histories(speakers: np.ndarray, labels: np.ndarray, idx: np.ndarray, kinds: tuple[str, ...], k: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Per clip in idx, up to k other clips of its speaker as its earlier speech in a call, of a
    kind drawn per clip: random clips, neutral ones only, clips of one randomly drawn emotion
    (maybe the clip's own), or none (the first utterance). Fewer than k where the speaker has
    fewer; never the clip itself."""
    by_speaker = {s: np.flatnonzero(speakers == s) for s in np.unique(speakers[idx])}
    out = []
    for i in idx:
        pool = by_speaker[speakers[i]]
        pool = pool[pool != i]
        kind = kinds[rng.integers(len(kinds))]
        if kind == "none":  # a speaker's first utterance
            pool = pool[:0]
        elif kind == "neutral":
            pool = pool[labels[pool] == "neutral"]
        elif kind == "one_emotion" and len(pool):
            emotions = np.unique(labels[pool])
            pool = pool[labels[pool] == emotions[rng.integers(len(emotions))]]
        out.append(rng.choice(pool, min(k, len(pool)), replace=False) if len(pool) else pool)
    return out


class SpeakerHistory:
    """The serving side: per speaker key ((call id, leg) or similar) the raw features of their last
    `window` utterances. Keys are dropped with their call (forget) and, past max_speakers, the
    least recently heard first, so a process that misses a call's end still stays bounded."""

    def __init__(self, stats: NormStats, window: int, max_speakers: int = 4096):
        self.stats, self.window, self.max_speakers = stats, max(int(window), 0), max_speakers
        self._rows: OrderedDict[Hashable, deque] = OrderedDict()
        self._lock = threading.Lock()

    def apply(self, key: Hashable | None, row: np.ndarray, remember: bool = True) -> np.ndarray:
        """The row normalised by the key's earlier utterances; then, when remember (a finished
        utterance, not a rolling update), it joins that history. key None: no speaker known."""
        if key is None or self.window == 0:
            return self.stats.normalise(row, np.empty((0, row.shape[0])))
        with self._lock:
            rows = self._rows.get(key)
            history = np.stack(rows) if rows else np.empty((0, row.shape[0]))
            if remember:
                if rows is None:
                    rows = self._rows[key] = deque(maxlen=self.window)
                rows.append(np.asarray(row, dtype=np.float64))
                self._rows.move_to_end(key)
                while len(self._rows) > self.max_speakers:
                    self._rows.popitem(last=False)
        return self.stats.normalise(row, history)

    def forget(self, call_id: str) -> None:
        """Drop every key of the call (keys are tuples whose first item is the call id)."""
        with self._lock:
            for key in [k for k in self._rows if isinstance(k, tuple) and k and k[0] == call_id]:
                del self._rows[key]

    def __len__(self) -> int:
        return len(self._rows)
