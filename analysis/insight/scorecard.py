"""QA scorecards: the questions a quality coach asks of every call, answered automatically where
what the analysis knows decides them (a category from the rules, a conversation metric against a
threshold), and left for the coach where it does not.

The form is TOML (analysis/insight/default_scorecard.toml is the shipped card and documents the
format; `analytics.scorecard_file` names another). Loading checks every key and type and, with
the rule set in use, that each category a question asks about exists, so a typo is an error
naming the file, the question and the key rather than a question that is always answered "no".

The score is the weighted share of "yes" among the answered questions, 0-100; a coach question
counts once a coach has answered it (storage/scorecards.py keeps the coach's answers and computes
the stored score with the same formula).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from emotivoice.analysis.insight.rulematch import silences
from emotivoice.analysis.insight.rules import CALL_METRICS, SPEAKER_METRICS, RuleSet
from emotivoice.analysis.results import CallResult

DERIVED_METRICS = ("customer_peak_risk", "customer_end_sentiment")
METRICS = (*CALL_METRICS, *SPEAKER_METRICS, *DERIVED_METRICS)
KEYS = {"id": str, "text": str, "weight": float, "category": str, "expect": bool, "metric": str, "above": float,
        "below": float, "speaker": str, "coach": bool}
SPEAKERS = ("agent", "customer")


class ScorecardError(ValueError):
    """A scorecard that cannot be used; the message names the file, the question and the key."""


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    weight: float
    kind: str  # category | metric | coach: where the automatic answer comes from
    category: str = ""
    expect: bool = True
    metric: str = ""
    above: float | None = None
    below: float | None = None
    speaker: str = "agent"

    def threshold(self) -> str:
        parts = ([f"above {self.above:g}"] if self.above is not None else []) + \
                ([f"below {self.below:g}"] if self.below is not None else [])
        return " and ".join(parts)


@dataclass(frozen=True)
class Scorecard:
    name: str
    questions: tuple[Question, ...]
    source: str = ""


def _typed(value: object, kind: type, where: str) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScorecardError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _question(table: object, where: str) -> Question:
    if not isinstance(table, dict):
        raise ScorecardError(f"{where}: a question must be a table")
    values = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ScorecardError(f"{where}: unknown key {key!r}")
        values[key] = _typed(value, KEYS[key], f"{where}.{key}")
    for key in ("id", "text", "weight"):
        if key not in values:
            raise ScorecardError(f"{where}: needs {key!r}")
    if not values["id"].strip() or len(values["id"]) > 64:
        raise ScorecardError(f"{where}.id: 1 to 64 characters")
    if not values["weight"] > 0:
        raise ScorecardError(f"{where}.weight: must be above 0")
    sources = [k for k in ("category", "metric") if k in values] + (["coach"] if values.get("coach") else [])
    if len(sources) != 1:
        raise ScorecardError(f"{where}: needs exactly one answer source: category, metric or coach = true "
                             f"(has {', '.join(sources) or 'none'})")
    kind = sources[0]
    allowed = {"category": {"category", "expect"}, "metric": {"metric", "above", "below", "speaker"},
               "coach": {"coach"}}[kind] | {"id", "text", "weight"}
    extra = sorted(set(values) - allowed)
    if extra:
        raise ScorecardError(f"{where}.{extra[0]}: not used by a {kind} question")
    if kind == "metric":
        if values["metric"] not in METRICS:
            raise ScorecardError(f"{where}.metric: unknown metric {values['metric']!r} (one of {', '.join(METRICS)})")
        if "above" not in values and "below" not in values:
            raise ScorecardError(f"{where}: a metric question needs above or below")
        if values.get("speaker", "agent") not in SPEAKERS:
            raise ScorecardError(f"{where}.speaker: one of {', '.join(SPEAKERS)}")
    values.pop("coach", None)
    return Question(kind=kind, **values)


def parse_scorecard(text: str, source: str = "scorecard") -> Scorecard:
    """A Scorecard from TOML text; ScorecardError says what is wrong and where."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScorecardError(f"{source}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"name", "question"})
    if unknown:
        raise ScorecardError(f"{source}: unknown key {unknown[0]!r} (a scorecard has a name and [[question]] tables)")
    name = doc.get("name", "QA scorecard")
    if not isinstance(name, str) or not name.strip():
        raise ScorecardError(f"{source}.name: a non-empty string")
    tables = doc.get("question", [])
    if not isinstance(tables, list) or not tables:
        raise ScorecardError(f"{source}: needs at least one [[question]]")
    questions, ids = [], set()
    for n, table in enumerate(tables):
        label = table.get("id", n + 1) if isinstance(table, dict) else n + 1
        q = _question(table, f"{source}: question {label!r}")
        if q.id in ids:
            raise ScorecardError(f"{source}: question {q.id!r}: the id is used twice")
        ids.add(q.id)
        questions.append(q)
    return Scorecard(name, tuple(questions), source)


def check_categories(card: Scorecard, rules: RuleSet) -> None:
    """ScorecardError for a question about a category the rule set does not have."""
    known = {c.name for c in rules.categories}
    for q in card.questions:
        if q.kind == "category" and q.category not in known:
            raise ScorecardError(f"{card.source}: question {q.id!r}.category: no category {q.category!r} in "
                                 f"{rules.source or 'the rules'} (has {', '.join(sorted(known)) or 'none'})")


