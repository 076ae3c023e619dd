"""Judging a call against a RuleSet (analysis/insight/rules.py has the format and its loading):
which categories match, with the evidence in call time, and the alerts the matches raise.

Pure functions over a CallResult. A phrase is one regex over an utterance's words joined by single
spaces, prepared once per evaluation (`Words`); live, a memo keeps each finished utterance's
answer so each step judges only the new utterances.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache

from emotivoice.analysis.conversation import LONG_SILENCE_S
from emotivoice.analysis.insight.risk import Alert
from emotivoice.analysis.insight.rules import ALERT_KIND, CALL_METRICS, SPEAKER_METRICS, Condition, RuleSet
from emotivoice.analysis.insight.text import Token, tokens
from emotivoice.analysis.results import CallResult, Utterance


def _word_regex(word: str) -> str:
    """One word of a pattern: * any letters, ? one letter, a|b either word."""
    return "(?:" + "|".join("".join("[a-z0-9']*" if c == "*" else "[a-z0-9']" if c == "?" else re.escape(c)
                                    for c in alternative) for alternative in word.split("|") if alternative) + ")"


@lru_cache(maxsize=4096)
def _phrase_regex(pattern: tuple[str, ...]) -> re.Pattern:
    """A word sequence as one regex over the words joined by single spaces (whole words only);
    the lookahead makes every start position a match, overlapping ones included."""
    return re.compile(r"(?<!\S)(?=(" + " ".join(_word_regex(w) for w in pattern) + r")(?!\S))")


@dataclass
class Words:
    """An utterance's tokens prepared once per evaluation: the phrase regexes run over `joined`."""

    timed: list[Token]
    joined: str
    starts: list[int]  # char offset of each token in `joined`

    @classmethod
    def of(cls, u: Utterance) -> Words:
        timed = tokens(u)
        starts, at = [], 0
        for t in timed:
            starts.append(at)
            at += len(t.text) + 1
        return cls(timed, " ".join(t.text for t in timed), starts)


def find(words: Words, pattern: tuple[str, ...]) -> list[int]:
    """Token indexes where the word-pattern sequence starts."""
    return [bisect_left(words.starts, m.start()) for m in _phrase_regex(pattern).finditer(words.joined)]


def _evidence(i: int, u: Utterance, span: list[Token] | None = None, text: str = "") -> dict:
    start, end = (span[0].start, span[-1].end) if span else (u.start, u.end)
    return {"utterance_idx": i, "speaker": u.speaker, "start_s": round(start, 2), "end_s": round(end, 2),
            "text": text or " ".join(u.text.split())[:120]}


def _utterance_match(c: Condition, i: int, u: Utterance, role: str, length_s: float,
                     prepared: dict[int, Words]) -> dict | None:
    """The evidence when utterance `u` meets every key of `c`, else None."""
    if c.speaker != "any" and role != c.speaker:
        return None
    if c.first_s is not None and u.start >= c.first_s:
        return None
    if c.last_s is not None and u.end <= length_s - c.last_s:
        return None
    if c.emotion and u.emotions.get(c.emotion, 0.0) < c.min_probability:
        return None
    if c.granular and not any(g.label == c.granular and g.intensity >= c.min_probability for g in u.granular):
        return None
    if c.sentiment_below is not None and not u.sentiment < c.sentiment_below:
        return None
    if c.sentiment_above is not None and not u.sentiment > c.sentiment_above:
        return None
    if c.sarcastic is not None and bool(u.sarcasm and u.sarcasm.is_sarcastic) != c.sarcastic:
        return None
    if c.interrupts is not None and u.interrupts != c.interrupts:
        return None
    if c.risk_at_least is not None and not (u.risk and u.risk.score >= c.risk_at_least):
        return None
    span = None
    if c.phrases or c.near:
        words = prepared.get(i) or prepared.setdefault(i, Words.of(u))
        timed = words.timed
        if c.phrases:
            hits = [(at, p) for p in c.phrases for at in find(words, p)]
            if not hits:
                return None
            at, p = min(hits)
            span = timed[at:at + len(p)]
        if c.near:
            first, *others = c.near
            for at in find(words, first):
                spots = [at]
                for term in others:
                    close = [j for j in find(words, term) if abs(j - at) <= c.within]
                    if not close:
                        break
                    spots.append(min(close, key=lambda j: abs(j - at)))
                else:
                    lo, hi = min(spots), max(spots) + len(c.near[spots.index(max(spots))])
                    span = timed[lo:hi]
                    break
            else:
                return None
    return _evidence(i, u, span, " ".join(t.text for t in span) if span else "")


