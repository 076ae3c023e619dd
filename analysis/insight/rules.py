"""Categories from rules: what a call contained (a greeting, an escalation request, a long hold),
found by conditions over what the analysis already knows, with the evidence that decided it.

Rules live in a TOML file (analysis/insight/default_rules.toml is the shipped set and documents
the format; `analytics.rules_file` names another). Each `[[category]]` has a name, an optional
`alert = true` (a match raises an alert, live as well) and `[[category.condition]]` tables combined
with `match = "all"` (default) or `"any"`. A condition is either over utterances:

    speaker = "agent" | "customer" | "any"         whose utterances
    phrases = ["thank* for calling", "how can i help"]   any of these word sequences
              (* any letters inside a word, ? one letter, talk|speak either word;
              case and punctuation ignored)
    near = ["cancel*", "account"], within = 5     all terms within 5 words of the first
    emotion = "anger", min_probability = 0.7       a base emotion at least this likely
    granular = "rage"                              a granular label (its intensity >= min_probability)
    sentiment_below = -0.5 / sentiment_above = 0.5
    sarcastic = true, interrupts = true, risk_at_least = 0.6
    first_s = 30 / last_s = 60                     only utterances starting in the first 30 s /
                                                   ending in the last minute
    min_count = 2                                  at least this many utterances (default 1)
    negate = true                                  holds when too few utterances match

(every key present must hold for the same utterance), or over the call's conversation metrics:

    metric = "longest_silence_s" (between speech) | "long_silences" | "non_talk_s" | "overlap_s" | "interruptions"
             | "interrupted" | "talk_share" | "words_per_minute" | "longest_monologue_s"
    above = 10 / below = 0.2, speaker = "agent"    (per speaker: interruptions, talk_share, ...)

Pure functions over a CallResult; loading checks every key and type, so a typo is an error that
names the file, the category and the key rather than a rule that silently never matches.
"""

from __future__ import annotations

import re
import tomllib
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from emotivoice.analysis.conversation import LONG_SILENCE_S
from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS
from emotivoice.analysis.insight.risk import Alert
from emotivoice.analysis.insight.text import Token, tokens
from emotivoice.analysis.results import CallResult, Utterance

CALL_METRICS = ("longest_silence_s", "long_silences", "non_talk_s", "overlap_s")
SPEAKER_METRICS = {"interruptions": "interruptions_made", "interrupted": "interrupted", "talk_share": "talk_share",
                   "words_per_minute": "words_per_minute", "longest_monologue_s": "longest_monologue_s"}
GROWING = {"longest_silence_s", "long_silences", "non_talk_s", "overlap_s", "interruptions", "interrupted",
           "longest_monologue_s"}  # only ever grow as a call goes on: an `above` on them holds live too
UTTERANCE_KEYS = {"speaker": str, "phrases": list, "near": list, "within": int, "emotion": str, "granular": str,
                  "min_probability": float, "sentiment_below": float, "sentiment_above": float, "sarcastic": bool,
                  "interrupts": bool, "risk_at_least": float, "first_s": float, "last_s": float, "min_count": int,
                  "negate": bool}
METRIC_KEYS = {"metric": str, "above": float, "below": float, "speaker": str}
ROLES = ("agent", "customer", "any")
ALERT_KIND = "category:"  # an alert raised by a rule is of kind "category:<name>"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the category and the key."""


@dataclass(frozen=True)
class Condition:
    speaker: str = "any"
    phrases: tuple[tuple[str, ...], ...] = ()  # each a word-pattern sequence
    near: tuple[tuple[str, ...], ...] = ()
    within: int = 5
    emotion: str = ""
    granular: str = ""
    min_probability: float = 0.5
    sentiment_below: float | None = None
    sentiment_above: float | None = None
    sarcastic: bool | None = None
    interrupts: bool | None = None
    risk_at_least: float | None = None
    first_s: float | None = None
    last_s: float | None = None
    min_count: int = 1
    negate: bool = False
    metric: str = ""
    above: float | None = None
    below: float | None = None

    @property
    def live(self) -> bool:
        """Whether a match on part of a call stays a match as the call goes on."""
        if self.metric:
            return self.metric in GROWING and self.below is None
        return not self.negate and self.last_s is None


@dataclass(frozen=True)
class Category:
    name: str
    conditions: tuple[Condition, ...]
    match: str = "all"  # all | any
    alert: bool = False
    description: str = ""

    @property
    def live(self) -> bool:
        return all(c.live for c in self.conditions)


