"""Emotion and sentiment by quarter of the call, per speaker, as Contact Lens reports them.

A call is cut into four equal stretches of time; each utterance belongs to the quarter holding its
midpoint. Per speaker and quarter: how many utterances, the sentiment and the base emotions
averaged with each utterance weighted by its length (a long angry minute outweighs a short
"okay"), the top emotion and the negative share. "Customer at the start against the end" compares
the customer's first quarter with speech against their last one, which is what a supervisor asks
first: did the call leave them better or worse off? The words alone often cannot say (a flat "the
surface is slick" said in anger scores 0 on sentiment), so the verdict weighs both: the change in
sentiment minus the change in negative emotion heard in the voice.

Pure functions over a CallResult: the batch pipeline and the live engine call the same code.
"""

from __future__ import annotations

from emotivoice.analysis.emotion.tiers import NEGATIVE_EMOTIONS
from emotivoice.analysis.results import CallResult, Utterance

QUARTERS = 4
TREND_MIN_CHANGE = 0.15  # a mood change (sentiment change - negative-emotion change) smaller than this: "unchanged"


def call_length(result: CallResult) -> float:
    """The call's length: its duration, or the last utterance's end when that is later (live calls)."""
    return max([result.duration_s, *(u.end for u in result.utterances)], default=0.0)


def quarter_of(u: Utterance, length_s: float) -> int:
    """0..3: the quarter holding the utterance's midpoint."""
    if length_s <= 0:
        return 0
    return min(QUARTERS - 1, max(0, int((u.start + u.end) / 2 / length_s * QUARTERS)))


def _summarise(utterances: list[Utterance]) -> dict:
    weights = [max(u.end - u.start, 0.01) for u in utterances]
    total = sum(weights)
    if not utterances:
        return {"utterances": 0, "talk_s": 0.0, "sentiment": None, "negative": None, "top_emotion": None,
                "emotions": {}}
    emotions: dict[str, float] = {}
    for u, w in zip(utterances, weights):
        for name, p in u.emotions.items():
            emotions[name] = emotions.get(name, 0.0) + p * w / total
    top = max(emotions, key=emotions.__getitem__) if emotions else None
    return {"utterances": len(utterances), "talk_s": round(sum(u.end - u.start for u in utterances), 2),
            "sentiment": round(sum(u.sentiment * w for u, w in zip(utterances, weights)) / total, 3),
            "negative": round(sum(emotions.get(e, 0.0) for e in NEGATIVE_EMOTIONS), 3) if emotions else None,
            "top_emotion": top, "emotions": {k: round(v, 3) for k, v in sorted(emotions.items())}}


def quarters(result: CallResult) -> list[dict]:
    """One row per speaker and quarter (every quarter, spoken in or not), speakers in leg order."""
    length = call_length(result)
    rows = []
    roles = {s.label: s.role for s in result.speakers}
    labels = [s.label for s in result.speakers] + sorted(
        {u.speaker for u in result.utterances} - {s.label for s in result.speakers})
    for label in labels:
        mine = [u for u in result.utterances if u.speaker == label and not u.partial]
        for q in range(QUARTERS):
            inside = [u for u in mine if quarter_of(u, length) == q]
            rows.append({"speaker": label, "role": roles.get(label, "unknown"), "quarter": q + 1,
                         "start_s": round(length * q / QUARTERS, 2), "end_s": round(length * (q + 1) / QUARTERS, 2),
                         **_summarise(inside)})
    return rows


def start_vs_end(rows: list[dict]) -> dict | None:
    """The customer's first quarter with speech against their last, from `quarters()` rows; None
    without a customer who spoke. `trend` is improved / worsened / unchanged by `mood_change`
    (sentiment up and negative emotion down both count as better), or "one quarter" when the
    customer spoke in one quarter only."""
    spoken = [r for r in rows if r["role"] == "customer" and r["utterances"]]
    if not spoken:
        return None
    spoken = [r for r in spoken if r["speaker"] == spoken[0]["speaker"]]  # the first customer, if several
    first, last = spoken[0], spoken[-1]
    change = round(last["sentiment"] - first["sentiment"], 3)
    negative = round((last["negative"] or 0.0) - (first["negative"] or 0.0), 3)
    mood = round(change - negative, 3)
    if first["quarter"] == last["quarter"]:
        trend = "one quarter"
    elif mood >= TREND_MIN_CHANGE:
        trend = "improved"
    elif mood <= -TREND_MIN_CHANGE:
        trend = "worsened"
    else:
        trend = "unchanged"
    return {"speaker": first["speaker"], "start_quarter": first["quarter"], "end_quarter": last["quarter"],
            "start_sentiment": first["sentiment"], "end_sentiment": last["sentiment"], "sentiment_change": change,
            "start_negative": first["negative"], "end_negative": last["negative"], "negative_change": negative,
            "mood_change": mood,
            "start_emotion": first["top_emotion"], "end_emotion": last["top_emotion"], "trend": trend}
