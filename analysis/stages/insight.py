"""The insight stage: sentiment, prosody against the speaker's baseline, sarcasm, escalation risk
and alerts (analysis/insight/stage.py's InsightState), scored in this one place for every path.

Batch scores a whole call at once (`whole_call`); live scores each call incrementally (`score`):
an utterance is scored once its emotions and its transcript (or the decision to skip it) are
in, and never before an earlier one, so live scores equal what batch gives the same utterances.
Live answers the alerts as plain dicts, for the caller to publish outside any lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emotivoice.analysis.insight.risk import Alert
from emotivoice.analysis.insight.stage import InsightState, enrich
from emotivoice.analysis.results import Utterance
from emotivoice.config import Settings

if TYPE_CHECKING:
    from emotivoice.analysis.live.call import LiveCall, LiveUtterance


class InsightStage:
    """`rules`: also judge the live rules after each scored utterance (analysis/live/rules.py;
    the embedded engine does, the Ray call actor does not yet)."""

    def __init__(self, settings: Settings, rules: bool = True):
        self.settings, self.rules = settings, rules

    def state(self) -> InsightState:
        """A call's fresh insight state (what it remembers between utterances)."""
        return InsightState(self.settings.sarcasm, self.settings.risk)

    def whole_call(self, utterances: list[Utterance]) -> list[Alert]:
        """Score a finished call (utterances sorted by start) in place; its alerts."""
        return enrich(utterances, self.state())

    def ready(self, call: LiveCall) -> list[tuple[LiveUtterance, Alert]]:
        """Score every utterance of a live call now ready, in order; the new alerts, with the
        utterance each came from (rule alerts after the risk ones)."""
        out = []
        for i, item in enumerate(call.utterances):
            if item.scored:
                continue
            if item.utterance is None or item.transcript == "pending":
                break
            item.scored = True
            alert = call.insight.add(i, item.utterance)
            if alert:
                out.append((item, alert))
        if self.rules:
            from emotivoice.analysis.live.rules import live_rule_alerts

            out += live_rule_alerts(call, self.settings.analytics)
        return out

    def score(self, call: LiveCall) -> list[tuple[LiveUtterance, dict]]:
        """`ready`, with each alert as the message published for it."""
        return [(item, payload(call, item, alert)) for item, alert in self.ready(call)]


def payload(call: LiveCall, item: LiveUtterance, alert: Alert) -> dict:
    """An alert as published (log, ALERT line, webhook): the call, who, when, why, and the call's ids."""
    speaker = next((s for s in call.result.speakers if s.label == alert.speaker), None)
    return {"call_id": call.call_id, "speaker": alert.speaker, "role": speaker.role if speaker else None,
            "t_s": round(alert.t_s, 2), "score": round(alert.score, 3), "factors": alert.factors,
            "kind": alert.kind, "text": item.utterance.text, "emotion": item.utterance.top_emotion[0],
            **{k: call.started.metadata.get(k) for k in ("agent_id", "customer_id", "team")}}
