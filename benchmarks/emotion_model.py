"""The default emotion model: latency per utterance, INT8 against float32, and intensity ordering.

- latency: 3 s utterances on this machine, standalone (encoder + head) and head only (what is
  left when the encoder output is shared with transcription), p50/p95 over held-out clips;
- int8 vs float32: the Whisper encoder under both CTranslate2 compute types, run side by side
  on the same held-out clips: speed ratio (whole emotion step) and UA with the committed head;
- intensity: how well the predicted probability of the acted emotion orders CREMA-D's
  LO < MD < HI takes ("It's eleven o'clock", held-out actors), as Spearman's rho and the AUC of
  HI against LO, and the band thresholds that best separate them.

    python benchmarks/emotion_model.py [--clips 120]
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


def held_out(settings, n: int):
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD

    head = EmotionHead.load(DEFAULT_HEAD)
    test = set(head.card["splits"]["test"])
    clips = [c for c in read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad"}) if c.speaker in test]
    step = max(1, len(clips) // n)
    return head, clips, clips[::step][:n]


def percentiles(xs: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(xs, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(xs, 95)) * 1000, 1)}


def latency(head, clips, settings) -> dict:
    from emotivoice.analysis.audio import load_audio, normalize
    from emotivoice.analysis.emotion.features import pool
    from emotivoice.analysis.emotion.head import HeadModel
    from emotivoice.analysis.emotion.model import head_encoder
    from emotivoice.analysis.emotion.prosody import egemaps

    model = HeadModel(head, head_encoder(head.card, settings.model_cache_dir))
    three = [np.resize(load_audio(c.path, channels=1)[0], 48000) for c in clips]  # exactly 3 s
    standalone, shared = [], []
    for clip in three:
        t0 = time.perf_counter()
        model.predict([clip])
        standalone.append(time.perf_counter() - t0)
        clip = normalize(clip)
        frames = model.encoder.encode(clip)  # what transcription would hand over
        t0 = time.perf_counter()
        vector = pool(frames)
        if head.card.get("prosody"):
            vector = np.concatenate([vector, egemaps(clip)])
        head.probabilities(vector)
        shared.append(time.perf_counter() - t0)
    return {"utterance_s": 3.0, "clips": len(three), "standalone": percentiles(standalone),
            "with_shared_encoder_output": percentiles(shared)}


def int8_vs_float32(head, clips, settings) -> dict:
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.emotion.head import HeadModel
    from emotivoice.analysis.emotion.metrics import classification_report
    from emotivoice.analysis.whisper import load_whisper

    if head.card.get("layers"):  # the middle-layer encoder is PyTorch float32: no CTranslate2 compute type
        return {"skipped": "the head reads middle layers from the PyTorch encoder (float32 only)"}
    audio = [load_audio(c.path, channels=1)[0] for c in clips]
    out = {}
    for compute_type in ("int8", "float32"):
        model = HeadModel(head, load_whisper("base", settings.model_cache_dir, compute_type))
        t0 = time.perf_counter()
        probs = model.predict(audio)
        seconds = time.perf_counter() - t0
        pred = [max(p, key=p.get) for p in probs]
        ua = classification_report([c.emotion for c in clips], pred, head.labels)["unweighted_average_recall"]
        out[compute_type] = {"ms_per_clip": round(seconds / len(audio) * 1000, 1), "ua": round(ua, 4)}
    out["speedup_int8"] = round(out["float32"]["ms_per_clip"] / out["int8"]["ms_per_clip"], 2)
    out["ua_change_int8"] = round(out["int8"]["ua"] - out["float32"]["ua"], 4)
    return out


def intensity(head, clips, settings) -> dict:
    from scipy.stats import spearmanr

    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.emotion.head import HeadModel
    from emotivoice.analysis.emotion.model import head_encoder

    rated = [c for c in clips if c.intensity in {"low", "medium", "high"} and c.emotion in head.labels]
    model = HeadModel(head, head_encoder(head.card, settings.model_cache_dir))
    probs = model.predict([load_audio(c.path, channels=1)[0] for c in rated])
    p_target = np.array([p[c.emotion] for p, c in zip(probs, rated)])
    level = np.array([{"low": 0, "medium": 1, "high": 2}[c.intensity] for c in rated])
    report = {"clips": len(rated), "spearman_rho": round(float(spearmanr(p_target, level).statistic), 3)}
    hi, lo = p_target[level == 2], p_target[level == 0]
    ties = np.mean(hi[:, None] == lo[None, :])
    report["auc_high_vs_low"] = round(float(np.mean(hi[:, None] > lo[None, :]) + 0.5 * ties), 3)
    report["median_p_by_level"] = {name: round(float(np.median(p_target[level == k])), 3)
                                   for k, name in enumerate(("low", "medium", "high"))}

    def best_threshold(positive: np.ndarray) -> float:
        grid = np.linspace(0.05, 0.95, 91)
        return float(max(grid, key=lambda t: np.mean(p_target[positive] >= t) + np.mean(p_target[~positive] < t)))

    report["suggested_high_threshold"] = round(best_threshold(level == 2), 2)
    report["suggested_low_threshold"] = round(best_threshold(level >= 1), 2)
    report["per_emotion_spearman"] = {
        e: round(float(spearmanr(p_target[m], level[m]).statistic), 3)
        for e in sorted({c.emotion for c in rated}) for m in [np.array([c.emotion == e for c in rated])]}
    return report


def main() -> None:
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=120)
    args = parser.parse_args()
    settings = load_settings()
    head, test_clips, sample = held_out(settings, args.clips)
    write_result("emotion_model", {
        "head": head.card["name"], "latency": latency(head, sample[:60], settings),
        "int8_vs_float32": int8_vs_float32(head, sample, settings),
        "intensity": intensity(head, test_clips, settings)})


if __name__ == "__main__":
    main()
