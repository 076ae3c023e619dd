"""Our trained heads: pooled encoder states (Whisper by default, or HuBERT) -> a small classifier.

The head is a standardiser, an optional ReLU hidden layer and a softmax layer with a fitted
temperature, stored as plain arrays in an .npz (no pickles), so it loads the same on any numpy
and stays around a megabyte.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotivoice.analysis.assets import ModelUnavailable
from emotivoice.analysis.audio import normalize
from emotivoice.analysis.emotion.features import pool
from emotivoice.analysis.emotion.prosody import egemaps


@dataclass
class EmotionHead:
    labels: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (classes, dim or hidden)
    bias: np.ndarray  # (classes,)
    temperature: float = 1.0
    card: dict = field(default_factory=dict)  # data, splits and metrics, as in the model card
    hidden_weight: np.ndarray | None = None  # (dim, hidden): present for an MLP head
    hidden_bias: np.ndarray | None = None

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (features - self.mean) / self.scale
        if self.hidden_weight is not None:
            x = np.maximum(x @ self.hidden_weight + self.hidden_bias, 0.0)
        return x @ self.weight.T + self.bias

    def probabilities(self, features: np.ndarray, temperature: float | None = None) -> np.ndarray:
        z = self.logits(np.atleast_2d(features)) / (temperature or self.temperature)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        hidden = {} if self.hidden_weight is None else {
            "hidden_weight": self.hidden_weight.astype(np.float32), "hidden_bias": self.hidden_bias.astype(np.float32)}
        np.savez(path, labels=np.array(self.labels), mean=self.mean.astype(np.float32),
                 scale=self.scale.astype(np.float32), weight=self.weight.astype(np.float32),
                 bias=self.bias.astype(np.float32), temperature=np.float32(self.temperature),
                 card=np.array(json.dumps(self.card)), **hidden)

    @classmethod
    def load(cls, path: Path) -> "EmotionHead":
        if not path.is_file():
            raise ModelUnavailable(f"emotion head {path} not found (train one: emotivoice train emotion)")
        try:
            with np.load(path, allow_pickle=False) as d:
                return cls(tuple(d["labels"].tolist()), d["mean"], d["scale"], d["weight"], d["bias"],
                           float(d["temperature"]), json.loads(str(d["card"])),
                           d["hidden_weight"] if "hidden_weight" in d else None,
                           d["hidden_bias"] if "hidden_bias" in d else None)
        except (KeyError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"emotion head {path} is unreadable: {exc}") from exc


class HeadModel:
    """An encoder (anything with .name and .encode(clip) -> frames) -> mean/std pooling, plus the
    eGeMAPS prosody functionals when the head was trained with them -> EmotionHead.

    With the Whisper encoder the weights are the ones transcription already loaded.
    """

    def __init__(self, head: EmotionHead, encoder):
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
        clip = normalize(clip)
        pooled = pool(self.encoder.encode(clip))
        if self.head.card.get("prosody") == "egemaps":
            pooled = np.concatenate([pooled, egemaps(clip)])
        return pooled

    def predict(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        if not clips:
            return []
        probs = self.head.probabilities(np.stack([self.embed(c) for c in clips]))
        return [dict(zip(self.labels, map(float, row))) for row in probs]
