"""`emotivoice evaluate emotion MANIFEST`: score the configured emotion model on labelled clips.

Reports weighted accuracy, UA, per-class F1 and the confusion matrix per corpus and overall,
on the audio as given and after telephone simulation (8 kHz mu-law). Clips whose label the
model does not have (calm, boredom) are counted apart and kept out of UA.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.emotion.corpus import Clip, read_manifest
from emotivoice.analysis.emotion.features import VARIANTS, prepare
from emotivoice.analysis.emotion.metrics import classification_report
from emotivoice.analysis.emotion.model import EmotionModel, load_emotion_model
from emotivoice.config import Settings


def evenly(clips: list[Clip], limit: int | None) -> list[Clip]:
    """At most `limit` clips per corpus, spread across its emotions and speakers."""
    if not limit:
        return clips
    out = []
    for corpus in sorted({c.corpus for c in clips}):
        mine = sorted((c for c in clips if c.corpus == corpus), key=lambda c: (c.emotion, c.speaker, c.path))
        step = max(1, len(mine) // limit)
        out += mine[::step][:limit]
    return out


def evaluate(model: EmotionModel, clips: list[Clip], progress: bool = True) -> dict:
    from tqdm import tqdm

    known = [c for c in clips if c.emotion in model.labels]
    report: dict = {"model": model.name, "labels": list(model.labels),
                    "not_in_model": dict(Counter(c.emotion for c in clips if c.emotion not in model.labels))}
    for variant in VARIANTS:
        predictions = []
        for i, clip in enumerate(tqdm(known, desc=f"evaluating {variant}", disable=not progress, unit="clip")):
            audio = prepare(load_audio(clip.path, channels=1)[0], variant, seed=i)
            probs = model.predict([audio])[0]
            predictions.append(max(probs, key=probs.get))
        y, p = np.array([c.emotion for c in known]), np.array(predictions)
        corpora = np.array([c.corpus for c in known])
        report[variant] = {"overall": classification_report(y, p, model.labels)}
        for corpus in sorted(set(corpora)):
            report[variant][corpus] = classification_report(y[corpora == corpus], p[corpora == corpus], model.labels)
    return report


def evaluate_from_args(args: argparse.Namespace, settings: Settings) -> int:
    clips = evenly(read_manifest(args.manifest), args.limit)
    tc = settings.transcription
    model = load_emotion_model(settings.emotion, settings.model_cache_dir, tc.compute_type, tc.cpu_threads)
    report = evaluate(model, clips)
    for variant in VARIANTS:
        for corpus, r in report[variant].items():
            print(f"{variant:5s} {corpus:8s} n={r['n']:5d}  UA {r['unweighted_average_recall']:.3f}  "
                  f"WA {r['weighted_accuracy']:.3f}")
    if report["not_in_model"]:
        print(f"left out of UA (labels the model lacks): {report['not_in_model']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
