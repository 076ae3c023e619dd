"""Sarcasm cross-check: precision and recall on sarcastic and sincere readings of positive words.

No corpus here has sarcastic speech, so the set is assembled: positive sentences ("That's just
great.") are paired with real CREMA-D readings by actors the emotion head never trained on.
Angry or disgusted readings are the sarcastic examples; happy and neutral readings are the
sincere ones. Negative sentences said angrily are added as controls (not sarcasm: the words
and the voice agree). The words are assigned, not spoken, so this measures the cross-check
(sentiment, real acoustic emotion, real prosody against the actor's own neutral baseline) and
not Whisper. The threshold is chosen on the head's validation actors and reported on its test
actors.

    python benchmarks/sarcasm.py
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

POSITIVE = ["That's just great.", "Oh, wonderful, thank you so much.", "Perfect, that's exactly what I needed.",
            "Great, I love waiting on hold.", "Sure, that's really helpful.", "Fantastic service, as always.",
            "Well, that's lovely.", "Brilliant, thanks a lot.", "Oh good, I'm so happy to hear that.",
            "Excellent, you've been a great help."]
NEGATIVE = ["This is unacceptable.", "I'm really angry about this.", "This is the worst service ever.",
            "I hate having to call again."]
SARCASTIC, SINCERE = {"anger", "disgust"}, {"happiness", "neutral"}
PER_EMOTION = 6  # clips per actor and emotion


def examples(actors: set[str], clips, model):
    """(is_sarcastic, check) for every assembled example of these actors."""
    from emotivoice.analysis.audio import load_audio, rms_dbfs
    from emotivoice.analysis.insight.prosody import Baseline, measure
    from emotivoice.analysis.insight.sarcasm import check_sarcasm
    from emotivoice.analysis.insight.sentiment import text_sentiment
    from emotivoice.config import load_settings

    config = load_settings().sarcasm
    out = []
    for actor in tqdm(sorted(actors), desc="actors", unit="actor"):
        mine = [c for c in clips if c.speaker == actor and "_IEO_" not in c.path.name]
        baseline = Baseline()
        for c in [c for c in mine if c.emotion == "neutral"][-3:]:  # the actor's own calm voice first
            audio = load_audio(c.path, channels=1)[0]
            baseline.update(measure(audio, rms_dbfs(audio), len(c.text.split())))
        for k, c in enumerate([c for e in sorted(SARCASTIC | SINCERE)
                               for c in [c for c in mine if c.emotion == e][:PER_EMOTION]]):
            audio = load_audio(c.path, channels=1)[0]
            emotions = model.predict([audio])[0]
            z = baseline.deviations(measure(audio, rms_dbfs(audio), len(c.text.split())))
            text = POSITIVE[k % len(POSITIVE)]
            out.append((c.emotion in SARCASTIC, emotions, z, text_sentiment(text), c.emotion))
            if c.emotion == "anger" and k % 2 == 0:
                neg = NEGATIVE[k % len(NEGATIVE)]
                out.append((False, emotions, z, text_sentiment(neg), "anger+negative words"))
    return out, config, check_sarcasm


def score(rows, config, check) -> dict:
    flags = [check(s, e, z, config) for _, e, z, s, _ in rows]
    truth = np.array([r[0] for r in rows])
    pred = np.array([f.is_sarcastic for f in flags])
    tp, fp, fn = int((truth & pred).sum()), int((~truth & pred).sum()), int((truth & ~pred).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    by_kind = {}
    for (t, _, _, _, kind), f in zip(rows, flags):
        by_kind.setdefault(kind, []).append(f.is_sarcastic)
    return {"examples": len(rows), "sarcastic": int(truth.sum()), "precision": round(precision, 3),
            "recall": round(recall, 3), "f1": round(2 * precision * recall / (precision + recall), 3)
            if precision + recall else 0.0, "ambiguous_share": round(float(np.mean([f.ambiguous for f in flags])), 3),
            "flagged_share_by_reading": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_kind.items())}}


def main() -> None:
    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.emotion.model import load_emotion_model
    from emotivoice.config import load_settings

    settings = load_settings()
    model = load_emotion_model(settings.emotion, settings.model_cache_dir)
    card = model.head.card
    clips = read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad"})
    dev_actors = {s for s in card["splits"]["val"] if s.startswith("cremad")}
    test_actors = {s for s in card["splits"]["test"] if s.startswith("cremad")}
    dev, config, check = examples(dev_actors, clips, model)
    grid = {t: score(dev, replace(config, threshold=t), check) for t in np.round(np.arange(0.15, 0.71, 0.025), 3)}
    best = max(grid, key=lambda t: (grid[t]["f1"], -abs(t - config.threshold)))
    test, _, _ = examples(test_actors, clips, model)
    write_result("sarcasm", {
        "set": "positive (and control negative) sentences paired with real CREMA-D readings; sarcastic = anger or "
               "disgust reading of positive words; sincere = happy or neutral reading",
        "dev_actors": len(dev_actors), "test_actors": len(test_actors),
        "configured_threshold": config.threshold, "best_dev_threshold": float(best), "dev_at_best": grid[best],
        "test_at_configured": score(test, config, check),
        "test_at_best_dev": score(test, replace(config, threshold=float(best)), check),
    })


if __name__ == "__main__":
    main()
