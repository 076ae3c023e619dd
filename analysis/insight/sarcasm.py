"""Sarcasm cross-check: positive words said in a negative way.

"That's just great." said with anger, or with the flat, low, slow delivery of contempt, means the
opposite of its words. The check compares the transcript's sentiment with the acoustic emotion
and with prosody against the speaker's own baseline, and says why it flagged what it flagged.
Cases near the line are marked ambiguous rather than decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from emotivoice.analysis.emotion.tiers import valence_weights
from emotivoice.config import SarcasmConfig

# how unpleasant and how pleasant each emotion sounds (analysis/emotion/tiers.py, the valence table)
NEGATIVE_WEIGHTS = valence_weights("negative")
POSITIVE_WEIGHTS = valence_weights("positive")


@dataclass(frozen=True)
class SarcasmCheck:
    is_sarcastic: bool
    confidence: float  # 0..1: how strongly words and voice disagree
    ambiguous: bool
    reason: str

    def to_json(self) -> dict:
        return {"is_sarcastic": self.is_sarcastic, "confidence": round(self.confidence, 3),
                "ambiguous": self.ambiguous, "reason": self.reason}


def acoustic_valence(emotions: dict[str, float]) -> tuple[float, str]:
    """Negative minus positive acoustic evidence in [-1, 1], and the emotion that drives it."""
    neg = sum(w * emotions.get(e, 0.0) for e, w in NEGATIVE_WEIGHTS.items())
    pos = sum(w * emotions.get(e, 0.0) for e, w in POSITIVE_WEIGHTS.items())
    driver = max(NEGATIVE_WEIGHTS, key=lambda e: NEGATIVE_WEIGHTS[e] * emotions.get(e, 0.0))
    return max(-1.0, min(1.0, neg - pos)), driver


def contempt_prosody(z: dict[str, float]) -> float:
    """0..1: flat pitch, lowered pitch and slowed rate against the speaker's baseline."""
    flat = max(0.0, -z.get("pitch_range_st", 0.0))
    low = max(0.0, -z.get("pitch_st", 0.0))
    slow = max(0.0, -z.get("rate_wps", 0.0))
    return min(1.0, (flat + 0.5 * low + 0.5 * slow) / 3.0)


def check_sarcasm(sentiment: float, emotions: dict[str, float], prosody_z: dict[str, float],
                  config: SarcasmConfig = SarcasmConfig()) -> SarcasmCheck:
    """Cross-check one utterance's words (VADER compound) against its voice."""
    if sentiment < config.positive_text:
        return SarcasmCheck(False, 0.0, False, "words not positive")
    words = min(1.0, 0.5 + (sentiment - config.positive_text) / (1 - config.positive_text) * 0.5)
    valence, driver = acoustic_valence(emotions)
    prosody = contempt_prosody(prosody_z)
    voice = max(0.0, min(1.0, valence + config.prosody_weight * prosody))  # a neutral voice is ~0.1
    confidence = round(words * voice, 3)
    flagged = confidence >= config.threshold
    ambiguous = abs(confidence - config.threshold) < config.ambiguous_band
    parts = [f"positive words (sentiment {sentiment:+.2f})"]
    parts.append(f"said with {driver} {emotions.get(driver, 0.0):.2f}" if valence > 0
                 else f"voice sounds positive or neutral (happiness {emotions.get('happiness', 0.0):.2f})")
    if prosody >= 0.2:
        parts.append("flat/low/slow delivery against this speaker's baseline")
    return SarcasmCheck(flagged, confidence, ambiguous, "; ".join(parts))
