"""Our trained heads: pooled encoder states (Whisper by default, or HuBERT) -> a small classifier.

The head is a standardiser, an optional ReLU hidden layer and a softmax layer with a fitted
temperature, stored as plain arrays in an .npz (no pickles), so it loads the same on any numpy
and stays around a megabyte.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotivoice.analysis.assets import ModelUnavailable
from emotivoice.analysis.audio import normalize
from emotivoice.analysis.emotion.attentive import AttentiveBranch, downsample, log_softmax
from emotivoice.analysis.emotion.features import pool
from emotivoice.analysis.emotion.prosody import egemaps
from emotivoice.analysis.emotion.speaker_norm import NormStats, SpeakerHistory


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
    # how strongly the emotion is expressed, 0 (CREMA-D "low") .. 1 ("high"): a linear regressor on
    # the same standardised features, present when the head was trained with intensity labels
    intensity_weight: np.ndarray | None = None  # (dim,)
    intensity_bias: float = 0.0
    # present for a head trained on features normalised per speaker (speaker_norm.py): the global
    # statistics and shrinkage its training used, which serving must apply the same way
    norm: NormStats | None = None
    # present for a fused head (attentive.py): an attentive-pooling branch over the encoder's frames
    # whose log-probabilities are averaged with this linear head's before the temperature
    attentive: AttentiveBranch | None = None

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (features - self.mean) / self.scale
        if self.hidden_weight is not None:
            x = np.maximum(x @ self.hidden_weight + self.hidden_bias, 0.0)
        return x @ self.weight.T + self.bias

    def intensity(self, features: np.ndarray) -> np.ndarray | None:
        """Expressed intensity per row in 0..1, or None when the head has no intensity output."""
        if self.intensity_weight is None:
            return None
        x = (np.atleast_2d(features) - self.mean) / self.scale
        return np.clip(x @ self.intensity_weight + self.intensity_bias, 0.0, 1.0)

    def fused_logits(self, features: np.ndarray, attentive_logits: np.ndarray | None = None) -> np.ndarray:
        """The linear head's logits, or with the attentive branch's (rows alike) the mean of both
        log-probabilities: what the temperature divides."""
        z = self.logits(np.atleast_2d(features))
        if attentive_logits is None:
            return z
        return (log_softmax(z) + log_softmax(np.atleast_2d(attentive_logits))) / 2

    def probabilities(self, features: np.ndarray, temperature: float | None = None,
                      attentive_logits: np.ndarray | None = None) -> np.ndarray:
        z = self.fused_logits(features, attentive_logits) / (temperature or self.temperature)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        hidden = {} if self.hidden_weight is None else {
            "hidden_weight": self.hidden_weight.astype(np.float32), "hidden_bias": self.hidden_bias.astype(np.float32)}
        if self.intensity_weight is not None:
            hidden["intensity_weight"] = self.intensity_weight.astype(np.float32)
            hidden["intensity_bias"] = np.float32(self.intensity_bias)
        if self.attentive is not None:
            hidden.update(self.attentive.arrays())
        if self.norm is not None:
            hidden.update(norm_mean=self.norm.mean, norm_var=self.norm.var, norm_k0=self.norm.k0,
                          norm_with_std=np.bool_(self.norm.with_std))
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
                           d["hidden_bias"] if "hidden_bias" in d else None,
                           d["intensity_weight"] if "intensity_weight" in d else None,
                           float(d["intensity_bias"]) if "intensity_bias" in d else 0.0,
                           NormStats(d["norm_mean"], d["norm_var"], d["norm_k0"], bool(d["norm_with_std"]))
                           if "norm_mean" in d else None,
                           AttentiveBranch.from_arrays(d))
        except (KeyError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"emotion head {path} is unreadable: {exc}") from exc


class HeadModel:
    """An encoder (anything with .name and .encode(clip) -> frames) -> mean/std pooling, plus the
    eGeMAPS prosody functionals when the head was trained with them -> EmotionHead.

    With CTranslate2's last layer the weights are the ones transcription already loaded; the
    middle-layer encoder (midlayers.py) is a PyTorch copy of the first blocks of the same model.bin.
    A head with an intensity output leaves each clip's intensity for `intensity_of`. A head trained
    with per-speaker normalisation scores each clip against its speaker's last `norm_window`
    finished utterances (predict's `speakers`); 0, or no speaker given, scores on the global statistics.
    """

    def __init__(self, head: EmotionHead, encoder, norm_window: int = 0):
        self.head = head
        self._intensity: OrderedDict[bytes, float] = OrderedDict()  # recent clips' intensity, by content
        self._lock = threading.Lock()
        self.encoder = encoder
        self.labels = head.labels
        self.name = f"{encoder.name}+{head.card.get('name', 'head')}"
        self.provisional = bool(head.card.get("provisional", True))
        self.history = SpeakerHistory(head.norm, norm_window) if head.norm is not None and norm_window > 0 else None
        got = self.embed(np.zeros(16_000, np.float32)).shape[0]
        if got != head.mean.shape[0]:
            raise ModelUnavailable(f"emotion head expects {head.mean.shape[0]}-d features but "
                                   f"{encoder.name} gives {got}-d: retrain it or pick its encoder")

    def embed(self, clip: np.ndarray) -> np.ndarray:
        return self._features(clip)[0]

    def _features(self, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The linear head's features and, for a fused head, the attentive branch's logits (the
        encoder runs once for both)."""
        clip = normalize(clip)
        frames = self.encoder.encode(clip)
        prosody = egemaps(clip) if self.head.card.get("prosody") == "egemaps" else None
        pooled = pool(frames) if prosody is None else np.concatenate([pool(frames), prosody])
        if self.head.attentive is None:
            return pooled, None
        return pooled, self.head.attentive.logits(downsample(frames), prosody)

    def predict(self, clips: Sequence[np.ndarray], speakers: Sequence | None = None,
                remember: Sequence[bool] | None = None) -> list[dict[str, float]]:
        """Probabilities per clip. speakers: per clip a key of its speaker ((call id, leg)), in
        time order, for a per-speaker head; remember: per clip whether it joins that speaker's
        history (a finished utterance; not a rolling update). Default: all of them."""
        if not clips:
            return []
        from emotivoice.analysis.emotion.midlayers import blas_threads

        # the whole step (eGeMAPS and the head too) on the encoder's BLAS threads: numpy's OpenBLAS
        # left spinning beside a one-thread encoder doubled the step's CPU time (emotion_model.json)
        with blas_threads(getattr(self.encoder, "threads", 0)):
            parts = [self._features(c) for c in clips]
        features = np.stack([f for f, _ in parts])
        attentive = np.stack([a for _, a in parts]) if self.head.attentive is not None else None
        if self.head.norm is not None:  # no history (window 0, unknown speaker): the global statistics
            keys = speakers if speakers is not None and self.history is not None else [None] * len(clips)
            keep = remember if remember is not None else [True] * len(clips)
            features = np.stack([self.history.apply(k, f, r) if k is not None else f
                                 for k, f, r in zip(keys, features, keep, strict=True)])
        levels = self.head.intensity(features)
        if levels is not None:  # kept for intensity_of: the stage asks after predict, with the same clip
            with self._lock:
                for clip, level in zip(clips, levels):
                    self._intensity[_digest(clip)] = float(level)
                while len(self._intensity) > 256:
                    self._intensity.popitem(last=False)
        probs = self.head.probabilities(features, attentive_logits=attentive)
        return [dict(zip(self.labels, map(float, row))) for row in probs]

    def forget(self, call_id: str) -> None:
        """The call ended: its speakers' histories go."""
        if self.history is not None:
            self.history.forget(call_id)

    def intensity_of(self, clip: np.ndarray) -> float | None:
        """The intensity (0..1) predict found for this clip, or None: the head has none, or this
        process never predicted the clip (a Ray worker did), so nothing is computed twice."""
        with self._lock:
            return self._intensity.get(_digest(clip))


def _digest(clip: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(clip, dtype=np.float32).tobytes(), digest_size=16).digest()
