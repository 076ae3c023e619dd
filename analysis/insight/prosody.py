"""How an utterance sounds against the same speaker earlier in the call.

Absolute pitch and loudness say more about the voice and the line than about the mood; a change
against the speaker's own running baseline is what signals anger, contempt or resignation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from emotivoice.analysis.emotion.prosody import PITCH_MEAN, PITCH_RANGE, egemaps

FEATURES = ("pitch_st", "pitch_range_st", "loudness_dbfs", "rate_wps")
# Spreads assumed before a speaker has said enough to measure their own (typical within-speaker SDs).
PRIOR_SD = {"pitch_st": 2.0, "pitch_range_st": 2.0, "loudness_dbfs": 4.0, "rate_wps": 0.8}


@dataclass(frozen=True)
class Prosody:
    pitch_st: float  # mean F0 in semitones above 27.5 Hz
    pitch_range_st: float  # 20th-80th percentile range of F0 in semitones
    loudness_dbfs: float  # RMS level before normalisation
    rate_wps: float  # words per second of speech

    def as_dict(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 3) for name in FEATURES}


def measure(clip: np.ndarray, loudness_dbfs: float, words: int) -> Prosody:
    """Prosody of one 16 kHz clip (eGeMAPS is cached, so the emotion head's pass is reused)."""
    from emotivoice.analysis.audio import normalize

    values = egemaps(normalize(clip))
    duration = max(len(clip) / 16_000, 0.25)
    return Prosody(float(values[PITCH_MEAN]), float(values[PITCH_RANGE]), loudness_dbfs, words / duration)


@dataclass
class Baseline:
    """Running mean and spread per feature (Welford), shrunk toward PRIOR_SD while data are few."""

    n: int = 0
    mean: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURES, 0.0))
    m2: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURES, 0.0))

    def deviations(self, p: Prosody) -> dict[str, float]:
        """z-scores of `p` against what came before; zeros until two utterances are known."""
        if self.n < 2:
            return dict.fromkeys(FEATURES, 0.0)
        out = {}
        for name in FEATURES:
            var = (self.m2[name] + 2 * PRIOR_SD[name] ** 2) / (self.n - 1 + 2)
            out[name] = round((getattr(p, name) - self.mean[name]) / math.sqrt(var), 3)
        return out

    def update(self, p: Prosody) -> None:
        self.n += 1
        for name in FEATURES:
            x = getattr(p, name)
            delta = x - self.mean[name]
            self.mean[name] += delta / self.n
            self.m2[name] += delta * (x - self.mean[name])