def silences(result: CallResult, length_s: float, edges: bool = True) -> list[tuple[float, float]]:
    """Stretches longer than LONG_SILENCE_S where nobody spoke (as analysis.conversation counts them);
    `edges=False`: only between speech (the recording's lead-in and tail are no hold)."""
    spans = sorted((u.start, u.end) for u in result.utterances)
    out, cursor = [], 0.0 if edges or not spans else spans[0][0]
    for start, end in spans:
        if start - cursor > LONG_SILENCE_S:
            out.append((cursor, start))
        cursor = max(cursor, end)
    if edges and length_s - cursor > LONG_SILENCE_S:
        out.append((cursor, length_s))
    return out


def _metric_match(c: Condition, result: CallResult, length_s: float) -> list[dict] | None:
    gaps = silences(result, length_s)
    evidence: list[dict] = []
    if c.metric == "longest_silence_s":  # between speech: a hold, dead air
        longest = max(silences(result, length_s, edges=False), key=lambda g: g[1] - g[0], default=None)
        value = longest[1] - longest[0] if longest else 0.0
        if longest:
            evidence = [{"metric": c.metric, "value": round(value, 2), "start_s": round(longest[0], 2),
                         "end_s": round(longest[1], 2)}]
    elif c.metric in CALL_METRICS:
        value = float(result.metrics.get(c.metric, 0.0) or 0.0)
        if c.metric in ("long_silences", "non_talk_s"):  # from the utterances: live calls have no metrics yet
            value = float(len(gaps)) if c.metric == "long_silences" else sum(b - a for a, b in gaps)
        evidence = [{"metric": c.metric, "value": round(value, 2), "start_s": 0.0, "end_s": round(length_s, 2)}]
    else:
        key = SPEAKER_METRICS[c.metric]
        values = [(s.label, float(s.metrics.get(key, 0.0) or 0.0)) for s in result.speakers
                  if c.speaker in ("any", s.role)]
        ok = [(label, v) for label, v in values
              if (c.above is None or v > c.above) and (c.below is None or v < c.below)]
        if not ok:
            return None
        return [{"metric": c.metric, "speaker": label, "value": round(v, 3), "start_s": 0.0,
                 "end_s": round(length_s, 2)} for label, v in ok]
    if (c.above is not None and not value > c.above) or (c.below is not None and not value < c.below):
        return None
    return evidence


def _holds(c: Condition, result: CallResult, roles: dict[str, str], length_s: float,
           prepared: dict[int, Words], memo: dict | None) -> list[dict] | None:
    """The evidence when condition `c` holds on the call (possibly empty, for a negation), else None.
    `memo` keeps each utterance's answer for a condition that cannot change as the call goes on
    (live: a scored utterance is final), so each live step judges only the new utterances."""
    if c.metric:
        return _metric_match(c, result, length_s)
    found = []
    for i, u in enumerate(result.utterances):
        if u.partial:
            continue
        if memo is None or c.last_s is not None:
            e = _utterance_match(c, i, u, roles.get(u.speaker, "unknown"), length_s, prepared)
        else:
            key = (i, u.start, u.text, c)
            if key not in memo:
                memo[key] = _utterance_match(c, i, u, roles.get(u.speaker, "unknown"), length_s, prepared)
            e = memo[key]
        if e:
            found.append(e)
    if c.negate:
        return [] if len(found) < c.min_count else None
    return found if len(found) >= c.min_count else None


def evaluate(result: CallResult, rules: RuleSet, live: bool = False, memo: dict | None = None) -> list[dict]:
    """Every category that matches, in the rule set's order, with its evidence in call time.
    `live`: only the categories whose matches hold as the call goes on; `memo`: a dict kept
    between calls on the same growing call (see _holds)."""
    roles = {s.label: s.role for s in result.speakers}
    length = max([result.duration_s, *(u.end for u in result.utterances)], default=0.0)
    out, prepared = [], {}
    for category in rules.categories:
        if live and not category.live:
            continue
        held = [_holds(c, result, roles, length, prepared, memo) for c in category.conditions]
        ok = [e for e in held if e is not None]
        if (category.match == "all" and len(ok) < len(held)) or not ok:
            continue
        evidence = sorted({(e.get("utterance_idx", -1), e["start_s"], e.get("metric", "")): e
                           for es in ok for e in es}.values(), key=lambda e: (e["start_s"], e.get("utterance_idx", -1)))
        out.append({"category": category.name, "alert": category.alert, "evidence": evidence})
    return out


def rule_alerts(matches: list[dict], raised: list[Alert], length_s: float) -> list[Alert]:
    """An alert for each matched alert category not raised yet on this call, at its last evidence."""
    kinds = {a.kind for a in raised}
    out = []
    for m in matches:
        kind = ALERT_KIND + m["category"]
        if not m["alert"] or kind in kinds:
            continue
        last = max(m["evidence"], key=lambda e: e["end_s"], default={"end_s": length_s})
        out.append(Alert(last.get("speaker"), last["end_s"], last.get("utterance_idx"), 1.0, {}, kind))
    return out
