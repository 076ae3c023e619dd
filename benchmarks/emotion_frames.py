"""Fill the emotion feature caches from one pass over the labelled corpora, two processes wide.

Per clip and audio variant (clean, telephone copy) it writes what `train emotion` reads
(mean+std pooled Whisper base layers 2+3+4, eGeMAPS) and, for heads that pool over time
themselves, the frame-level states of those layers (float16, adjacent frames averaged to 25/s:
3 x 512 values per 40 ms, about 3 GB for every clip twice).

    python benchmarks/emotion_frames.py --fraction 1.0 --workers 2

A pass is resumable: clips already in every cache are skipped, and the caches are saved every
1,500 clips.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.emotion_midlayers import CORPORA, LAYERS  # noqa: E402

_worker = {}


def frames_cache(settings) -> Path:
    """The frame caches `train emotion` reads for the default encoder (Whisper base, layers 2-4)."""
    from emotivoice.analysis.emotion.attentive import frames_folder

    return frames_folder(settings.data_dir / "features", "whisper-base-l" + "".join(map(str, LAYERS)))


def _init() -> None:
    import torch

    from emotivoice.analysis.assets import whisper_model_dir
    from emotivoice.analysis.emotion.midlayers import load_midlayer_encoder
    from emotivoice.config import load_settings

    torch.set_num_threads(1)
    settings = load_settings()
    _worker["encoder"] = load_midlayer_encoder(whisper_model_dir("base", settings.model_cache_dir), LAYERS, 1)


def _one(job: tuple[str, str]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.emotion.attentive import downsample
    from emotivoice.analysis.emotion.features import _stable_seed, pool, prepare
    from emotivoice.analysis.emotion.prosody import egemaps

    key, variant = job
    clip = prepare(load_audio(key, channels=1)[0], variant, _stable_seed(key))
    states = _worker["encoder"].encode(clip)
    return key, downsample(states).astype(np.float16), pool(states), egemaps(clip)


def extract(settings, clips, workers: int) -> None:
    from emotivoice.analysis.emotion.attentive import load_frames, save_frames
    from emotivoice.analysis.emotion.features import _load_cache, _save

    root = settings.data_dir / "features"
    for variant in ("clean", "phone"):
        for corpus in CORPORA:
            keys = [str(c.path) for c in clips if c.corpus == corpus]
            files = {"frames": frames_cache(settings) / f"{corpus}-{variant}.npz",
                     "pooled": root / "whisper-base-l234" / f"{corpus}-{variant}.npz",
                     "egemaps": root / "egemaps" / f"{corpus}-{variant}.npz"}
            cached = {"frames": load_frames(files["frames"]), "pooled": _load_cache(files["pooled"]),
                      "egemaps": _load_cache(files["egemaps"])}
            missing = [k for k in keys if any(k not in c for c in cached.values())]
            print(f"{corpus} {variant}: {len(keys)} clips, {len(missing)} to encode", flush=True)
            started = time.perf_counter()
            with ProcessPoolExecutor(workers, initializer=_init) as pool:
                for i, (key, frames, pooled, prosody) in enumerate(
                        pool.map(_one, [(k, variant) for k in missing], chunksize=8)):
                    cached["frames"][key], cached["pooled"][key], cached["egemaps"][key] = frames, pooled, prosody
                    done = i + 1
                    if done % 1500 == 0 or done == len(missing):
                        save_frames(files["frames"], cached["frames"])
                        _save(files["pooled"], cached["pooled"])
                        _save(files["egemaps"], cached["egemaps"])
                        rate = done / (time.perf_counter() - started)
                        print(f"  {done}/{len(missing)} ({rate:.1f} clips/s)", flush=True)


def main() -> None:
    from benchmarks.emotion_midlayers import corpus_clips
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    settings = load_settings()
    extract(settings, corpus_clips(settings, args.fraction), args.workers)


if __name__ == "__main__":
    main()
