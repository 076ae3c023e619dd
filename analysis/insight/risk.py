"""Escalation risk per speaker, updated utterance by utterance, with alerts that do not flap.

Each utterance gives evidence from named factors (negative emotion and its trend, sarcasm,
negative words, cutting in, raised voice, escalation phrases). The evidence is a weighted sum
squashed to 0..1, and the score follows it with exponential smoothing, so one angry sentence
moves it but a calm one does not erase a heated minute. The top factors are kept with every
score so that a supervisor sees why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from emotivoice.analysis.emotion.tiers import valence_weights
from emotivoice.config import RiskConfig

ANGER_LIKE = valence_weights("hostile")  # how anger-like each emotion is (analysis/emotion/tiers.py, the valence table)


@dataclass(frozen=True)
class RiskScore:
    score: float
    factors: dict[str, float]  # contribution of each factor to the evidence, largest first (top 3)

    def to_json(self) -> dict:
        return {"score": round(self.score, 3), "factors": self.factors}


@dataclass(frozen=True)
class Alert:
    speaker: str
    t_s: float
    utterance_idx: int
    score: float
    factors: dict[str, float]
    kind: str = "escalation"

    def to_json(self) -> dict:
        return {"speaker": self.speaker, "t_s": round(self.t_s, 3), "utterance_idx": self.utterance_idx,
                "kind": self.kind, "score": round(self.score, 3), "factors": self.factors}


@dataclass
class RiskTracker:
    """One speaker's running risk; feed it utterances in time order."""

    speaker: str
    config: RiskConfig = field(default_factory=RiskConfig)
    score: float = 0.0
    armed: bool = True
    history: list[float] = field(default_factory=list)  # negative-emotion level per utterance

    def update(self, emotions: dict[str, float], sarcastic: float, sentiment: float, interrupted_others: int,
               loudness_z: float, phrases: list[str]) -> RiskScore:
        """Fold in one utterance's signals; returns the new score with its top factors."""
        c = self.config
        negative = min(1.0, sum(w * emotions.get(e, 0.0) for e, w in ANGER_LIKE.items()))
        recent = self.history[-c.trend_window:]
        rising = max(0.0, negative - sum(recent) / len(recent)) if recent else 0.0
        self.history.append(negative)
        contributions = {
            "negative emotion": c.w_negative_emotion * negative,
            "rising negative emotion": c.w_rising * rising,
            "sarcasm": c.w_sarcasm * sarcastic,
            "negative words": c.w_negative_words * max(0.0, -sentiment),
            "interrupting": c.w_interrupting * min(1.0, interrupted_others),
            "raised voice": c.w_loud * min(1.0, max(0.0, loudness_z / 2)),
            "escalation phrase": c.w_escalation_phrase * min(1.0, len(phrases)),
        }
        evidence = 1 / (1 + math.exp(-(c.bias + sum(contributions.values()))))
        self.score = evidence if not self.history[:-1] else c.smoothing * evidence + (1 - c.smoothing) * self.score
        top = sorted(((k, round(v, 3)) for k, v in contributions.items() if v > 0.05), key=lambda kv: -kv[1])[:3]
        if phrases:
            top = [(f"escalation phrase: {', '.join(phrases)}", dict(top).get("escalation phrase", 0.0)),
                   *[(k, v) for k, v in top if k != "escalation phrase"]][:3]
        return RiskScore(round(self.score, 4), dict(top))

    def alert(self, t_s: float, utterance_idx: int, scored: RiskScore) -> Alert | None:
        """An alert when the score crosses the threshold while armed; re-arms below `rearm_below`."""
        if self.armed and scored.score >= self.config.alert_threshold:
            self.armed = False
            return Alert(self.speaker, t_s, utterance_idx, scored.score, scored.factors)
        if not self.armed and scored.score < self.config.rearm_below:
            self.armed = True
        return None
