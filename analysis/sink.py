"""The analysis -> storage boundary: a CallResult becomes one CallRecord, written atomically."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from analysis.results import CallResult
from storage.db import CallRecord, connect, save_call


def to_record(result: CallResult, mode: str = "batch") -> CallRecord:
    call = {
        "call_id": result.call_id, "source": result.source, "mode": mode, "status": "complete",
        "analyzed_at": datetime.now(timezone.utc).replace(tzinfo=None), "duration_s": result.duration_s,
        "channels": result.channels, "diarization": result.diarization, "vad": result.vad,
        "asr_model": result.asr_model, "emotion_model": result.emotion_model,
        "emotion_provisional": result.emotion_provisional, "warnings": result.warnings,
        "metrics": json.dumps(result.metrics),
    }
    speakers = [{"call_id": result.call_id, "speaker": s.label, "role": s.role, "leg": s.leg,
                 "language": result.languages.get(s.label), "talk_time_s": s.talk_time_s,
                 "metrics": json.dumps(s.metrics), "role_confidence": s.role_confidence,
                 "role_source": s.role_source, "role_reason": s.role_reason}
                for s in result.speakers]
    utterances, scores, sarcasm, risk = [], [], [], []
    for idx, u in enumerate(result.utterances):
        top, confidence = u.top_emotion
        utterances.append({
            "call_id": result.call_id, "utterance_idx": idx, "speaker": u.speaker, "leg": u.leg,
            "start_s": u.start, "end_s": u.end, "text": u.text, "language": u.language,
            "words": [{"word": w.word, "start_s": w.start, "end_s": w.end, "probability": w.probability}
                      for w in u.words],
            "loudness_dbfs": u.loudness_dbfs, "base_emotion": top, "base_confidence": confidence,
            "granular": [g.to_dict() for g in u.granular], "complex_emotion": u.complex,
            "sentiment": u.sentiment, "prosody": json.dumps(u.prosody.as_dict()) if u.prosody else None,
            "prosody_z": json.dumps(u.prosody_z), "interrupts": u.interrupts, "phrases": json.dumps(u.phrases),
        })
        if u.sarcasm:
            sarcasm.append({"call_id": result.call_id, "utterance_idx": idx, "is_sarcastic": u.sarcasm.is_sarcastic,
                            "confidence": u.sarcasm.confidence, "ambiguous": u.sarcasm.ambiguous,
                            "reason": u.sarcasm.reason})
        if u.risk:
            risk.append({"call_id": result.call_id, "utterance_idx": idx, "speaker": u.speaker, "t_s": u.end,
                         "score": u.risk.score, "factors": json.dumps(u.risk.factors)})
        scores += [{"call_id": result.call_id, "utterance_idx": idx, "emotion": e, "probability": p}
                   for e, p in u.emotions.items()]
    alerts = [{"call_id": result.call_id, "speaker": a.speaker, "t_s": a.t_s, "kind": a.kind, "score": a.score,
               "factors": json.dumps(a.factors), "utterance_idx": a.utterance_idx} for a in result.alerts]
    return CallRecord(call, speakers, utterances, scores, sarcasm, risk, alerts)


def store_result(con: duckdb.DuckDBPyConnection, result: CallResult) -> None:
    save_call(con, to_record(result))


def analyze_and_store(analyzer, path: Path, db_path: Path, **options) -> CallResult:
    """Analyse one recording and store it, holding the database only for the write."""
    result = analyzer.analyze(path, **options)
    con = connect(db_path, wait_s=30.0)
    try:
        store_result(con, result)
    finally:
        con.close()
    return result
