"""The fused emotion head (linear head + attentive-pooling branch) against the linear head alone and
the previous default, on the same held-out speakers' clips.

It trains the head exactly as `emotivoice train emotion` does (fused by default) (the same function, so
`--out` can write the shipped head), and scores the head it replaces on the same test clips from
the same feature caches:
- previous default: Whisper base layers 2+3+4 mean+std + eGeMAPS, logistic regression, trained on
  40% of the clips;
- linear alone: the same kind of head on every clip (the fused head's linear half);
- attentive alone: the branch over the same layers' frames (attentive.py);
- fused: the mean of the two halves' log-probabilities, the temperature fitted on validation speakers.

    python benchmarks/emotion_frames.py --fraction 1.0        # the caches, two processes (~50 min)
    python benchmarks/emotion_attentive.py --out analysis/emotion/heads/whisper-base-l234att-emotion7.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.emotion_midlayers import CORPORA  # noqa: E402


def previous_head(settings, head_path: Path, split: dict) -> dict:
    """UA per variant and scope of an existing head on the test speakers' clips (full data)."""
    from benchmarks.emotion_midlayers import corpus_clips, features
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.metrics import classification_report

    head = EmotionHead.load(head_path)
    clips = [c for c in corpus_clips(settings, 1.0) if split.get(c.speaker) == "test"]
    f = features(settings, clips, ["whisper-base-l234", "egemaps"])
    y, corpus = np.array([c.emotion for c in clips]), np.array([c.corpus for c in clips])
    out = {}
    for variant in ("clean", "phone"):
        x = np.hstack([f["whisper-base-l234"][variant], f["egemaps"][variant]])
        pred = np.array(head.labels)[head.logits(x).argmax(axis=1)]
        out[variant] = {scope: round(classification_report(y[m], pred[m], head.labels)["unweighted_average_recall"], 4)
                        for scope in ("overall", *CORPORA)
                        if (m := (corpus == scope) | (scope == "overall")).any()}
    return {"head": head_path.name, "fraction": head.card.get("fraction"), "test": out}


def main() -> None:
    from emotivoice.analysis.emotion.model import MEAN_STD_HEAD
    from emotivoice.analysis.emotion.training import train
    from emotivoice.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous", type=Path, default=MEAN_STD_HEAD,
                        help="the head to compare against (default: the mean+std head the fused one replaced)")
    parser.add_argument("--out", type=Path, help="where to write the fused head (default: a temporary file)")
    args = parser.parse_args()
    settings = load_settings()
    previous_path = args.previous
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "fused.npz"
        if out.resolve() == previous_path.resolve():
            raise SystemExit("--out would overwrite the head it is compared against")
        card = train(settings.emotion_data_dir / "manifest.csv", settings, set(CORPORA), out, layers=(2, 3, 4),
                     head_kind="linear", attentive=True)
    split = {s: p for p, speakers in card["splits"].items() for s in speakers}
    previous = previous_head(settings, previous_path, split)

    def ua(key: str) -> dict:
        return {v: {scope: round(r[key], 4) for scope, r in scopes.items()} for v, scopes in card["test"].items()}

    result = {
        "protocol": "speaker split of `train emotion` (15 CREMA-D, 4 RAVDESS, 1 TESS test speakers), every clip; "
                    "train speakers' clean + telephone copies; validation speakers choose C, the branch's epoch "
                    "and the temperature; UA on the test speakers' clips",
        "test_clips": {scope: r["n"] for scope, r in card["test"]["clean"].items()},
        "previous_default": previous,
        "linear_only": {"head": f"linear C={card['strength']:g}", "test": ua("linear_only_unweighted_average_recall")},
        "attentive_only": {"test": ua("attentive_only_unweighted_average_recall"), **card["attentive"]},
        "fused": {"head": out.name if args.out else None, "test": ua("unweighted_average_recall"),
                  "ece_clean_overall": card["test"]["clean"]["overall"]["ece"],
                  "val_unweighted_average_recall": card["attentive"]["fused_val_unweighted_average_recall"],
                  "temperature": card["temperature"]},
        "intensity": card["intensity"],
    }
    write_result("emotion_attentive", result)
    for name in ("previous_default", "linear_only", "attentive_only", "fused"):
        t = result[name]["test"]
        print(f"{name:16s} CREMA-D clean {t['clean']['cremad']:.3f} phone {t['phone']['cremad']:.3f}; "
              f"all test speakers {t['clean']['overall']:.3f} / {t['phone']['overall']:.3f}", flush=True)


if __name__ == "__main__":
    main()
