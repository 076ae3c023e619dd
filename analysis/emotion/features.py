"""Utterance-level features for the emotion head: pooled Whisper encoder states.

Pooling is mean and standard deviation over frames (1024-d for Whisper base). Features of a
labelled corpus are cached on disk per encoder and audio variant, so retraining the head
takes minutes rather than re-running the encoder over ten thousand clips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from emotivoice.analysis.audio import load_audio, normalize
from emotivoice.analysis.emotion.telephone import telephone

Featurizer = Callable[[np.ndarray], np.ndarray]  # 16 kHz clip -> one fixed-size vector
VARIANTS = ("clean", "phone")


def pool(frames: np.ndarray) -> np.ndarray:
    """Mean and std over time: a fixed-size vector for any utterance length."""
    frames = np.asarray(frames, dtype=np.float32)
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


def prepare(samples: np.ndarray, variant: str, seed: int) -> np.ndarray:
    """The clip as the model sees it: optionally through a simulated phone line, normalised."""
    if variant == "phone":
        rng = np.random.default_rng(seed)
        samples = telephone(samples, rng, noise_dbfs=float(rng.uniform(-55, -35)),
                            gain_db=float(rng.uniform(-6, 6)))
    return normalize(samples)


def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")


def extract_corpus(paths: Sequence[Path], featurize: Featurizer, cache_file: Path, variant: str = "clean",
                   progress: bool = True) -> np.ndarray:
    """One feature vector per path, reusing and extending `cache_file` (an .npz)."""
    return extract_many(paths, {"features": (featurize, cache_file)}, variant, progress)["features"]


def _load_cache(cache_file: Path) -> dict[str, np.ndarray]:
    if not cache_file.is_file():
        return {}
    with np.load(cache_file, allow_pickle=False) as data:
        return dict(zip(data["keys"].tolist(), data["features"]))


def extract_many(paths: Sequence[Path], featurizers: dict[str, tuple[Featurizer, Path]], variant: str = "clean",
                 progress: bool = True) -> dict[str, np.ndarray]:
    """name -> (paths, dim) for several featurizers, each with its own cache file: a clip that any
    of them lacks is decoded and put through the phone line once, for all of them."""
    from tqdm import tqdm

    cached = {name: _load_cache(cache_file) for name, (_, cache_file) in featurizers.items()}
    keys = [str(p) for p in paths]
    missing = [k for k in keys if any(k not in c for c in cached.values())]
    for i, key in enumerate(tqdm(missing, desc=f"encoding {variant}", disable=not progress, unit="clip",
                                 mininterval=30)):
        clip = prepare(load_audio(key, channels=1)[0], variant, _stable_seed(key))
        for name, (featurize, _) in featurizers.items():
            if key not in cached[name]:
                cached[name][key] = featurize(clip)
        if (i + 1) % 500 == 0 or i + 1 == len(missing):
            for name, (_, cache_file) in featurizers.items():
                _save(cache_file, cached[name])
    return {name: np.stack([cached[name][k] for k in keys]) for name in featurizers}


def _save(cache_file: Path, cached: dict[str, np.ndarray]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, keys=np.array(list(cached)), features=np.stack(list(cached.values())))
    tmp.replace(cache_file)
