"""The configured default emotion head: latency per utterance, its encoder's precision, and intensity.

- latency: exactly-3 s utterances of held-out actors: the whole step (HeadModel.predict: encoder +
  eGeMAPS + head), and on other clips the same step split into encoder (normalise, mel, encoder,
  the head's layers), eGeMAPS and head (pooling, probabilities, intensity), p50/p95 of wall and
  process CPU time; once as served (torch on one thread, numpy's BLAS pool as it is) and once with
  every BLAS/OpenMP pool held to one thread. Every timed clip is a different recording: eGeMAPS
  results are cached by clip content (prosody.py), so a clip timed twice would time a dictionary
  lookup the second time;
- precision: for a head on CTranslate2's last layer, the Whisper encoder under int8 and float32 side
  by side on the same held-out clips (speed of the whole step, UA with the head; the prosody cache
  is emptied before each pass). A head whose card lists `layers` reads them from the PyTorch encoder
  (midlayers.py), which is float32 only: then its speed and UA on those clips are reported instead;
- intensity: how well the head orders CREMA-D's LO < MD < HI takes ("It's eleven o'clock", held-out
  actors), clean and through the simulated phone line: its own intensity output (predict, then
  intensity_of, what the granular tier bands by) and, beside it, the probability of the acted
  emotion (what the bands followed before): Spearman's rho, AUC of HI against LO, per emotion, and
  how often the band the 0.3 / 0.7 thresholds give matches the acted level.

    python benchmarks/emotion_model.py [--clips 120] [--latency-clips 60]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

LEVELS = ("low", "medium", "high")


def held_out(settings, n: int):
    """The default head, all its CREMA-D test actors' clips, and an even sample of n of them."""
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD

    head_path = Path(settings.emotion.head_path) if settings.emotion.head_path else DEFAULT_HEAD
    head = EmotionHead.load(head_path)
    test = set(head.card["splits"]["test"])
    clips = [c for c in read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad"}) if c.speaker in test]
    step = max(1, len(clips) // n)
    return head, clips, clips[::step][:n]


def percentiles(xs: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(xs, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(xs, 95)) * 1000, 1)}


def _digest(samples: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(samples, dtype=np.float32).tobytes(), digest_size=16).digest()


def _passes(model, whole_clips, split_clips) -> dict:
    """The whole step timed on one set of clips, its parts on another: wall and process CPU time."""
    from emotivoice.analysis.audio import normalize
    from emotivoice.analysis.emotion.attentive import downsample
    from emotivoice.analysis.emotion.features import pool
    from emotivoice.analysis.emotion.prosody import egemaps

    whole, whole_cpu = [], []
    for clip in whole_clips:
        t0, c0 = time.perf_counter(), time.process_time()
        model.predict([clip])
        whole.append(time.perf_counter() - t0)
        whole_cpu.append(time.process_time() - c0)
    head, prosody = model.head, model.head.card.get("prosody") == "egemaps"
    parts: dict[str, list[float]] = {"encoder": [], "egemaps": [], "head": []}
    cpu: dict[str, list[float]] = {"encoder": [], "egemaps": [], "head": []}
    for clip in split_clips:
        t0, c0 = time.perf_counter(), time.process_time()
        clip = normalize(clip)
        frames = model.encoder.encode(clip)
        t1, c1 = time.perf_counter(), time.process_time()
        prosodic = egemaps(clip) if prosody else np.zeros(0, np.float32)
        t2, c2 = time.perf_counter(), time.process_time()
        vector = np.concatenate([pool(frames), prosodic])
        branch = None if head.attentive is None else head.attentive.logits(downsample(frames), prosodic)[None]
        head.probabilities(vector, attentive_logits=branch)  # a fused head's attentive branch counts as head
        head.intensity(vector)
        t3, c3 = time.perf_counter(), time.process_time()
        for name, wall, used in (("encoder", t1 - t0, c1 - c0), ("egemaps", t2 - t1, c2 - c1),
                                 ("head", t3 - t2, c3 - c2)):
            parts[name].append(wall)
            cpu[name].append(used)
    split = {name: percentiles(xs) for name, xs in parts.items()}
    split["sum"] = percentiles([sum(xs) for xs in zip(*parts.values())])
    split["without_encoder"] = percentiles([e + h for e, h in zip(parts["egemaps"], parts["head"])])
    split["cpu_time"] = {name: percentiles(xs) for name, xs in cpu.items()}
    # process CPU time above wall time means more than one thread ran: torch is held to one, but
    # numpy's OpenBLAS (the mel filterbank's matrix product) and native libraries keep their own pools
    return {"whole_step": percentiles(whole), "whole_step_cpu_time": percentiles(whole_cpu), "split": split}


def latency(model, clips, n: int) -> dict:
    """Exactly-3 s held-out clips, none timed twice (see above): as served (torch on one thread,
    other thread pools as they are), then with every BLAS/OpenMP pool held to one thread."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from emotivoice.analysis.audio import load_audio

    step = max(1, len(clips) // (4 * n))
    three = [np.resize(load_audio(c.path, channels=1)[0], 48000) for c in clips[::step][:4 * n]]  # exactly 3 s
    if len({_digest(a) for a in three}) != len(three) or len(three) < 4 * n:
        raise SystemExit(f"need {4 * n} distinct held-out clips, got {len({_digest(a) for a in three})}")
    model.predict([np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1])  # warm, untimed
    load_before = os.getloadavg()[0]
    pools = {f"{p['internal_api']} ({Path(p['filepath']).name})": p["num_threads"] for p in threadpool_info()}
    out = {"utterance_s": 3.0, "clips_per_pass": n, "encoder": model.encoder.name,
           "encoder_threads": getattr(model.encoder, "threads", None), "torch_threads": torch.get_num_threads(),
           "as_served": {"thread_pools": pools, **_passes(model, three[:n], three[n:2 * n])}}
    with threadpool_limits(limits=1):
        out["one_thread"] = {"thread_pools": "every BLAS and OpenMP pool limited to 1 (threadpoolctl)",
                             **_passes(model, three[2 * n:3 * n], three[3 * n:])}
    out["load_average_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    out["note"] = ("split.without_encoder is what is left when the encoder output is shared with transcription: "
                   "possible only for a last-layer (CTranslate2) head; the middle-layer encoder is its own "
                   "PyTorch copy and always runs")
    return out


def _ua(head, clips, probs) -> float:
    from emotivoice.analysis.emotion.metrics import classification_report

    pred = [max(p, key=p.get) for p in probs]
    return round(classification_report([c.emotion for c in clips], pred, head.labels)["unweighted_average_recall"], 4)


def precision(head, model, clips, settings) -> dict:
    """int8 against float32 for a CTranslate2 last-layer head; the PyTorch float32 figures otherwise."""
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.emotion import prosody
    from emotivoice.analysis.emotion.head import HeadModel
    from emotivoice.analysis.whisper import load_whisper

    audio = [load_audio(c.path, channels=1)[0] for c in clips]
    clips = [c for c, a in zip(clips, audio) if c.emotion in head.labels]
    audio = [a for c, a in zip(clips, audio) if c.emotion in head.labels]

    def timed(m) -> tuple[float, float]:
        prosody._recent.clear()  # the same clips in each pass: eGeMAPS must be computed, not looked up
        t0 = time.perf_counter()
        probs = m.predict(audio)
        return round((time.perf_counter() - t0) / len(audio) * 1000, 1), _ua(head, clips, probs)

    if head.card.get("layers"):
        ms, ua = timed(model)
        return {"encoder": f"PyTorch float32 (midlayers.py), layers {head.card['layers']}: no int8 or other "
                           "compute type; int8 vs float32 applies to CTranslate2 last-layer heads only",
                "float32": {"ms_per_clip": ms, "ua": ua, "clips": len(audio)}}
    out = {}
    for compute_type in ("int8", "float32"):
        ms, ua = timed(HeadModel(head, load_whisper("base", settings.model_cache_dir, compute_type, 1)))
        out[compute_type] = {"ms_per_clip": ms, "ua": ua}
    out["clips"] = len(audio)
    out["speedup_int8"] = round(out["float32"]["ms_per_clip"] / out["int8"]["ms_per_clip"], 2)
    out["ua_change_int8"] = round(out["int8"]["ua"] - out["float32"]["ua"], 4)
    return out


def ordering(score: np.ndarray, level: np.ndarray, emotions: np.ndarray, high: float, low: float) -> dict:
    """Spearman, AUC of HI over LO, medians, per-emotion Spearman and band agreement of one score."""
    from scipy.stats import spearmanr

    hi, lo = score[level == 2], score[level == 0]
    ties = np.mean(hi[:, None] == lo[None, :])
    band = np.where(score >= high, 2, np.where(score >= low, 1, 0))

    def best_threshold(positive: np.ndarray) -> float:
        grid = np.linspace(0.05, 0.95, 91)
        return float(max(grid, key=lambda t: np.mean(score[positive] >= t) + np.mean(score[~positive] < t)))

    return {"spearman_rho": round(float(spearmanr(score, level).statistic), 3),
            "auc_high_vs_low": round(float(np.mean(hi[:, None] > lo[None, :]) + 0.5 * ties), 3),
            "median_by_level": {name: round(float(np.median(score[level == k])), 3) for k, name in enumerate(LEVELS)},
            "per_emotion_spearman": {e: round(float(spearmanr(score[emotions == e], level[emotions == e]).statistic), 3)
                                     for e in sorted(set(emotions))},
            "band_matches_level": round(float(np.mean(band == level)), 3),
            "band_by_level": {name: {b: int(np.sum((level == k) & (band == j))) for j, b in enumerate(LEVELS)}
                              for k, name in enumerate(LEVELS)},
            "suggested_high_threshold": round(best_threshold(level == 2), 2),
            "suggested_low_threshold": round(best_threshold(level >= 1), 2)}


def intensity(head, model, clips, high: float, low: float) -> dict:
    """The intensity output and the acted emotion's probability against the acted level, per variant."""
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.emotion.features import prepare

    rated = [c for c in clips if c.intensity in LEVELS and c.emotion in head.labels and c.emotion != "neutral"]
    level = np.array([LEVELS.index(c.intensity) for c in rated])
    emotions = np.array([c.emotion for c in rated])
    raw = [load_audio(c.path, channels=1)[0] for c in rated]
    report: dict = {"clips": len(rated), "by_level": {name: int(np.sum(level == k)) for k, name in enumerate(LEVELS)},
                    "bands": {"high": high, "low": low}}
    for variant in ("clean", "phone"):
        audio = [prepare(a, variant, seed=i) for i, a in enumerate(raw)]
        probs, levels = [], []
        for i in range(0, len(audio), 32):  # intensity_of remembers the last 256 clips: ask after each batch
            batch = audio[i:i + 32]
            probs += model.predict(batch)
            levels += [model.intensity_of(a) for a in batch]
        p_target = np.array([p[c.emotion] for p, c in zip(probs, rated)])
        row = {"probability": ordering(p_target, level, emotions, high, low)}
        if all(v is not None for v in levels):
            row["intensity_output"] = ordering(np.array(levels, dtype=float), level, emotions, high, low)
        else:
            row["intensity_output"] = "the head has no intensity output"
        report[variant] = row
    return report


def main() -> None:
    import torch

    from emotivoice.analysis.emotion.head import HeadModel
    from emotivoice.analysis.emotion.model import head_encoder
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=120, help="held-out clips for the precision check")
    parser.add_argument("--latency-clips", type=int, default=60, help="clips per latency pass (four passes)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread throughout: the target is per utterance on one thread
    settings = load_settings()
    head, test_clips, sample = held_out(settings, args.clips)
    # one thread for either encoder (the middle-layer one defaults to one; CTranslate2 is told)
    model = HeadModel(head, head_encoder(head.card, settings.model_cache_dir, "int8", 1))
    write_result("emotion_model", {
        "head": head.card["name"], "layers": head.card.get("layers"), "prosody": head.card.get("prosody"),
        "latency": latency(model, test_clips, args.latency_clips),
        "precision": precision(head, model, sample, settings),
        "intensity": intensity(head, model, test_clips, settings.emotion.high_intensity,
                               settings.emotion.low_intensity)})


if __name__ == "__main__":
    main()
