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


def corpus_clips(settings, fraction: float = 1.0):
    from emotivoice.analysis.emotion.corpus import fraction_of, read_manifest
    from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS

    listed = read_manifest(settings.emotion_data_dir / "manifest.csv", set(CORPORA))
    return fraction_of([c for c in listed if c.emotion in BASE_EMOTIONS], fraction)


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


def features(settings, clips, names, progress: bool = False, make=None,
             variants: tuple[str, ...] = ("clean", "phone")) -> dict[str, dict[str, np.ndarray]]:
    """name -> variant -> (clips, dim), from the caches (computed where missing, with `make`)."""
    from emotivoice.analysis.emotion.features import extract_many

    root = settings.data_dir / "features"
    make = make or {}
    out: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for variant in variants:
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


LINEAR_GRID = (("linear", 0.001), ("linear", 0.003), ("linear", 0.01), ("linear", 0.03), ("linear", 0.1))


def _ua(head, x, y) -> float:
    from emotivoice.analysis.emotion.metrics import classification_report

    return round(classification_report(y, np.array(head.labels)[head.logits(x).argmax(axis=1)],
                                       head.labels)["unweighted_average_recall"], 4)


def _fit(x: dict, y, train, val):
    """A head chosen as `train emotion` chooses it (linear candidates: the MLP never won), on the
    clean and telephone copies of the train clips, validation speakers choosing C and temperature."""
    from emotivoice.analysis.emotion.training import select_head

    labels = tuple(sorted(set(y[train])))
    tx = np.concatenate([x["clean"][train], x["phone"][train]])
    vx = np.concatenate([x["clean"][val], x["phone"][val]])
    return select_head(tx, np.concatenate([y[train]] * 2), vx, np.concatenate([y[val]] * 2), labels,
                       grid=LINEAR_GRID)


def held_out(x: dict, y, corpus, part) -> tuple[dict, object, dict]:
    """UA per variant and corpus on the test speakers, the head, and its per-test-speaker predictions."""
    val_ua, choice, head, _ = _fit(x, y, part == "train", part == "val")
    out = {"head": f"{choice[0]} C={choice[1]:g}", "val_ua": round(val_ua, 4)}
    preds = {}
    for variant in ("clean", "phone"):
        out[variant] = {}
        for scope in ("overall", *CORPORA):
            m = (part == "test") & ((corpus == scope) | (scope == "overall"))
            out[variant][scope] = _ua(head, x[variant][m], y[m])
        m = part == "test"
        preds[variant] = np.array(head.labels)[head.logits(x[variant][m]).argmax(axis=1)]
    return out, head, preds


def intensity(x: dict, clips, head, corpus, part) -> dict:
    """Spearman with CREMA-D's acted LO/MD/HI on its test actors: the intensity output (fitted on
    the train speakers' rated clips) against the old proxy, the probability of the acted emotion."""
    from scipy.stats import spearmanr

    from emotivoice.analysis.emotion.training import fit_intensity, intensity_targets

    level = intensity_targets(clips)
    rated = ~np.isnan(level)
    tr, va = rated & (part == "train"), rated & (part == "val")
    report = fit_intensity(head, np.concatenate([x["clean"][tr], x["phone"][tr]]), np.concatenate([level[tr]] * 2),
                           np.concatenate([x["clean"][va], x["phone"][va]]), np.concatenate([level[va]] * 2))
    test = rated & (part == "test") & (corpus == "cremad")
    emotion = np.array([head.labels.index(c.emotion) for c in np.array(clips, dtype=object)[test]])
    report["cremad_test_clips"] = int(test.sum())
    for variant in ("clean", "phone"):
        p_acted = head.probabilities(x[variant][test])[np.arange(test.sum()), emotion]
        report[variant] = {"intensity_output": round(float(spearmanr(head.intensity(x[variant][test]),
                                                                      level[test]).statistic), 4),
                           "p_of_acted_emotion": round(float(spearmanr(p_acted, level[test]).statistic), 4)}
    return report


def leave_one_corpus_out(x: dict, y, corpus, part) -> dict:
    """Train on two corpora's train speakers (val speakers choose), test on all of the third."""
    out = {}
    for held in CORPORA:
        rest = corpus != held
        _, choice, head, _ = _fit(x, y, rest & (part == "train"), rest & (part == "val"))
        test = (corpus == held) & np.isin(y, head.labels)
        out[held] = {"clips": int(test.sum()), "labels": list(head.labels), "head": f"{choice[0]} C={choice[1]:g}",
                     **{v: _ua(head, x[v][test], y[test]) for v in ("clean", "phone")}}
    return out


