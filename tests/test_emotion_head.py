"""The committed emotion head reproduces its card on held-out speakers, through the real encoder."""

import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.emotion.head import EmotionHead
from emotivoice.analysis.emotion.metrics import classification_report
from emotivoice.analysis.emotion.model import DEFAULT_HEAD, load_emotion_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def head():
    return EmotionHead.load(DEFAULT_HEAD)


def test_card_describes_a_speaker_independent_split(head):
    splits = head.card["splits"]
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["val"]) & (set(splits["train"]) | set(splits["test"]))
    assert head.card["test"]["clean"]["cremad"]["unweighted_average_recall"] > 0.55  # chance is 0.17


def test_head_reproduces_its_card_on_the_fixed_test_subset(head, settings, emotion_data):
    subset = head.card["ci_subset"]
    model = load_emotion_model(settings.emotion, settings.model_cache_dir)
    predicted = []
    for rel in subset["paths"]:
        probs = model.predict([load_audio(emotion_data / rel, channels=1)[0]])[0]
        assert abs(sum(probs.values()) - 1) < 1e-4
        predicted.append(max(probs, key=probs.get))
    agreement = np.mean(np.array(predicted) == np.array(subset["predicted"]))
    assert agreement >= 0.9, f"only {agreement:.0%} of the card's predictions reproduced"
    ua = classification_report(subset["emotions"], predicted, head.labels)["unweighted_average_recall"]
    assert ua >= subset["unweighted_average_recall"] - 0.05


def test_probabilities_are_calibrated_not_raw(head):
    assert head.temperature != 1.0
    assert head.card["test"]["clean"]["overall"]["ece"] < 0.06
