"""Conversation analytics over a scored call: categories from rules, quarters, start against end,
the post-call summary, the QA scorecard.

`annotate` is the one call the batch pipeline makes once a call's utterances are scored
(sentiment, sarcasm, risk); it fills the CallResult's analytics fields in place from what is
already there, so it needs no model and runs in milliseconds; the QA scorecard is filled in from
the categories and metrics once the call is complete (not on live steps). A rule marked `alert` adds an alert
(kind "category:<name>") to the call's alerts. analysis/live/rules.py does the same as a live call
grows.
"""

from __future__ import annotations

from emotivoice.analysis.insight.quarters import call_length, quarters, start_vs_end
from emotivoice.analysis.insight.rulematch import evaluate, rule_alerts
from emotivoice.analysis.insight.rules import RuleSet, RulesError, load_rules
from emotivoice.analysis.insight.scorecard import ScorecardError, load_scorecard, score_call
from emotivoice.analysis.insight.summary import summarize
from emotivoice.analysis.results import CallResult
from emotivoice.config import AnalyticsConfig


def rules_for(config: AnalyticsConfig | None) -> RuleSet:
    """The configured rule set: rules_file, else what the admin rules editor saved, else the shipped set."""
    return load_rules(config.active_rules_file() if config else None)


def annotate(result: CallResult, config: AnalyticsConfig | None = None, rules: RuleSet | None = None,
             live: bool = False, memo: dict | None = None) -> CallResult:
    """Fill `result`'s analytics fields from its utterances (again, if they were filled before).
    `live`: only rules whose matches hold as the call goes on, and no alerts added (the live
    engine raises those itself); `memo`: kept by the caller between steps of one live call."""
    if rules is None:
        try:
            rules = rules_for(config)
        except RulesError as exc:  # the call is still analysed and stored, and says why it has no categories
            result.warnings.append(f"categories not evaluated: {exc}")
            rules = RuleSet()
    result.categories = evaluate(result, rules, live=live, memo=memo)
    if not live:
        result.alerts = [*result.alerts, *rule_alerts(result.categories, result.alerts, call_length(result))]
    result.quarters = quarters(result)
    result.customer_start_vs_end = start_vs_end(result.quarters)
    result.summary = summarize(result, result.categories, result.customer_start_vs_end)
    if not live:
        try:
            card = load_scorecard(config.scorecard_file if config else None, rules)
            result.scorecard = score_call(result, card)
        except ScorecardError as exc:  # stored without a scorecard, saying why
            result.warnings.append(f"scorecard not filled in: {exc}")
    return result
