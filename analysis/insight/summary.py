"""A post-call summary without a language model, from what the analysis already knows.

Four parts, each pointing at the utterances it came from so a supervisor can jump there:
- why the customer called: their first problem statement (the first customer utterance with a
  problem cue, else the first negative one, else the first with a few words);
- key moments: alerts, the customer's risk peak, sarcasm and the categories the rules found;
- what the agent promised: commitments ("I will send", "call you back", "refund", "within 3 days");
- how it ended: the last turns' emotion and sentiment, and the customer's start against the end.
"""

from __future__ import annotations

import re

from emotivoice.analysis.insight.text import time_at
from emotivoice.analysis.results import CallResult, Utterance

PROBLEM_CUES = (
    r"\bi'?m calling (?:about|because|regarding|to)\b", r"\bcalling (?:about|because|regarding)\b",
    r"\b(?:i have|i've got|there'?s|there is) (?:a|an|another) (?:problem|issue|question|complaint)\b",
    r"\bproblem\b", r"\bissue\b", r"\bcharged\b", r"\bbill(?:ed|ing)?\b", r"\bwrong\b", r"\bbroken\b",
    r"\b(?:isn'?t|is not|not|doesn'?t|does not|won'?t|can'?t|cannot|couldn'?t|never) (?:working|work|get|log|"
    r"access|connect|arrived?|received?|came|load|pay)\b",
    r"\bi (?:want|need|would like|'d like) to\b", r"\bmy (?:account|bill|order|card|payment|internet|phone|package|"
    r"delivery|refund|subscription|contract)\b", r"\bcancel\w*", r"\bstill (?:haven'?t|not|no)\b", r"\brefund\w*",
)
COMMITMENTS = (
    r"\b(?:i|we)(?:'ll| will| am going to|'m going to| are going to|'re going to) (?:\w+ ){0,2}?"
    r"(?:send|e-?mail|call|ring|follow|process|refund|credit|escalate|check|look into|get back|arrange|book|"
    r"schedule|waive|reset|transfer|update|cancel|fix|make sure|sort|replace|issue|raise|note|pass)\w*",
    r"\bcall you back\b", r"\bget back to you\b", r"\bfollow(?:ing)? up\b", r"\brefund\w*",
    r"\bcredit\w* (?:to )?(?:your|the) account\b", r"\byou(?:'ll| will) (?:receive|get|see|have)\b",
    r"\bwithin (?:\w+ ){1,2}(?:business |working )?(?:days?|hours?|minutes?|weeks?)\b",
    r"\bby (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|tonight|the end of)\b",
)
RISK_PEAK_MIN = 0.5  # a customer risk peak below this is not a key moment
MAX_MOMENTS = 12
ENDING_TURNS = 3


def _roles(result: CallResult) -> dict[str, str]:
    return {s.label: s.role for s in result.speakers}


def _first(text: str, patterns: tuple[str, ...]) -> re.Match | None:
    found = [m for p in patterns if (m := re.search(p, text.lower()))]
    return min(found, key=lambda m: m.start()) if found else None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def call_reason(result: CallResult) -> dict | None:
    """The customer's first problem statement, with how it was chosen (`cue`)."""
    roles = _roles(result)
    theirs = [(i, u) for i, u in enumerate(result.utterances)
              if roles.get(u.speaker) == "customer" and not u.partial and u.text.strip()]
    for i, u in theirs:
        if m := _first(u.text, PROBLEM_CUES):
            return {"utterance_idx": i, "t_s": round(u.start, 2), "text": _short(u.text), "cue": m.group(0)}
    for i, u in theirs:
        if u.sentiment <= -0.05 and len(u.text.split()) >= 3:
            return {"utterance_idx": i, "t_s": round(u.start, 2), "text": _short(u.text), "cue": "first negative words"}
    for i, u in theirs:
        if len(u.text.split()) >= 4:
            return {"utterance_idx": i, "t_s": round(u.start, 2), "text": _short(u.text), "cue": "first words"}
    return None


def commitments(result: CallResult) -> list[dict]:
    """Each agent sentence that promises something, with the phrase that says so."""
    roles = _roles(result)
    out = []
    for i, u in enumerate(result.utterances):
        if roles.get(u.speaker) != "agent" or u.partial:
            continue
        for sentence in re.finditer(r"[^.!?]+[.!?]*", u.text):
            if found := _all(sentence.group(0), COMMITMENTS):
                out.append({"utterance_idx": i, "t_s": round(time_at(u, sentence.start() + found[0].start()), 2),
                            "text": _short(sentence.group(0).strip()), "what": [m.group(0) for m in found]})
    return out


