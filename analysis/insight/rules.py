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

Loading checks every key and type, so a typo is an error that names the file, the category and
the key rather than a rule that silently never matches. Judging a call against the rules (pure
functions over a CallResult) is analysis/insight/rulematch.py.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS

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
