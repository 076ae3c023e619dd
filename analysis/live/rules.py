"""Rules on live calls: after each utterance is scored, the categories that already hold, and an
alert the first time a rule marked `alert` matches (published like an escalation alert: log,
ALERT line, webhook, stored with the call so the Live floor shows it).

Only rules whose matches hold as the call goes on are judged live (no "last minute", no "never
said", no talk share): the final batch pass judges every rule on the whole call. The call's
quarters and summary are refreshed at the same time, so a live call's row carries them too.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from emotivoice.analysis.insight.analytics import annotate, rules_for
from emotivoice.analysis.insight.quarters import call_length
from emotivoice.analysis.insight.risk import Alert
from emotivoice.analysis.insight.rulematch import rule_alerts
from emotivoice.analysis.insight.rules import RulesError
from emotivoice.config import AnalyticsConfig

if TYPE_CHECKING:
    from emotivoice.analysis.live.call import LiveCall, LiveUtterance

log = logging.getLogger(__name__)


def live_rule_alerts(call: LiveCall, config: AnalyticsConfig) -> list[tuple[LiveUtterance, Alert]]:
    """New rule alerts for `call` (each added to its alerts), with the utterance that completed each."""
    if not config.live_rules:
        return []
    scored = [item for item in call.utterances if item.scored and item.utterance is not None]
    if not scored:
        return []
    try:
        rules = rules_for(config)
    except RulesError as exc:  # a broken rules file must not stop live analysis; batch reports it too
        log.error("live rules not evaluated", extra={"call_id": call.call_id, "error": str(exc)})
        return []
    view = replace(call.result, utterances=[item.utterance for item in scored], alerts=list(call.insight.alerts))
    view.duration_s = max(view.duration_s, max((u.end for u in view.utterances), default=0.0))
    annotate(view, rules=rules, live=True, memo=call.rule_memo)
    call.result.categories, call.result.quarters = view.categories, view.quarters
    call.result.customer_start_vs_end, call.result.summary = view.customer_start_vs_end, view.summary
    out = []
    for alert in rule_alerts(view.categories, call.insight.alerts, call_length(view)):
        call.insight.alerts.append(alert)
        item = scored[alert.utterance_idx] if alert.utterance_idx is not None else scored[-1]
        out.append((item, alert))
    return out