def _all(text: str, patterns: tuple[str, ...]) -> list[re.Match]:
    """Every match of any pattern, in order, without overlaps (the earliest, then longest, wins)."""
    found = sorted((m for p in patterns for m in re.finditer(p, text.lower())), key=lambda m: (m.start(), -m.end()))
    kept: list[re.Match] = []
    for m in found:
        if not kept or m.start() >= kept[-1].end():
            kept.append(m)
    return kept


def key_moments(result: CallResult, categories: list[dict] = ()) -> list[dict]:
    """Alerts, the customer's risk peak, sarcasm and category matches, in call time (at most MAX_MOMENTS)."""
    roles = _roles(result)
    moments = []
    for a in result.alerts:
        if a.kind.startswith("category:"):
            continue  # a rule's alert is listed with its category
        factors = f" ({', '.join(a.factors)})" if a.factors else ""
        moments.append({"t_s": round(a.t_s, 2), "utterance_idx": a.utterance_idx, "speaker": a.speaker,
                        "kind": "alert", "detail": f"{a.kind} risk {a.score:.2f}{factors}"})
    risky = [(i, u) for i, u in enumerate(result.utterances) if roles.get(u.speaker) == "customer" and u.risk]
    if risky:
        i, u = max(risky, key=lambda iu: iu[1].risk.score)
        if u.risk.score >= RISK_PEAK_MIN:
            moments.append({"t_s": round(u.end, 2), "utterance_idx": i, "speaker": u.speaker, "kind": "risk peak",
                            "detail": f"customer risk {u.risk.score:.2f}: “{_short(u.text, 80)}”"})
    for i, u in enumerate(result.utterances):
        if u.sarcasm and u.sarcasm.is_sarcastic:
            moments.append({"t_s": round(u.start, 2), "utterance_idx": i, "speaker": u.speaker, "kind": "sarcasm",
                            "detail": f"“{_short(u.text, 80)}” ({u.sarcasm.reason})"})
    for c in categories:
        first = c["evidence"][0] if c["evidence"] else {}
        moments.append({"t_s": first.get("start_s", 0.0), "utterance_idx": first.get("utterance_idx"),
                        "speaker": first.get("speaker"), "kind": "category", "detail": c["category"]})
    return sorted(moments, key=lambda m: m["t_s"])[:MAX_MOMENTS]


def ending(result: CallResult, trend: dict | None = None) -> dict | None:
    """The last turns' emotion and sentiment, said in one line (`text`), plus the customer's trend."""
    roles = _roles(result)
    done = [(i, u) for i, u in enumerate(result.utterances) if not u.partial]
    if not done:
        return None
    last = [{"utterance_idx": i, "speaker": u.speaker, "role": roles.get(u.speaker, "unknown"),
             "t_s": round(u.start, 2), "emotion": u.top_emotion[0], "sentiment": round(u.sentiment, 3)}
            for i, u in done[-ENDING_TURNS:]]
    customer: list[Utterance] = ([u for _, u in done[-ENDING_TURNS:] if roles.get(u.speaker) == "customer"]
                                 or [u for _, u in done if roles.get(u.speaker) == "customer"][-1:])
    parts = []
    if customer:
        sentiment = sum(u.sentiment for u in customer) / len(customer)
        parts.append(f"customer {customer[-1].top_emotion[0] or 'unknown'}, sentiment {sentiment:+.2f}")
    else:
        sentiment = None
    if trend and trend.get("trend") in ("improved", "worsened", "unchanged"):
        parts.append(f"{trend['trend']} since the start")
    agent = [t for t in last if t["role"] == "agent"]
    if agent:
        parts.append(f"agent {agent[-1]['emotion']}")
    return {"last_turns": last, "customer_emotion": customer[-1].top_emotion[0] if customer else None,
            "customer_sentiment": round(sentiment, 3) if sentiment is not None else None,
            "trend": trend.get("trend") if trend else None, "text": "; ".join(parts) or "no customer speech"}


def summarize(result: CallResult, categories: list[dict] = (), trend: dict | None = None) -> dict:
    """The whole summary, plus a one-line `headline` for lists and exports."""
    reason, promised = call_reason(result), commitments(result)
    moments, end = key_moments(result, categories), ending(result, trend)
    headline = [f"Called about: {_short(reason['text'], 80).rstrip('.!?')}" if reason else "Reason not stated"]
    alerts = sum(1 for m in moments if m["kind"] == "alert")
    if alerts:
        headline.append(f"{alerts} alert{'s' * (alerts > 1)}")
    sarcastic = sum(1 for m in moments if m["kind"] == "sarcasm")
    if sarcastic:
        headline.append(f"{sarcastic} sarcastic remark{'s' * (sarcastic > 1)}")
    if promised:
        headline.append("Agent promised: " + ", ".join(dict.fromkeys(w for c in promised for w in c["what"])))
    if end:
        headline.append(f"Ended: {end['text']}")
    return {"reason": reason, "key_moments": moments, "commitments": promised, "ending": end,
            "headline": ". ".join(headline)}
