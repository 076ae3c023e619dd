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


@dataclass(frozen=True)
class Valence:
    """How one emotion label reads, each on 0..1. Two negative scales, because the insight code asks
    two questions and weighs disgust and sadness differently for each (one number per emotion
    could not keep today's scores): `negative`, how unpleasant the voice sounds, is what the
    sarcasm check sets against positive words; `hostile`, how much it is aimed at the other party
    (anger-like), is what escalation risk follows. `positive` is what the sarcasm check subtracts."""

    negative: float
    hostile: float
    positive: float = 0.0


# The one valence table: every "negative emotion" in the code is read from here (the derived
# sets below). Rows follow BASE_EMOTIONS, then labels no shipped backend reports.
VALENCE: dict[str, Valence] = {
    "anger": Valence(negative=1.0, hostile=1.0),
    "disgust": Valence(negative=1.0, hostile=0.8),
    "fear": Valence(negative=0.3, hostile=0.3),
    "happiness": Valence(negative=0.0, hostile=0.0, positive=1.0),
    "neutral": Valence(negative=0.0, hostile=0.0),
    "sadness": Valence(negative=0.4, hostile=0.3),
    "surprise": Valence(negative=0.0, hostile=0.0, positive=0.3),
    # not a base emotion (the heads and HuBERT give only BASE_EMOTIONS); weighed when a caller's
    # emotions carry it, as the sarcasm and risk tables always did
    "contempt": Valence(negative=1.0, hostile=0.8),
}

# The base emotions that count as negative at all: the plain (unweighted) negative share that the
# call summary (analysis/sink.py) and the quarters (analysis/insight/quarters.py) report.
NEGATIVE_EMOTIONS: tuple[str, ...] = tuple(e for e in BASE_EMOTIONS if VALENCE[e].negative > 0)


def valence_weights(scale: str) -> dict[str, float]:
    """{emotion: weight} of one Valence scale ("negative", "hostile" or "positive"), zero weights
    left out, strongest first (ties in table order): the order a weighted sum adds them in and the
    first of equal drivers, so scores stay the same to the last bit."""
    rows = [(e, getattr(v, scale)) for e, v in VALENCE.items() if getattr(v, scale) > 0]
    return dict(sorted(rows, key=lambda row: -row[1]))

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
    intensity: float  # the head's intensity output for the dominant emotion when it has one, else the probability

    def to_dict(self) -> dict[str, object]:
        return {"emotion": self.emotion, "label": self.label, "band": self.band,
                "intensity": round(self.intensity, 4)}


def granular(probs: dict[str, float], high: float = 0.7, low: float = 0.3,
             floor: float = 0.1, intensity: float | None = None) -> list[GranularEmotion]:
    """Granular labels for every emotion at or above `floor`, strongest first.

    `intensity` (0..1, the head's own intensity output, trained on acted low/medium/high takes)
    sets the dominant emotion's band when given: how strongly it is voiced, which its probability
    (how sure the model is) tracks only weakly. The other emotions, and a dominant neutral (it has
    no acted intensity to learn from), keep their probability bands."""
    out = []
    for rank, (emotion, p) in enumerate(sorted(probs.items(), key=lambda kv: -kv[1])):
        if p < floor or emotion not in GRANULAR:
            continue
        level = intensity if rank == 0 and intensity is not None and emotion != "neutral" else p
        band_index, band = (0, "high") if level >= high else (1, "medium") if level >= low else (2, "low")
        out.append(GranularEmotion(emotion, GRANULAR[emotion][band_index][0], band, float(level)))
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
