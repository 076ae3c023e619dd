"""Does `emotivoice recalibrate` help a deployment whose voices the head never heard?

A head of the configured default head's kind (the same features: its card's encoder layers and
eGeMAPS; linear, with its card's strength) is trained on CREMA-D alone (its train actors, as
`train emotion` does, clean audio; the temperature on its validation actors), so RAVDESS and TESS,
which the shipped head did hear, stand in for a new deployment's corpus that this one did not.
Coaches there review utterances at random and label them; 25, 100 and 400 such corrections
(grouped ten to a "call" of one speaker, as a review would) are fitted with the real
`analysis.emotion.recalibration.fit_calibration`, and UA is measured on all the other utterances
of the same corpus's speakers, before and after. Five draws per size; mean and range reported.
A refused fit (the held-back check) counts as "no change".

    python benchmarks/recalibration.py [--per-actor 40] [--draws 5] [--name recalibration] [--strength C]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

SIZES = (25, 100, 400)


def features(clips, settings, card: dict, progress: bool) -> tuple[np.ndarray, list]:
    """The default head's inputs (its card's encoder and layers, + eGeMAPS when it uses them), cached
    as `train emotion` caches them (<data dir>/features/<encoder>/, egemaps/), clean audio."""
    from emotivoice.analysis.emotion.features import extract_many
    from emotivoice.analysis.emotion.model import head_encoder
    from emotivoice.analysis.emotion.training import featurizers_for

    featurizers = featurizers_for(head_encoder(card, settings.model_cache_dir, "int8", 1),
                                  card.get("prosody") == "egemaps", settings.data_dir / "features")
    out, order = [], []
    for corpus in sorted({c.corpus for c in clips}):
        mine = [c for c in clips if c.corpus == corpus]
        parts = extract_many([c.path for c in mine],
                             {n: (f, d / f"{corpus}-clean.npz") for n, (f, d) in featurizers.items()},
                             "clean", progress)
        out.append(np.hstack([parts[n] for n in featurizers]))
        order += mine
    return np.concatenate(out), order


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-actor", type=int, default=40, help="CREMA-D training clips per actor")
    parser.add_argument("--unseen-per-speaker", type=int, default=300)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--name", default="recalibration")
    parser.add_argument("--strength", type=float, default=0.0, help="logistic C; 0: the default head's card")
    args = parser.parse_args()

    from emotivoice.analysis.emotion.corpus import read_manifest, speaker_split
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.metrics import classification_report, fit_temperature
    from emotivoice.analysis.emotion.recalibration import Correction, RecalibrationRefused, fit_calibration
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD
    from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS
    from emotivoice.analysis.emotion.training import fit_head
    from emotivoice.config import load_settings

    settings = load_settings()
    # the features and head family of the configured default head, refitted on CREMA-D alone
    card = EmotionHead.load(Path(settings.emotion.head_path) if settings.emotion.head_path else DEFAULT_HEAD).card
    strength = float(args.strength or card.get("strength", 0.003))
    listed = [c for c in read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad", "ravdess", "tess"})
              if c.emotion in BASE_EMOTIONS]
    rng = np.random.default_rng(7)
    chosen = []
    for speaker in sorted({c.speaker for c in listed}):
        mine = [c for c in listed if c.speaker == speaker]
        limit = args.per_actor if mine[0].corpus == "cremad" else args.unseen_per_speaker
        chosen += [mine[i] for i in sorted(rng.permutation(len(mine))[:limit])]
    x, clips = features(chosen, settings, card, progress=True)
    y = np.array([c.emotion for c in clips])
    corpus = np.array([c.corpus for c in clips])
    speaker = np.array([c.speaker for c in clips])
    split = speaker_split(sorted({c.speaker for c in clips if c.corpus == "cremad"}))
    part = np.array([split.get(s, "unseen") for s in speaker])
    labels = tuple(sorted(set(y[corpus == "cremad"])))
    head = fit_head(x[part == "train"], y[part == "train"], labels, "linear", strength)
    head.temperature = fit_temperature(head.logits(x[part == "val"]),
                                       np.array([labels.index(v) for v in y[part == "val"]]))
    probs = head.probabilities(x)

    def ua(mask: np.ndarray, p: np.ndarray) -> float:
        pred = np.array(labels)[p[mask].argmax(axis=1)]
        return classification_report(y[mask], pred, labels)["unweighted_average_recall"]

    results: dict = {"head": {"features_of": card.get("name"), "layers": card.get("layers"),
                              "prosody": card.get("prosody"), "linear_strength": strength,
                              "trained_on": "cremad train actors", "clips": int((part == "train").sum()),
                              "cremad_test_ua": round(ua(part == "test", probs), 4)}, "corpora": {}}
    for target in ("ravdess", "tess"):
        idx = np.flatnonzero(corpus == target)
        row = {"utterances": int(len(idx)), "speakers": int(len(set(speaker[idx]))),
               "ua_before": round(ua(corpus == target, probs), 4)}
        for n in SIZES:
            gains, refused, afters = [], 0, []
            for draw in range(args.draws):
                pick = np.random.default_rng(100 * n + draw).permutation(idx)[:n]
                # ten reviewed utterances of one speaker make one "call"
                calls = {i: f"{speaker[i]}-{k // 10}" for k, i in enumerate(sorted(pick, key=lambda j: speaker[j]))}
                corrections = [Correction(dict(zip(labels, map(float, probs[i]))), y[i], calls[i]) for i in pick]
                rest = np.zeros(len(y), bool)
                rest[idx] = True
                rest[pick] = False
                before = ua(rest, probs)
                try:
                    cal = fit_calibration(corrections)
                    after_p = np.array([[cal.apply(dict(zip(labels, p)))[k] for k in labels] for p in probs])
                    after = ua(rest, after_p)
                except RecalibrationRefused:
                    refused += 1
                    after = before
                gains.append(after - before)
                afters.append(after)
            row[f"corrections_{n}"] = {"ua_after_mean": round(float(np.mean(afters)), 4),
                                       "gain_mean": round(float(np.mean(gains)), 4),
                                       "gain_min": round(float(np.min(gains)), 4),
                                       "gain_max": round(float(np.max(gains)), 4), "refused": refused}
            print(target, n, row[f"corrections_{n}"], flush=True)
        results["corpora"][target] = row
    write_result(args.name, {"benchmark": "recalibration", "draws": args.draws, **results})


if __name__ == "__main__":
    main()
