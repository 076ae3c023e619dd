"""Conversation metrics that contact-center analytics show, from utterance times and words.

Per speaker: talk time and share, speaking rate, longest monologue, interruptions made and
suffered. Per call: overlap (two or more talking) and non-talk time (silences over 2 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    speaker: str
    start: float
    end: float
    words: int = 0


INTERRUPTION_MIN_OVERLAP_S = 0.3  # a shorter overlap is a backchannel or a turn-taking slip
LONG_SILENCE_S = 2.0


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, current = 0.0, None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    return total + (current[1] - current[0] if current else 0.0)


def conversation_metrics(spans: Sequence[Span], duration_s: float) -> tuple[dict[str, dict], dict]:
    """(per-speaker metrics, call metrics)."""
    spans = sorted(spans, key=lambda s: s.start)
    speakers = sorted({s.speaker for s in spans})
    talk = {sp: _union_length([(s.start, s.end) for s in spans if s.speaker == sp]) for sp in speakers}
    total_talk = sum(talk.values())
    per: dict[str, dict] = {}
    for sp in speakers:
        mine = [s for s in spans if s.speaker == sp]
        words = sum(s.words for s in mine)
        per[sp] = {"talk_time_s": round(talk[sp], 2),
                   "talk_share": round(talk[sp] / total_talk, 3) if total_talk else 0.0,
                   "words_per_minute": round(words / (talk[sp] / 60), 1) if talk[sp] > 0 else 0.0,
                   "longest_monologue_s": 0.0, "interruptions_made": 0, "interrupted": 0,
                   "interrupted_by": {}}
    # monologue: a speaker's run of utterances with nobody else starting in between
    run_start = run_end = None
    run_speaker = None
    for s in spans + [Span("", float("inf"), float("inf"))]:
        if s.speaker != run_speaker:
            if run_speaker:
                per[run_speaker]["longest_monologue_s"] = round(
                    max(per[run_speaker]["longest_monologue_s"], run_end - run_start), 2)
            run_speaker, run_start, run_end = s.speaker, s.start, s.end
        else:
            run_end = max(run_end, s.end)
    for i, s in enumerate(spans):
        for other in spans[:i]:
            if (other.speaker != s.speaker and other.start < s.start
                    and other.end - s.start >= INTERRUPTION_MIN_OVERLAP_S):
                per[s.speaker]["interruptions_made"] += 1
                per[other.speaker]["interrupted"] += 1
                by = per[other.speaker]["interrupted_by"]
                by[s.speaker] = by.get(s.speaker, 0) + 1
                break
    overlap = 0.0
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if b.start >= a.end:
                break
            if a.speaker != b.speaker:
                overlap += min(a.end, b.end) - b.start
    silences, cursor = [], 0.0
    for start, end in sorted((s.start, s.end) for s in spans):
        if start - cursor > LONG_SILENCE_S:
            silences.append(start - cursor)
        cursor = max(cursor, end)
    if duration_s - cursor > LONG_SILENCE_S:
        silences.append(duration_s - cursor)
    call = {"overlap_s": round(overlap, 2), "overlap_share": round(overlap / duration_s, 4) if duration_s else 0.0,
            "non_talk_s": round(sum(silences), 2), "long_silences": len(silences),
            "talk_s": round(_union_length([(s.start, s.end) for s in spans]), 2)}
    return per, call
