"""The committed per-speaker head through the real encoder: a speaker's first utterance is scored
on the global statistics, later ones against that speaker's earlier speech, and window 0 turns it off."""

from dataclasses import replace

import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.emotion.model import HEADS_DIR, load_emotion_model

pytestmark = pytest.mark.slow

SPKNORM_HEAD = HEADS_DIR / "whisper-base-l234-spknorm-emotion7.npz"


@pytest.fixture(scope="module")
def clips(manifest):
    """Six clips of one held-out CREMA-D actor: the last is scored, the others are its history."""
    mine = [c for c in manifest if c.speaker == "cremad-1001" and "_IEO_" not in c.path.name][:6]
    return [load_audio(c.path, channels=1)[0] for c in mine]


def test_history_changes_the_scores_and_its_absence_does_not(settings, clips):
    model = load_emotion_model(replace(settings.emotion, head_path=str(SPKNORM_HEAD), speaker_norm_window=5),
                               settings.model_cache_dir, cpu_threads=1)
    assert model.head.norm is not None and model.head.norm.mean.shape == model.head.mean.shape
    target, history = clips[-1], clips[:-1]
    alone = model.predict([target])[0]
    first = model.predict([target], [("call", "customer")], [False])[0]  # no history yet: the global statistics
    assert max(abs(first[k] - alone[k]) for k in alone) < 1e-6
    model.predict(history, [("call", "customer")] * len(history))
    after = model.predict([target], [("call", "customer")], [False])[0]
    assert abs(sum(after.values()) - 1) < 1e-4
    assert sum(abs(after[k] - alone[k]) for k in alone) > 0.02, "five earlier utterances left the scores as they were"
    assert model.predict([target], [("call", "agent")])[0] == pytest.approx(alone, abs=1e-6)  # another leg
    model.forget("call")
    assert model.predict([target], [("call", "customer")])[0] == pytest.approx(alone, abs=1e-6)
    off = load_emotion_model(replace(settings.emotion, head_path=str(SPKNORM_HEAD), speaker_norm_window=0),
                             settings.model_cache_dir, cpu_threads=1)
    off.predict(history, [("call", "customer")] * len(history))
    np.testing.assert_allclose(list(off.predict([target], [("call", "customer")])[0].values()),
                               list(alone.values()), atol=1e-6)
