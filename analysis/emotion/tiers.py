"""The three emotion tiers: base probabilities -> granular labels by intensity -> complex blends.

Intensity is the model's own calibrated probability for that emotion. The granular names follow
the seed (anger >= 0.7 -> rage/fury, 0.3-0.7 -> frustration/irritation/annoyance, < 0.3 ->
resentment), completed for every base emotion. Complex emotions fuse the top two emotions when
neither is neutral; the seed's pairs are kept and the rest follow Plutchik's dyads, renamed where a
contact-center reader would otherwise be misled.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

# emotion -> (high band, medium band, low band); the first name of each band is the one shown.
GRANULAR: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "anger": (("rage", "fury"), ("frustration", "irritation", "annoyance"), ("resentment",)),
    "disgust": (("revulsion", "loathing"), ("contempt", "distaste"), ("disapproval", "dislike")),
    "fear": (("panic", "terror"), ("anxiety", "alarm"), ("worry", "unease")),
    "happiness": (("joy", "delight"), ("cheerfulness", "pleasure"), ("contentment", "satisfaction")),
    "neutral": (("calm", "composure"), ("reserve",), ("detachment",)),
    "sadness": (("grief", "despair"), ("sorrow", "disappointment"), ("melancholy", "wistfulness")),
    "surprise": (("astonishment", "shock"), ("amazement",), ("curiosity", "interest")),
}

COMPLEX: dict[frozenset[str], str] = {
    frozenset(pair): name
    for pair, name in [
        (("happiness", "surprise"), "elation"),  # seed
        (("sadness", "anger"), "bitterness"),  # seed
        (("fear", "sadness"), "desperation"),  # seed
        (("anger", "disgust"), "contempt"),
        (("anger", "fear"), "hostility"),
        (("anger", "happiness"), "pride"),
        (("anger", "surprise"), "outrage"),
        (("disgust", "fear"), "shame"),
        (("disgust", "happiness"), "derision"),
        (("disgust", "sadness"), "remorse"),
        (("disgust", "surprise"), "disbelief"),
        (("fear", "happiness"), "guilt"),
        (("fear", "surprise"), "alarm"),
        (("happiness", "sadness"), "bittersweetness"),
        (("sadness", "surprise"), "disappointment"),
    ]
}


@dataclass(frozen=True)
class GranularEmotion:
    emotion: str  # the base emotion
    label: str  # the granular name shown to people
    band: str  # "high", "medium" or "low"
    intensity: float  # the base emotion's probability

    def to_dict(self) -> dict[str, object]:
        return {"emotion": self.emotion, "label": self.label, "band": self.band,
                "intensity": round(self.intensity, 4)}


def granular(probs: dict[str, float], high: float = 0.7, low: float = 0.3,
             floor: float = 0.1) -> list[GranularEmotion]:
    """Granular labels for every emotion at or above `floor`, strongest first."""
    out = []
    for emotion, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        if p < floor or emotion not in GRANULAR:
            continue
        band_index, band = (0, "high") if p >= high else (1, "medium") if p >= low else (2, "low")
        out.append(GranularEmotion(emotion, GRANULAR[emotion][band_index][0], band, float(p)))
    return out


def complex_emotion(probs: dict[str, float], min_second: float = 0.2) -> str | None:
    """The blend of the two strongest emotions, if both are emotive and the runner-up is strong.

    A neutral-dominated utterance has no blend: "mostly neutral, a little anger and disgust"
    is not contempt.
    """
    ranked = sorted(((p, e) for e, p in probs.items()), reverse=True)
    if len(ranked) < 2 or ranked[1][0] < min_second or "neutral" in (ranked[0][1], ranked[1][1]):
        return None
    return COMPLEX.get(frozenset((ranked[0][1], ranked[1][1])))
