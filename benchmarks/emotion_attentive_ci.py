"""How sure is the fused head's gain? Paired bootstrap over the held-out CREMA-D actors.

Scores the committed heads (the fused default and the mean+std head it replaced) on every clip of
their test speakers from the feature caches (benchmarks/emotion_frames.py), then resamples the 15
CREMA-D actors 1,000 times: new minus old UA, mean and 95% interval, clean and telephone; also the
fused head against its own linear half (what the attentive branch adds).

    python benchmarks/emotion_attentive_ci.py     # a minute, from the caches
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.emotion_frames import CORPORA, frames_cache  # noqa: E402
from benchmarks.emotion_midlayers import bootstrap_gain, corpus_clips, features  # noqa: E402


def main() -> None:
    from emotivoice.analysis.emotion.attentive import load_frames
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.metrics import classification_report
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD, MEAN_STD_HEAD
    from emotivoice.analysis.emotion.prosody import EGEMAPS_DIM
    from emotivoice.config import load_settings

    settings = load_settings()
    fused, old = EmotionHead.load(DEFAULT_HEAD), EmotionHead.load(MEAN_STD_HEAD)
    test = set(fused.card["splits"]["test"])
    clips = [c for c in corpus_clips(settings, 1.0) if c.speaker in test]
    f = features(settings, clips, ["whisper-base-l234", "egemaps"])
    y = np.array([c.emotion for c in clips])
    speakers, corpus = np.array([c.speaker for c in clips]), np.array([c.corpus for c in clips])
    labels = fused.labels
    result = {"heads": {"new": DEFAULT_HEAD.name, "old": MEAN_STD_HEAD.name}, "rounds": 1000,
              "speakers": sorted(set(speakers[corpus == "cremad"]))}
    for variant in ("clean", "phone"):
        x = np.hstack([f["whisper-base-l234"][variant], f["egemaps"][variant]])
        cached = {}
        for name in CORPORA:
            cached |= load_frames(frames_cache(settings) / f"{name}-{variant}.npz")
        att = np.stack([fused.attentive.logits(cached[str(c.path)], x[i, -EGEMAPS_DIM:]) for i, c in enumerate(clips)])
        preds = {"fused": np.array(labels)[fused.fused_logits(x, att).argmax(1)],
                 "linear_half": np.array(labels)[fused.logits(x).argmax(1)],
                 "old": np.array(old.labels)[old.logits(x).argmax(1)]}
        cremad = corpus == "cremad"
        result[variant] = {
            "ua": {k: round(classification_report(y[cremad], p[cremad], labels)["unweighted_average_recall"], 4)
                   for k, p in preds.items()},
            "fused_minus_old": bootstrap_gain(y, speakers, preds["old"], preds["fused"], labels, cremad),
            "fused_minus_linear_half": bootstrap_gain(y, speakers, preds["linear_half"], preds["fused"], labels,
                                                      cremad),
        }
        print(variant, result[variant], flush=True)
    write_result("emotion_attentive_ci", result)


if __name__ == "__main__":
    main()
