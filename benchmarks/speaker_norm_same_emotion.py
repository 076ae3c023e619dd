"""The case speaker_norm.py's histories leave out: a speaker who has sounded the same all call.

Each held-out CREMA-D clip is scored against 5 other clips of the same actor *and the same
emotion* (a customer angry from the first turn), by the committed per-speaker head
(whisper-base-l234-spknorm-emotion7), and without history by it and by the default head. The
"one emotion" histories of speaker_norm.py draw the emotion at random, so they rarely match the
clip's own; this measures the match. Needs the cached features speaker_norm.py uses (no encoding).

    EMOTIVOICE_DATA_DIR=<dir with features/> python benchmarks/speaker_norm_same_emotion.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

HISTORY = 5


def _recalls(labels: list[str], probs: np.ndarray, truth: np.ndarray) -> dict:
    pred = np.array(labels)[probs.argmax(axis=1)]
    recall = {e: round(float(np.mean(pred[truth == e] == e)), 3) for e in sorted(set(truth))}
    return {"ua": round(float(np.mean(list(recall.values()))), 3), "recall": recall}


def main() -> None:
    from benchmarks.speaker_norm import Data
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD, HEADS_DIR
    from emotivoice.config import load_settings

    data = Data(load_settings(), 0.4)
    default = EmotionHead.load(DEFAULT_HEAD)
    per_speaker = EmotionHead.load(HEADS_DIR / "whisper-base-l234-spknorm-emotion7.npz")
    rng = np.random.default_rng(0)
    out: dict = {}
    for variant in ("clean", "phone"):
        x = data.x[variant]
        rows, history = [], []
        for i in np.flatnonzero((data.part == "test") & (data.corpus == "cremad")):
            pool = data.by_speaker[data.speaker[i]]
            pool = pool[(pool != i) & (data.y[pool] == data.y[i])]
            if len(pool) >= HISTORY:
                rows.append(i)
                history.append(rng.choice(pool, HISTORY, replace=False))
        truth = data.y[rows]
        normalised = np.stack([per_speaker.norm.normalise(x[r], x[h]) for r, h in zip(rows, history)])
        out[variant] = {
            "clips": len(rows),
            "default_head": _recalls(default.labels, default.probabilities(x[rows]), truth),
            "spknorm_no_history": _recalls(per_speaker.labels, per_speaker.probabilities(x[rows]), truth),
            "spknorm_same_emotion_history": _recalls(per_speaker.labels, per_speaker.probabilities(normalised),
                                                     truth),
        }
    write_result("speaker_norm_same_emotion", {"history": f"{HISTORY} other clips, same actor, same emotion",
                                               "test": "held-out CREMA-D actors (the heads' split)", **out})


if __name__ == "__main__":
    main()