def default_scorecard_text() -> str:
    return resources.files("emotivoice.analysis.insight").joinpath("default_scorecard.toml").read_text()


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> Scorecard:
    return parse_scorecard(Path(path).read_text(), path)


@lru_cache(maxsize=1)
def _default() -> Scorecard:
    return parse_scorecard(default_scorecard_text(), "default_scorecard.toml")


def load_scorecard(path: str | Path | None = None, rules: RuleSet | None = None) -> Scorecard:
    """The scorecard in `path` (re-read when the file changes), or the shipped one; checked against
    `rules` when given."""
    if not path:
        card = _default()
    else:
        p = Path(path).expanduser()
        try:
            card = _load(str(p), p.stat().st_mtime_ns)
        except OSError as exc:
            raise ScorecardError(f"{p}: cannot read the scorecard file ({exc.strerror})") from None
    if rules is not None:
        check_categories(card, rules)
    return card


# ---- answering ---------------------------------------------------------------------------------------

def metric_value(result: CallResult, metric: str, speaker: str = "agent") -> float | None:
    """A conversation metric of the call (None when it cannot be measured, e.g. no agent)."""
    length = max([result.duration_s, *(u.end for u in result.utterances)], default=0.0)
    if metric == "longest_silence_s":
        return max((b - a for a, b in silences(result, length, edges=False)), default=0.0)
    if metric in ("long_silences", "non_talk_s"):
        gaps = silences(result, length)
        return float(len(gaps)) if metric == "long_silences" else sum(b - a for a, b in gaps)
    if metric in CALL_METRICS:
        value = result.metrics.get(metric)
        return None if value is None else float(value)
    if metric in SPEAKER_METRICS:  # the most of the speakers in that role that have it measured
        key = SPEAKER_METRICS[metric]
        found = [float(s.metrics[key]) for s in result.speakers if s.role == speaker and s.metrics.get(key) is not None]
        return max(found) if found else None
    customer = {s.label for s in result.speakers if s.role == "customer"}
    if metric == "customer_peak_risk":
        risks = [u.risk.score for u in result.utterances if u.speaker in customer and u.risk]
        return max(risks) if risks else None
    trend = result.customer_start_vs_end or {}
    return trend.get("end_sentiment")


def answer(q: Question, result: CallResult, categories: dict[str, dict]) -> dict:
    """One question answered from the call: auto_score 1 (yes), 0 (no) or None (for the coach, or
    not measurable), why in words, and the evidence (times) that decided it."""
    row = {"question_id": q.id, "question": q.text, "weight": q.weight, "answer_kind": q.kind,
           "auto_score": None, "auto_note": "", "evidence": []}
    if q.kind == "coach":
        row["auto_note"] = "left for the coach"
    elif q.kind == "category":
        match = categories.get(q.category)
        row["auto_score"] = 1.0 if (match is not None) == q.expect else 0.0
        row["auto_note"] = f"category {q.category!r} {'found' if match else 'not found'}"
        row["evidence"] = (match or {}).get("evidence", [])[:5]
    else:
        value = metric_value(result, q.metric, q.speaker)
        who = f"{q.speaker} " if q.metric in SPEAKER_METRICS else ""
        if value is None:
            row["auto_note"] = f"{who}{q.metric} not measured on this call"
        else:
            ok = (q.above is None or value > q.above) and (q.below is None or value < q.below)
            row["auto_score"] = 1.0 if ok else 0.0
            row["auto_note"] = f"{who}{q.metric} {value:.2f} ({'' if ok else 'not '}{q.threshold()})"
    return row


def weighted_score(rows: list[tuple[float, float | None]]) -> float | None:
    """0-100 from (weight, score) pairs, over the answered ones only; None when none is answered."""
    answered = [(w, s) for w, s in rows if s is not None]
    total = sum(w for w, _ in answered)
    return round(100.0 * sum(w * s for w, s in answered) / total, 1) if total else None


def score_call(result: CallResult, card: Scorecard, categories: list[dict] | None = None) -> dict:
    """The scorecard of one call: every question answered where the call decides it, and the score."""
    found = {m["category"]: m for m in (result.categories if categories is None else categories)}
    answers = [answer(q, result, found) for q in card.questions]
    for position, row in enumerate(answers):
        row["position"] = position
    return {"name": card.name, "score": weighted_score([(a["weight"], a["auto_score"]) for a in answers]),
            "pending": [a["question_id"] for a in answers if a["answer_kind"] == "coach"],
            "answers": answers}


def answer_rows(call_id: str, scorecard: dict | None) -> list[dict]:
    """The scorecard as rows of scorecard_answers (migration 012), for storage.db.CallRecord; the
    evidence keeps its times but not the words (an analyst may read scorecards, not transcripts)."""
    if not scorecard:
        return []
    return [{"call_id": call_id, **{k: a[k] for k in ("question_id", "question", "weight", "answer_kind",
                                                          "auto_score", "auto_note", "position")},
             "evidence": json.dumps([{k: v for k, v in e.items() if k != "text"} for e in a["evidence"]])}
            for a in scorecard["answers"]]
