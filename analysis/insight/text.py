"""Words of an utterance as lower-cased tokens with their times, for phrase rules and the summary.

Whisper's words carry times; a token ("o'clock", "twenty", "five") keeps the time of the word it
came from, so a phrase found in the tokens points at the moment it was said. An utterance without
word times (live, before its transcript) gets the utterance's own span for each token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emotivoice.analysis.results import Utterance

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


@dataclass(frozen=True)
class Token:
    text: str
    start: float
    end: float


def tokenize(text: str) -> list[str]:
    """Lower-cased words, apostrophes kept inside them ("it's"), punctuation dropped."""
    return TOKEN.findall(text.lower().replace("\u2019", "'"))


def tokens(u: Utterance) -> list[Token]:
    """The utterance's tokens with times: from its words when they spell the same tokens as its text."""
    timed = [Token(t, w.start, w.end) for w in u.words for t in tokenize(w.word)]
    if timed and [t.text for t in timed] == tokenize(u.text):
        return timed
    return [Token(t, u.start, u.end) for t in tokenize(u.text)]


def time_at(u: Utterance, char_offset: int) -> float:
    """When the word at `char_offset` of the utterance's text was said (the utterance start if unknown)."""
    timed = tokens(u)
    before = len(tokenize(u.text[:char_offset]))
    inside = 0 < char_offset < len(u.text) and u.text[char_offset - 1].isalnum() and u.text[char_offset].isalnum()
    before -= 1 if inside and before else 0  # the cut split a word: that word is the one
    return timed[before].start if before < len(timed) else u.start
