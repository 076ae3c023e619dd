"""HuBERT for users who have the weights, loaded through transformers from a hub id or directory.

Two uses: `HubertEmotionModel` runs a fine-tuned `HubertForSequenceClassification` (HuBERT ->
mean pooling -> classification head; labels from its id2label, mapped onto our names), and
`HubertEncoder` gives frame states to train our own head on (`train emotion --backbone hubert`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emotivoice.analysis.assets import ModelUnavailable
from emotivoice.analysis.audio import normalize
from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS

ALIASES = {"ang": "anger", "angry": "anger", "dis": "disgust", "disgusted": "disgust", "fea": "fear",
           "fearful": "fear", "hap": "happiness", "happy": "happiness", "joy": "happiness",
           "neu": "neutral", "sad": "sadness", "sur": "surprise", "surprised": "surprise"}


def _load(model_ref: str, model_class: str):
    """(feature extractor, model in eval mode, display name) from a directory or hub id."""
    try:
        import transformers
    except ImportError as exc:
        raise ModelUnavailable("the hubert backend needs `pip install transformers`") from exc
    local = Path(model_ref).expanduser()
    if not local.is_dir() and model_ref.startswith(("/", ".", "~")):
        raise ModelUnavailable(f"cannot load HuBERT model {model_ref!r}: no such directory")
    kwargs = {"local_files_only": True} if local.is_dir() else {}
    try:
        extractor = transformers.AutoFeatureExtractor.from_pretrained(str(model_ref), **kwargs)
        model = getattr(transformers, model_class).from_pretrained(str(model_ref), **kwargs).eval()
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot load HuBERT model {model_ref!r}: {exc}") from exc
    return extractor, model, f"hubert:{local.name if local.is_dir() else model_ref}"


class HubertEncoder:
    """HuBERT's last hidden states (50 frames/s, 768-d for base) for one clip."""

    def __init__(self, model_ref: str):
        import torch

        self.extractor, self.model, self.name = _load(model_ref, "HubertModel")
        self._torch = torch

    def encode(self, samples: np.ndarray) -> np.ndarray:
        inputs = self.extractor(samples, sampling_rate=16_000, return_tensors="pt")
        with self._torch.inference_mode():
            return self.model(inputs.input_values).last_hidden_state[0].numpy()


class HubertEmotionModel:
    def __init__(self, model_ref: str):
        import torch

        self.extractor, self.model, self.name = _load(model_ref, "HubertForSequenceClassification")
        id2label = self.model.config.id2label
        self.labels = tuple(ALIASES.get(id2label[i].lower(), id2label[i].lower()) for i in range(len(id2label)))
        unknown = [lab for lab in self.labels if lab not in BASE_EMOTIONS]
        if unknown:
            raise ModelUnavailable(f"HuBERT model {model_ref!r} has labels outside the base emotions: {unknown}")
        self.provisional = True
        self._torch = torch

    def predict(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        out = []
        for clip in clips:  # one at a time: padding would leak into the mean pooling
            inputs = self.extractor(normalize(clip), sampling_rate=16_000, return_tensors="pt")
            with self._torch.inference_mode():
                logits = self.model(**inputs).logits[0]
            probs = self._torch.softmax(logits, dim=-1).numpy()
            out.append(dict(zip(self.labels, map(float, probs))))
        return out
