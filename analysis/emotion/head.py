"""Our trained heads: pooled encoder states (Whisper by default, or HuBERT) -> a linear layer.

The head is a standardiser plus a softmax layer with a fitted temperature, stored as plain
arrays in an .npz (no pickles), so it loads the same on any numpy and stays a few KB.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.assets import ModelUnavailable
from analysis.audio import normalize
from analysis.emotion.features import pool


@dataclass
class LinearHead:
    labels: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (classes, dim)
    bias: np.ndarray  # (classes,)
    temperature: float = 1.0
    card: dict = field(default_factory=dict)  # data, splits and metrics, as in the model card

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weight.T + self.bias

    def probabilities(self, features: np.ndarray, temperature: float | None = None) -> np.ndarray:
        z = self.logits(np.atleast_2d(features)) / (temperature or self.temperature)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, labels=np.array(self.labels), mean=self.mean.astype(np.float32),
                 scale=self.scale.astype(np.float32), weight=self.weight.astype(np.float32),
                 bias=self.bias.astype(np.float32), temperature=np.float32(self.temperature),
                 card=np.array(json.dumps(self.card)))

    @classmethod
    def load(cls, path: Path) -> "LinearHead":
        if not path.is_file():
            raise ModelUnavailable(f"emotion head {path} not found (train one: emotivoice train emotion)")
        try:
            with np.load(path, allow_pickle=False) as d:
                return cls(tuple(d["labels"].tolist()), d["mean"], d["scale"], d["weight"], d["bias"],
                           float(d["temperature"]), json.loads(str(d["card"])))
        except (KeyError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"emotion head {path} is unreadable: {exc}") from exc


class HeadModel:
    """An encoder (anything with .name and .encode(clip) -> frames) -> mean/std pooling -> LinearHead.

    With the Whisper encoder the weights are the ones transcription already loaded.
    """

    def __init__(self, head: LinearHead, encoder):
        self.head = head
        self.encoder = encoder
        self.labels = head.labels
        self.name = f"{encoder.name}+{head.card.get('name', 'head')}"
        self.provisional = bool(head.card.get("provisional", True))
        got = self.embed(np.zeros(16_000, np.float32)).shape[0]
        if got != head.mean.shape[0]:
            raise ModelUnavailable(f"emotion head expects {head.mean.shape[0]}-d features but "
                                   f"{encoder.name} gives {got}-d: retrain it or pick its encoder")

    def embed(self, clip: np.ndarray) -> np.ndarray:
        return pool(self.encoder.encode(normalize(clip)))

    def predict(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        if not clips:
            return []
        probs = self.head.probabilities(np.stack([self.embed(c) for c in clips]))
        return [dict(zip(self.labels, map(float, row))) for row in probs]