def bootstrap_gain(y, speakers, old_pred, new_pred, labels, corpus_mask, rounds: int = 1000) -> dict:
    """New minus old UA on the held-out speakers of one corpus, resampling speakers (paired)."""
    from emotivoice.analysis.emotion.metrics import classification_report

    rng = np.random.default_rng(0)
    ids = sorted(set(speakers[corpus_mask]))
    by = {s: np.flatnonzero(corpus_mask & (speakers == s)) for s in ids}
    gains = []
    for _ in range(rounds):
        idx = np.concatenate([by[s] for s in rng.choice(ids, len(ids))])
        gains.append(classification_report(y[idx], new_pred[idx], labels)["unweighted_average_recall"]
                     - classification_report(y[idx], old_pred[idx], labels)["unweighted_average_recall"])
    low, high = np.percentile(gains, [2.5, 97.5])
    return {"mean": round(float(np.mean(gains)), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def latency(settings, heads: dict, clips, n: int) -> dict:
    """The whole emotion step (decode excluded) per exactly-3 s clip on one thread, p50/p95."""
    import torch

    from emotivoice.analysis.assets import whisper_model_dir
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.emotion.head import HeadModel
    from emotivoice.analysis.emotion.midlayers import load_midlayer_encoder
    from emotivoice.analysis.whisper import load_whisper

    torch.set_num_threads(1)
    encoders = {"last_layer": load_whisper("base", settings.model_cache_dir, "int8", 1),
                "layers_234": load_midlayer_encoder(whisper_model_dir("base", settings.model_cache_dir), LAYERS, 1)}
    step = max(1, len(clips) // n)
    audio = [np.resize(load_audio(c.path, channels=1)[0], 48000) for c in clips[::step][:n]]
    out = {}
    for name, head in heads.items():
        head.card = {"prosody": "egemaps"}
        model = HeadModel(head, encoders[name])
        model.predict([audio[0]])  # warm
        times = []
        for clip in audio:
            clip = clip + np.float32(1e-4) * np.random.default_rng(len(times)).standard_normal(48000).astype(np.float32)
            t0 = time.perf_counter()  # fresh samples: the prosody cache must not answer
            model.predict([clip])
            times.append(time.perf_counter() - t0)
        out[name] = {"p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
                     "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1)}
    return {"utterance_s": 3.0, "clips": len(audio), "threads": 1, **out}


def measure(settings, clips, n_latency: int) -> dict:
    from emotivoice.analysis.emotion.corpus import speaker_split

    split = speaker_split([c.speaker for c in clips])
    y = np.array([c.emotion for c in clips])
    corpus = np.array([c.corpus for c in clips])
    speakers = np.array([c.speaker for c in clips])
    part = np.array([split[s] for s in speakers])
    result: dict = {"clips": len(clips), "layers": list(LAYERS),
                    "protocol": "speaker split of `train emotion`; heads: logistic regression, C and temperature "
                                "chosen on validation speakers; training on clean + telephone copies"}
    heads, preds = {}, {}
    for name, names in FEATURE_SETS.items():
        f = features(settings, clips, list(names))
        x = {v: np.hstack([f[n][v] for n in names]) for v in ("clean", "phone")}
        t0 = time.perf_counter()
        result[name], heads[name], preds[name] = held_out(x, y, corpus, part)
        result[name]["intensity_spearman"] = intensity(x, clips, heads[name], corpus, part)
        result[name]["leave_one_corpus_out"] = leave_one_corpus_out(x, y, corpus, part)
        result[name]["fit_seconds"] = round(time.perf_counter() - t0, 1)
        print(name, result[name], flush=True)
    test = part == "test"
    for variant in ("clean", "phone"):
        result[f"gain_cremad_{variant}"] = bootstrap_gain(
            y[test], speakers[test], preds["last_layer"][variant], preds["layers_234"][variant],
            heads["layers_234"].labels, corpus[test] == "cremad")
    result["latency"] = latency(settings, heads, [c for c, q in zip(clips, part) if q == "test"], n_latency)
    return result


def main() -> None:
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--extract", action="store_true", help="fill the feature caches and stop")
    parser.add_argument("--variant", choices=["clean", "phone"], help="with --extract: only this audio variant "
                        "(two processes, one per variant, write different cache files)")
    parser.add_argument("--latency-clips", type=int, default=40)
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="a fixed share of the clips (corpus.fraction_of), as `train emotion --fraction`")
    args = parser.parse_args()
    settings = load_settings()
    clips = corpus_clips(settings, args.fraction)
    if args.extract:
        make = featurizers(settings)
        t0 = time.perf_counter()
        features(settings, clips, list(make), progress=True, make=make,
                 variants=(args.variant,) if args.variant else ("clean", "phone"))
        print(f"features for {len(clips)} clips x 2 variants in {time.perf_counter() - t0:.0f} s", flush=True)
        return
    write_result("emotion_midlayers", {"fraction": args.fraction, **measure(settings, clips, args.latency_clips)})


if __name__ == "__main__":
    main()
