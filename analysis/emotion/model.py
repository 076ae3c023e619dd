"""The `EmotionModel` interface and the factory that picks a backend from config.

A backend maps 16 kHz utterance clips to calibrated probabilities over its own labels (a subset
of BASE_EMOTIONS). Everything downstream (tiers, risk, storage) only sees those probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from emotivoice.analysis.assets import ModelUnavailable
from emotivoice.config import EmotionConfig

HEADS_DIR = Path(__file__).resolve().parent / "heads"
# the default reads Whisper base's encoder layers 2-4 (issue 14: better held-out and cross-corpus UA
# than the last layer, and faster: benchmarks/emotion_midlayers.py), pooled two ways and fused (mean+std
# into a linear head, attentive pooling into a branch: held-out CREMA-D UA 0.653 -> 0.722 clean against
# the mean+std head trained on 40% of the clips, benchmarks/emotion_attentive.py); the heads it replaced
# stay loadable with emotion.head_path = MEAN_STD_HEAD or LAST_LAYER_HEAD
DEFAULT_HEAD = HEADS_DIR / "whisper-base-l234att-emotion7.npz"
MEAN_STD_HEAD = HEADS_DIR / "whisper-base-l234-emotion7.npz"
LAST_LAYER_HEAD = HEADS_DIR / "whisper-base-emotion7.npz"


@runtime_checkable
class EmotionModel(Protocol):
    name: str
    labels: tuple[str, ...]
    provisional: bool  # True until the model's card shows it meets the accuracy target

    def predict(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """One {emotion: probability} per clip, probabilities summing to 1."""
        ...


def load_emotion_model(config: EmotionConfig, model_cache_dir: Path, compute_type: str = "int8",
                       cpu_threads: int = 0) -> EmotionModel:
    """Build the configured backend.

    The default reads the Whisper encoder its head was trained on: CTranslate2's last layer (shared
    with transcription when it runs the same model and settings: load_whisper caches), or, when
    the head's card lists `layers`, those layers from the PyTorch encoder over the same model.bin.
    """
    head_path = Path(config.head_path) if config.head_path else DEFAULT_HEAD
    if config.backend == "hubert":
        from emotivoice.analysis.emotion.hubert import HubertEmotionModel, HubertEncoder

        if not config.hubert_model:
            raise ModelUnavailable("emotion backend 'hubert' needs emotion.hubert_model (hub id or directory)")
        if config.head_path:  # our head, trained with `train emotion --backbone hubert`
            from emotivoice.analysis.emotion.head import HeadModel, EmotionHead

            return HeadModel(EmotionHead.load(head_path), HubertEncoder(config.hubert_model),
                             config.speaker_norm_window)
        return HubertEmotionModel(config.hubert_model)  # a fine-tuned classifier checkpoint
    if config.backend == "whisper-head":
        from emotivoice.analysis.emotion.head import EmotionHead, HeadModel

        head = EmotionHead.load(head_path)
        return HeadModel(head, head_encoder(head.card, model_cache_dir, compute_type, cpu_threads),
                         config.speaker_norm_window)
    raise ModelUnavailable(f"unknown emotion backend {config.backend!r}: use 'whisper-head' or 'hubert'")


MIDLAYER_THREADS = 1  # the PyTorch middle-layer encoder's threads when none are configured


def head_encoder(card: dict, model_cache_dir: Path, compute_type: str = "int8", cpu_threads: int = 0):
    """The Whisper encoder a head's card names: with `layers`, those layers from the PyTorch encoder
    over the model's model.bin; without, CTranslate2's last layer (load_whisper's shared copy)."""
    name = card.get("encoder", "base")
    if card.get("layers"):
        from emotivoice.analysis.assets import whisper_model_dir
        from emotivoice.analysis.emotion.midlayers import load_midlayer_encoder

        # 0 ("let the runtime decide") means one torch thread here: a 3 s clip through layers 1-4
        # took 43 ms on one thread and 105 ms on two (Intel Xeon, 2 cores, idle machine): its
        # matrices are too small to pay for waking a second thread
        threads = cpu_threads or MIDLAYER_THREADS
        return load_midlayer_encoder(whisper_model_dir(name, model_cache_dir), tuple(card["layers"]), threads)
    from emotivoice.analysis.whisper import load_whisper

    return load_whisper(name, model_cache_dir, compute_type, cpu_threads)
