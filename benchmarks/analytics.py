"""Cost of the conversation analytics (quarters, summary, the default rules) per call and per live step.

The batch pipeline runs them once per call; the live engine after every scored utterance, under
its lock, so the last step of a long call is the figure that matters. Calls are built from a
scripted 9-turn exchange repeated (with real sentiment, sarcasm and risk from the insight stage),
so the rules have phrases to find in every stretch.

    python benchmarks/analytics.py
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emotivoice.analysis.emotion.tiers import granular  # noqa: E402
from emotivoice.analysis.insight.analytics import annotate  # noqa: E402
from emotivoice.analysis.insight.rules import load_rules  # noqa: E402
from emotivoice.analysis.insight.stage import enrich  # noqa: E402
from emotivoice.analysis.results import CallResult, Speaker, Utterance  # noqa: E402
from emotivoice.analysis.transcription import Word  # noqa: E402
from benchmarks.common import write_result  # noqa: E402

CALM = {"neutral": 0.8, "happiness": 0.1, "anger": 0.05, "sadness": 0.05}
ANGRY = {"anger": 0.85, "disgust": 0.05, "neutral": 0.1}
SCRIPT = [("agent", 0.5, 3.0, "Thank you for calling Acme, how can I help you today?", CALM),
          ("customer", 3.5, 9.0, "I was charged twice this month and it is absolutely terrible service", ANGRY),
          ("customer", 9.5, 14.0, "This is ridiculous, I want to speak to a manager", ANGRY),
          ("agent", 14.5, 19.0, "I am so sorry about that, I understand how frustrating this is", CALM),
          ("agent", 22.0, 30.0, "Can you confirm your date of birth for me please", CALM),
          ("customer", 30.5, 35.0, "It is the third of March", CALM),
          ("agent", 42.0, 50.0, "I will refund the second charge and I will send you an email confirmation", CALM),
          ("customer", 61.0, 66.0, "That is great, thank you so much, I really appreciate it", CALM),
          ("agent", 70.0, 76.0, "You are welcome, have a great day", CALM)]


def call_of(repeats: int) -> CallResult:
    utterances = []
    for k in range(repeats):
        for speaker, start, end, text, emotions in SCRIPT:
            s, e = start + 80 * k, end + 80 * k
            step = (e - s) / len(text.split())
            words = [Word(" " + w, s + i * step, s + (i + 1) * step, 0.9) for i, w in enumerate(text.split())]
            utterances.append(Utterance("bench", 0 if speaker == "agent" else 1, speaker, s, e, -20.0, text=text,
                                        words=words, emotions=dict(emotions), granular=granular(emotions)))
    result = CallResult("bench", "bench", 80.0 * repeats, 2, "stereo", "asr", "emo", False,
                        speakers=[Speaker("agent", "agent", 0), Speaker("customer", "customer", 1)],
                        utterances=utterances)
    result.alerts = enrich(result.utterances)
    return result


def main() -> None:
    rules = load_rules()
    rows = []
    for repeats in (10, 40, 80):  # 90, 360 and 720 utterances: 13, 53 and 107 minutes
        call = call_of(repeats)
        batch = statistics.median(_timed(lambda: annotate(replace(call, alerts=list(call.alerts)))) for _ in range(5))
        memo: dict = {}
        steps = []
        for n in range(1, len(call.utterances) + 1):
            view = replace(call, utterances=call.utterances[:n], alerts=[])
            steps.append(_timed(lambda: annotate(view, rules=rules, live=True, memo=memo)))
        rows.append({"utterances": len(call.utterances), "minutes": round(call.duration_s / 60, 1),
                     "batch_ms": round(batch * 1000, 1),
                     "live_last_step_ms": round(statistics.median(steps[-5:]) * 1000, 1),
                     "live_all_steps_s": round(sum(steps), 2)})
    write_result("analytics", {"rules": len(rules.categories), "calls": rows})


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
