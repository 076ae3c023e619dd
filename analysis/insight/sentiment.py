"""Transcript sentiment with VADER: a lexicon that handles negation ("not great"), contrast
("but"), intensifiers ("really"), capitals and exclamation marks, in well under a millisecond."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def text_sentiment(text: str) -> float:
    """VADER's compound score in [-1, 1]; 0.0 for empty text."""
    if not text.strip():
        return 0.0
    return float(_analyzer().polarity_scores(text)["compound"])
