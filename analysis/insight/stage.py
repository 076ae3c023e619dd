"""The insight stage: runs over a call's utterances in time order and adds sentiment, prosody
against the speaker's baseline, the sarcasm check and the escalation risk, plus alerts.

`InsightState` holds everything it needs between utterances, so the live path can feed it one
utterance at a time and get the same answers the batch path gets for the whole call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emotivoice.analysis.conversation import INTERRUPTION_MIN_OVERLAP_S
from emotivoice.analysis.insight.phrases import CHURN, ESCALATION, matches
from emotivoice.analysis.insight.prosody import Baseline
from emotivoice.analysis.insight.risk import Alert, RiskConfig, RiskTracker
from emotivoice.analysis.insight.sarcasm import SarcasmConfig, check_sarcasm
from emotivoice.analysis.insight.sentiment import text_sentiment
from emotivoice.analysis.results import Utterance


@dataclass
class InsightState:
    sarcasm_config: SarcasmConfig = field(default_factory=SarcasmConfig)
    risk_config: RiskConfig = field(default_factory=RiskConfig)
    baselines: dict[str, Baseline] = field(default_factory=dict)
    trackers: dict[str, RiskTracker] = field(default_factory=dict)
    seen: list[Utterance] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    def add(self, index: int, u: Utterance) -> Alert | None:
        """Score utterance `u` (the index-th of its call, in time order) in place."""
        u.sentiment = text_sentiment(u.text)
        baseline = self.baselines.setdefault(u.speaker, Baseline())
        if u.prosody is not None:
            u.prosody_z = baseline.deviations(u.prosody)
            baseline.update(u.prosody)
        u.sarcasm = check_sarcasm(u.sentiment, u.emotions, u.prosody_z, self.sarcasm_config)
        u.phrases = {"escalation": matches(u.text, ESCALATION), "churn": matches(u.text, CHURN)}
        u.interrupts = any(o.speaker != u.speaker and o.start < u.start
                           and o.end - u.start >= INTERRUPTION_MIN_OVERLAP_S
                           for o in self.seen[-6:])
        self.seen.append(u)
        tracker = self.trackers.setdefault(u.speaker, RiskTracker(u.speaker, self.risk_config))
        # A sarcastic utterance counts as negative: its words' sentiment flips sign.
        sentiment = -abs(u.sentiment) if u.sarcasm.is_sarcastic else u.sentiment
        u.risk = tracker.update(u.emotions, u.sarcasm.confidence if u.sarcasm.is_sarcastic else 0.0, sentiment,
                                int(u.interrupts), u.prosody_z.get("loudness_dbfs", 0.0), u.phrases["escalation"])
        alert = tracker.alert(u.end, index, u.risk)
        if alert:
            self.alerts.append(alert)
        return alert


def enrich(utterances: list[Utterance], state: InsightState | None = None) -> list[Alert]:
    """Score a whole call (utterances sorted by start) and return its alerts."""
    state = state or InsightState()
    for i, u in enumerate(utterances):
        state.add(i, u)
    return state.alerts
