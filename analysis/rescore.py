"""The QA scorecard filled in again on stored calls (`emotivoice scorecard rescore`): after the card
changes, every call (or the ones named) gets its automatic answers again from what is stored (the
categories as the rules last found them, the utterances and metrics), without the audio or the
models. A coach's answers and the disputes are kept (storage/scorecards.py).
"""

from __future__ import annotations

import json

from emotivoice.analysis.insight.scorecard import Scorecard, answer_rows, score_call
from emotivoice.analysis.recategorize import stored_result
from emotivoice.storage.store import Store


def rescore(store: Store, card: Scorecard, call_ids: list[str] | None = None) -> list[dict]:
    """Each call scored again; per call: call_id, the automatic score before (as stored) and after
    (with the coach's answers it keeps)."""
    ids = call_ids if call_ids else store.read("stored_call_ids").call_id.tolist()
    out = []
    for call_id in ids:
        result = stored_result(store, call_id)  # a StorageError for an unknown id
        stored = store.read("call_analytics", call_id=call_id).iloc[0]
        matches = stored.category_matches
        categories = json.loads(matches) if isinstance(matches, str) else []
        before = store.read("call_scorecard", call_id=call_id)
        scorecard = score_call(result, card, categories)
        written = store.write("rescore_call", call_id=call_id, scorecard=answer_rows(call_id, scorecard),
                              scorecard_name=card.name)
        out.append({"call_id": call_id,
                    "before": None if before.empty else _number(before.scorecard_score.iloc[0]),
                    "after": _number(written.get("call_score"))})
    return out


def _number(value: object) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value  # NaN: no score
