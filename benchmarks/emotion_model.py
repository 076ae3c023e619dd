"""The default emotion model: latency per utterance, INT8 against float32, and intensity ordering.

- latency: 3 s utterances on this machine, standalone (encoder + head) and head only (what is
  left when the encoder output is shared with transcription), p50/p95 over held-out clips;
- int8 vs float32: the Whisper encoder under both CTranslate2 compute types, run side by side
  on the same held-out clips: speed ratio and UA with the committed head;
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
    from analysis.emotion.corpus import read_manifest
    from analysis.emotion.head import LinearHead
    from analysis.emotion.model import DEFAULT_HEAD

    head = LinearHead.load(DEFAULT_HEAD)
    test = set(head.card["splits"]["test"])
    clips = [c for c in read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad"}) if c.speaker in test]
    step = max(1, len(clips) // n)
    return head, clips, clips[::step][:n]


def percentiles(xs: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(xs, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(xs, 95)) * 1000, 1)}


def latency(head, clips, settings) -> dict:
    from analysis.audio import load_audio, normalize
    from analysis.emotion.features import pool
    from analysis.emotion.head import HeadModel
    from analysis.whisper import load_whisper

    model = HeadModel(head, load_whisper("base", settings.model_cache_dir))
    three = []
    for c in clips:
        audio = load_audio(c.path, channels=1)[0]
        three.append(np.resize(audio, 48000))  # exactly 3 s: repeat short clips, cut long ones
    standalone, head_only = [], []
    for clip in three:
        t0 = time.perf_counter()
        model.predict([clip])
        standalone.append(time.perf_counter() - t0)
        frames = model.encoder.encode(normalize(clip))
        t0 = time.perf_counter()
        head.probabilities(pool(frames))
        head_only.append(time.perf_counter() - t0)
    return {"utterance_s": 3.0, "clips": len(three), "standalone": percentiles(standalone),
            "head_only_with_shared_encoder": percentiles(head_only)}


def int8_vs_float32(head, clips, settings) -> dict:
    from analysis.audio import load_audio
    from analysis.emotion.features import pool, prepare
    from analysis.emotion.metrics import classification_report
    from analysis.whisper import load_whisper

    audio = [prepare(load_audio(c.path, channels=1)[0], "clean", 0) for c in clips]
    out = {}
    for compute_type in ("int8", "float32"):
        whisper = load_whisper("base", settings.model_cache_dir, compute_type)
        whisper.encode(audio[0])  # warm-up
        t0 = time.perf_counter()
        feats = np.stack([pool(whisper.encode(a)) for a in audio])
        seconds = time.perf_counter() - t0
        pred = np.array(head.labels)[head.probabilities(feats).argmax(axis=1)]
        ua = classification_report([c.emotion for c in clips], pred, head.labels)["unweighted_average_recall"]
        out[compute_type] = {"encoder_ms_per_clip": round(seconds / len(audio) * 1000, 1), "ua": round(ua, 4)}
    out["speedup_int8"] = round(out["float32"]["encoder_ms_per_clip"] / out["int8"]["encoder_ms_per_clip"], 2)
    out["ua_change_int8"] = round(out["int8"]["ua"] - out["float32"]["ua"], 4)
    return out


def intensity(head, clips, settings) -> dict:
    from scipy.stats import spearmanr

    from analysis.emotion.features import extract_corpus
    from analysis.whisper import load_whisper

    rated = [c for c in clips if c.intensity in {"low", "medium", "high"} and c.emotion in head.labels]
    whisper = load_whisper("base", settings.model_cache_dir)
    feats = extract_corpus([c.path for c in rated], whisper.encode,
                           settings.data_dir / "features" / whisper.name / "cremad-clean.npz", "clean", False)
    probs = head.probabilities(feats)
    p_target = np.array([probs[i, head.labels.index(c.emotion)] for i, c in enumerate(rated)])
    level = np.array([{"low": 0, "medium": 1, "high": 2}[c.intensity] for c in rated])
    report = {"clips": len(rated), "spearman_rho": round(float(spearmanr(p_target, level).statistic), 3)}
    hi, lo = p_target[level == 2], p_target[level == 0]
    report["auc_high_vs_low"] = round(float(np.mean(hi[:, None] > lo[None, :]) + 0.5 * np.mean(hi[:, None] == lo[None, :])), 3)
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
