"""Old head (CTranslate2's last Whisper layer + eGeMAPS) against the middle-layer head (layers
2+3+4, mean+std each, + eGeMAPS), on the same speaker splits and the same head training.

- held-out speakers (the split of `train emotion`): UA clean / telephone, per corpus;
- leave-one-corpus-out: train on two of CREMA-D, RAVDESS and TESS (their train speakers; their
  val speakers choose the head), test on every clip of the third, for both feature sets;
- latency of the whole emotion step per 3 s clip on one thread (PyTorch and CTranslate2 both
  held to one thread), p50/p95.

    python benchmarks/emotion_midlayers.py --extract   # fill the feature caches (long: ~10k clips x 2)
    python benchmarks/emotion_midlayers.py             # measure, from the caches

Features are cached under <data dir>/features/ as `train emotion` caches them, so training the
default head afterwards reads the same files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

CORPORA = ("cremad", "ravdess", "tess")
LAYERS = (2, 3, 4)
FEATURE_SETS = {"last_layer": ("whisper-base", "egemaps"), "layers_234": ("whisper-base-l234", "egemaps")}


def corpus_clips(settings):
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS

    listed = read_manifest(settings.emotion_data_dir / "manifest.csv", set(CORPORA))
    return [c for c in listed if c.emotion in BASE_EMOTIONS]


def featurizers(settings, threads: int = 1) -> dict:
    """cache folder name -> featurizer, the names `train emotion` gives the same caches."""
    import torch

    from emotivoice.analysis.assets import whisper_model_dir
    from emotivoice.analysis.emotion.features import pool
    from emotivoice.analysis.emotion.midlayers import load_midlayer_encoder
    from emotivoice.analysis.emotion.prosody import egemaps
    from emotivoice.analysis.whisper import load_whisper

    torch.set_num_threads(threads)
    mid = load_midlayer_encoder(whisper_model_dir("base", settings.model_cache_dir), LAYERS, threads)
    last = load_whisper("base", settings.model_cache_dir, "int8", threads)
    return {mid.name: lambda x: pool(mid.encode(x)), last.name: lambda x: pool(last.encode(x)), "egemaps": egemaps}


def features(settings, clips, names, progress: bool = False, make=None) -> dict[str, dict[str, np.ndarray]]:
    """name -> variant -> (clips, dim), from the caches (computed where missing, with `make`)."""
    from emotivoice.analysis.emotion.features import VARIANTS, extract_many

    root = settings.data_dir / "features"
    make = make or {}
    out: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for variant in VARIANTS:
        for corpus in CORPORA:
            idx = [i for i, c in enumerate(clips) if c.corpus == corpus]
            fz = {n: (make.get(n, _missing(n)), root / n / f"{corpus}-{variant}.npz") for n in names}
            got = extract_many([clips[i].path for i in idx], fz, variant, progress)
            for n in names:
                out[n].setdefault(variant, np.zeros((len(clips), got[n].shape[1]), np.float32))[idx] = got[n]
    return out


def _missing(name: str):
    def fail(_clip):
        raise RuntimeError(f"feature cache {name} is incomplete: run with --extract first")
    return fail


def main() -> None:
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--extract", action="store_true", help="fill the feature caches and stop")
    parser.add_argument("--latency-clips", type=int, default=40)
    args = parser.parse_args()
    settings = load_settings()
    clips = corpus_clips(settings)
    if args.extract:
        make = featurizers(settings)
        t0 = time.perf_counter()
        features(settings, clips, list(make), progress=True, make=make)
        print(f"features for {len(clips)} clips x 2 variants in {time.perf_counter() - t0:.0f} s", flush=True)
        return
    from benchmarks.emotion_midlayers_eval import measure

    write_result("emotion_midlayers", measure(settings, clips, features, args.latency_clips))


if __name__ == "__main__":
    main()