@dataclass(frozen=True)
class RuleSet:
    categories: tuple[Category, ...] = field(default_factory=tuple)
    source: str = ""


# ---- loading ---------------------------------------------------------------------------------------

def _pattern(text: str) -> tuple[str, ...]:
    words = tuple(w.strip("|") for w in re.sub(r"[^a-z0-9*?'| ]+", " ", text.lower().replace("\u2019", "'")).split())
    words = tuple(w for w in words if w)
    if not words:
        raise ValueError(f"empty phrase {text!r}")
    return words


def _typed(value: object, kind: type, where: str) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RulesError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _condition(table: object, where: str) -> Condition:
    if not isinstance(table, dict):
        raise RulesError(f"{where}: a condition must be a table")
    keys = METRIC_KEYS if "metric" in table else UTTERANCE_KEYS
    values = {}
    for key, value in table.items():
        if key not in keys:
            raise RulesError(f"{where}: unknown key {key!r}" + (" for a metric condition" if "metric" in table else ""))
        values[key] = _typed(value, keys[key], f"{where}.{key}")
    if values.get("emotion", "anger") not in BASE_EMOTIONS:
        raise RulesError(f"{where}.emotion: one of {', '.join(BASE_EMOTIONS)}")
    if values.get("speaker", "any") not in ROLES:
        raise RulesError(f"{where}.speaker: one of {', '.join(ROLES)}")
    if "metric" in values:
        if values["metric"] not in CALL_METRICS and values["metric"] not in SPEAKER_METRICS:
            raise RulesError(f"{where}.metric: unknown metric {values['metric']!r}")
        if "above" not in values and "below" not in values:
            raise RulesError(f"{where}: a metric condition needs above or below")
        return Condition(**values)
    try:
        for key in ("phrases", "near"):
            if key in values:
                values[key] = tuple(_pattern(_typed(p, str, f"{where}.{key}")) for p in values[key])
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from None
    if "near" in values and len(values["near"]) < 2:
        raise RulesError(f"{where}.near: needs two terms or more")
    if values.get("min_count", 1) < 1:
        raise RulesError(f"{where}.min_count: at least 1")
    return Condition(**values)


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """A RuleSet from TOML text; RulesError says what is wrong and where."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"category"}
    if unknown:
        raise RulesError(f"{source}: unknown table {sorted(unknown)[0]!r} (rules are [[category]] tables)")
    categories, names = [], set()
    for n, table in enumerate(doc.get("category", [])):
        where = f"{source}: category {table.get('name', n + 1)!r}" if isinstance(table, dict) else source
        if not isinstance(table, dict):
            raise RulesError(f"{where}: a category must be a table")
        extra = set(table) - {"name", "description", "alert", "match", "condition"}
        if extra:
            raise RulesError(f"{where}: unknown key {sorted(extra)[0]!r}")
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RulesError(f"{where}: needs a name")
        if name in names:
            raise RulesError(f"{where}: the name is used twice")
        names.add(name)
        if table.get("match", "all") not in ("all", "any"):
            raise RulesError(f"{where}.match: 'all' or 'any'")
        conditions = table.get("condition", [])
        if not isinstance(conditions, list) or not conditions:
            raise RulesError(f"{where}: needs at least one [[category.condition]]")
        categories.append(Category(
            name, tuple(_condition(c, f"{where} condition {i + 1}") for i, c in enumerate(conditions)),
            table.get("match", "all"), bool(_typed(table.get("alert", False), bool, f"{where}.alert")),
            str(table.get("description", ""))))
    return RuleSet(tuple(categories), source)


def default_rules_text() -> str:
    return resources.files("emotivoice.analysis.insight").joinpath("default_rules.toml").read_text()


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> RuleSet:
    return parse_rules(Path(path).read_text(), path)


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The rules in `path` (re-read when the file changes), or the shipped default set."""
    if not path:
        return _default()
    p = Path(path).expanduser()
    try:
        return _load(str(p), p.stat().st_mtime_ns)
    except OSError as exc:
        raise RulesError(f"{p}: cannot read the rules file ({exc.strerror})") from None


@lru_cache(maxsize=1)
def _default() -> RuleSet:
    return parse_rules(default_rules_text(), "default_rules.toml")


# ---- matching --------------------------------------------------------------------------------------

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
