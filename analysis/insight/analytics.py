"""Conversation analytics over a scored call: quarters, start against end, the post-call summary.

`annotate` is the one call the batch pipeline and the live engine make once a call's utterances
are scored (sentiment, sarcasm, risk); it fills the CallResult's analytics fields in place from
what is already there, so it needs no model and runs in milliseconds.
"""

from __future__ import annotations

from analysis.insight.quarters import quarters, start_vs_end
from analysis.insight.summary import summarize
from analysis.results import CallResult
from emotivoice.config import AnalyticsConfig


def annotate(result: CallResult, config: AnalyticsConfig | None = None) -> CallResult:
    """Fill `result`'s analytics fields from its utterances (again, if they were filled before)."""
    result.quarters = quarters(result)
    result.customer_start_vs_end = start_vs_end(result.quarters)
    result.summary = summarize(result, [], result.customer_start_vs_end)
    return result
