"""Rules re-run on stored calls (`emotivoice rules run`): after a rule is added or changed, every
call (or the ones named) gets its categories and summary again from what is stored, without the
audio or the models. Only the categories and the summary change; the rest of the call, its
alerts included (a rule's alert is raised when a call is analysed), is left as it is.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from emotivoice.analysis.emotion.tiers import GranularEmotion
from emotivoice.analysis.insight.risk import Alert, RiskScore
from emotivoice.analysis.insight.rulematch import evaluate
from emotivoice.analysis.insight.rules import RuleSet
from emotivoice.analysis.insight.sarcasm import SarcasmCheck
from emotivoice.analysis.insight.summary import summarize
from emotivoice.analysis.results import CallResult, Speaker, Utterance
from emotivoice.analysis.transcription import Word
from emotivoice.storage.db import StorageError
from emotivoice.storage.store import Store


def _value(x: object) -> object:
    """A stored value as Python: None for SQL NULL (pandas gives NaN, NA or None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return None if x is pd.NA or x is pd.NaT else x


def _json(x: object, default: object) -> object:
    x = _value(x)
    return json.loads(x) if isinstance(x, str) else default if x is None else x


def _rows(x: object) -> list:
    x = _value(x)
    return [] if x is None else list(x)


def stored_result(store: Store, call_id: str) -> CallResult:
    """The stored call as a CallResult with what the rules and the summary read."""
    context = store.read("call_rule_context", call_id=call_id)
    if context.empty:
        raise StorageError(f"no stored call {call_id[:64]}")
    row = context.iloc[0]
    result = CallResult(call_id, _value(row.source) or "", float(_value(row.duration_s) or 0.0),
                        int(_value(row.channels) or 0), "", "", "", False, metrics=_json(row.metrics, {}))
    result.speakers = [Speaker(s.speaker, s.role, int(s.leg), metrics=_json(s.metrics, {}))
                       for s in store.read("call_speakers", call_id=call_id).itertuples()]
    for r in store.read("call_rule_inputs", call_id=call_id).itertuples():
        sarcastic = _value(r.is_sarcastic)
        risk = _value(r.risk)
        result.utterances.append(Utterance(
            call_id, int(r.leg), r.speaker, float(r.start_s), float(r.end_s), float(_value(r.loudness_dbfs) or 0.0),
            text=_value(r.text) or "",
            words=[Word(w["word"], w["start_s"], w["end_s"], w["probability"]) for w in _rows(r.words)],
            emotions={e["emotion"]: e["probability"] for e in _rows(r.emotions)},
            granular=[GranularEmotion(g["emotion"], g["label"], g["band"], g["intensity"]) for g in _rows(r.granular)],
            complex=_value(r.complex_emotion), sentiment=float(_value(r.sentiment) or 0.0),
            sarcasm=None if sarcastic is None else SarcasmCheck(bool(sarcastic), float(_value(r.sarcasm_confidence)
                                                                                       or 0.0),
                                                                bool(_value(r.sarcasm_ambiguous)),
                                                                _value(r.sarcasm_reason) or ""),
            interrupts=bool(_value(r.interrupts)), partial=bool(_value(r.partial)),
            risk=None if risk is None else RiskScore(float(risk), _json(r.risk_factors, {}))))
    result.alerts = [Alert(_value(a.speaker), float(_value(a.t_s) or 0.0), _value(a.utterance_idx),
                           float(_value(a.score) or 0.0), _json(a.factors, {}), a.kind)
                     for a in store.read("call_alert_rows", call_id=call_id).itertuples()]
    result.customer_start_vs_end = _json(row.customer_start_vs_end, None)
    return result


def rerun_rules(store: Store, rules: RuleSet, call_ids: list[str] | None = None) -> list[dict]:
    """Categories and summary again for each call; per call: call_id, before, after (category names)."""
    ids = call_ids if call_ids else store.read("stored_call_ids").call_id.tolist()
    out = []
    for call_id in ids:
        result = stored_result(store, call_id)  # a StorageError for an unknown id
        before = [str(c) for c in _rows(store.read("call_rule_context", call_id=call_id).categories.iloc[0])]
        result.categories = evaluate(result, rules)
        summary = summarize(result, result.categories, result.customer_start_vs_end)
        store.write("set_categories", call_id=call_id, categories=[m["category"] for m in result.categories],
                    category_matches=json.dumps(result.categories), summary=json.dumps(summary),
                    summary_headline=summary["headline"])
        out.append({"call_id": call_id, "before": before, "after": [m["category"] for m in result.categories]})
    return out
