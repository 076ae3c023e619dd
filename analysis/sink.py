"""The analysis -> storage boundary: a CallResult becomes one CallRecord, written atomically."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from emotivoice.analysis.audio import AudioError
from emotivoice.analysis.emotion.tiers import NEGATIVE_EMOTIONS
from emotivoice.analysis.insight.scorecard import answer_rows
from emotivoice.analysis.redaction.keep import redact_kept_audio
from emotivoice.analysis.results import CallResult
from emotivoice.storage.db import CallRecord, StorageError, save_call
from emotivoice.storage.store import Store


def _negative(u) -> float:
    """The utterance's plain negative share (the valence table's NEGATIVE_EMOTIONS)."""
    return sum(u.emotions.get(e, 0.0) for e in NEGATIVE_EMOTIONS)


def call_summary(result: CallResult) -> dict:
    """What the dashboard lists and reports need per call, computed once at write time."""
    customer = {s.label for s in result.speakers if s.role == "customer"}
    agent = {s.label for s in result.speakers if s.role == "agent"}
    theirs = [u for u in result.utterances if u.speaker in customer]
    risks = [u.risk.score for u in theirs if u.risk]
    # empathy proxy: while the customer sounds negative, does the agent answer calm or warm?
    replies = [u for i, u in enumerate(result.utterances) if u.speaker in agent and any(
        p.speaker in customer and _negative(p) > 0.5 for p in result.utterances[max(0, i - 2):i])]
    return {
        "peak_risk": max(risks) if risks else None, "final_risk": risks[-1] if risks else None,
        "alert_count": sum(1 for a in result.alerts if a.speaker in customer),
        "customer_start_negative": sum(map(_negative, theirs[:3])) / len(theirs[:3]) if theirs else None,
        "customer_end_negative": sum(map(_negative, theirs[-3:])) / len(theirs[-3:]) if theirs else None,
        "customer_final_emotion": theirs[-1].top_emotion[0] if theirs else None,
        "sarcasm_count": sum(1 for u in result.utterances if u.sarcasm and u.sarcasm.is_sarcastic),
        "churn_phrases": sorted({p for u in theirs for p in u.phrases.get("churn", [])}),
        "agent_empathy": (sum(u.emotions.get("neutral", 0) + u.emotions.get("happiness", 0) for u in replies)
                          / len(replies)) if replies else None,
    }


def analytics_columns(result: CallResult) -> dict:
    """The call row's analytics columns (migration 010), from what annotate() put on the result."""
    trend = result.customer_start_vs_end or {}
    return {"quarters": json.dumps(result.quarters),
            "customer_start_vs_end": json.dumps(trend) if trend else None,
            "customer_start_sentiment": trend.get("start_sentiment"),
            "customer_end_sentiment": trend.get("end_sentiment"), "customer_trend": trend.get("trend"),
            "summary": json.dumps(result.summary) if result.summary else None,
            "summary_headline": result.summary["headline"] if result.summary else None,
            "categories": [m["category"] for m in result.categories], "category_matches": json.dumps(result.categories),
            "scorecard_name": result.scorecard["name"] if result.scorecard else None}


CALL_METADATA = ("agent_id", "customer_id", "team", "started_at", "ended_at", "dropped_frames")


def to_record(result: CallResult, mode: str = "batch", metadata: dict | None = None,
              status: str = "complete") -> CallRecord:
    """`metadata`: agent_id, customer_id, team and started_at where the recording system knows them;
    live calls add ended_at and dropped_frames."""
    call = {
        "call_id": result.call_id, "source": result.source, "mode": mode, "status": status,
        "analyzed_at": datetime.now(timezone.utc).replace(tzinfo=None), "duration_s": result.duration_s,
        "channels": result.channels, "diarization": result.diarization, "vad": result.vad,
        "asr_model": result.asr_model, "emotion_model": result.emotion_model,
        "emotion_provisional": result.emotion_provisional, "warnings": result.warnings,
        "metrics": json.dumps(result.metrics), **call_summary(result), **analytics_columns(result),
        **{k: v for k, v in (metadata or {}).items() if k in CALL_METADATA},
        "external_ids": external_ids(metadata or {}),
        **redaction_columns(result),
        "calibration": json.dumps(result.calibration, sort_keys=True) if result.calibration else None,
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
            "start_s": u.start, "end_s": u.end, "text": u.text, "transcript_note": u.transcript_note,
            "language": u.language,
            "words": [{"word": w.word, "start_s": w.start, "end_s": w.end, "probability": w.probability}
                      for w in u.words],
            "loudness_dbfs": u.loudness_dbfs, "base_emotion": top, "base_confidence": confidence,
            "granular": [g.to_dict() for g in u.granular], "complex_emotion": u.complex,
            "sentiment": u.sentiment, "prosody": json.dumps(u.prosody.as_dict()) if u.prosody else None,
            "prosody_z": json.dumps(u.prosody_z), "interrupts": u.interrupts, "phrases": json.dumps(u.phrases),
            "partial": u.partial,
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
    return CallRecord(call, speakers, utterances, scores, sarcasm, risk, alerts,
                      scorecard=answer_rows(result.call_id, result.scorecard))


def redaction_columns(result: CallResult) -> dict:
    """The policy the call was analysed under, as the calls table keeps it (nothing when the
    result was never redacted, e.g. a live call with live redaction off: the final pass adds it)."""
    summary = result.metrics.get("redaction")
    if not isinstance(summary, dict):
        return {}
    policy = summary.get("policy") or {}
    return {"redaction_policy": policy.get("name"), "redaction_version": policy.get("version"),
            "redaction": json.dumps({k: v for k, v in summary.items() if k != "policy"}, sort_keys=True)}


def external_ids(metadata: dict) -> str | None:
    """The source's own ids ("external", "custom" sub-dicts of a live call's metadata) as JSON data."""
    kept = {k: metadata[k] for k in ("external", "custom") if isinstance(metadata.get(k), dict) and metadata[k]}
    return json.dumps(kept, sort_keys=True) if kept else None


def store_result(con: duckdb.DuckDBPyConnection, result: CallResult) -> None:
    save_call(con, to_record(result))


def sidecar_metadata(path: Path) -> dict:
    """What a sidecar `<recording>.json` says, when the recording system (or the live service, for
    the calls it kept) writes one: agent_id, customer_id, team, started_at, and for live calls
    ended_at, dropped_frames and mode; {} without one."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        return {k: v for k, v in json.loads(sidecar.read_text()).items()
                if k in CALL_METADATA + ("mode", "external", "custom")}
    except (ValueError, AttributeError):
        return {}


def recording_metadata(path: Path, duration_s: float, sidecar: dict | None = None) -> dict:
    """Who and when: the sidecar's metadata (`sidecar`, when already read), the start defaulting
    to the file's time less the call's duration."""
    meta = dict(sidecar_metadata(path) if sidecar is None else sidecar)
    if "started_at" not in meta:
        ended = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).replace(tzinfo=None)
        meta["started_at"] = ended - timedelta(seconds=duration_s)
    return meta


def analyze_and_store(analyzer, path: Path, store: Store, metadata: dict | None = None, **options) -> CallResult:
    """Analyse one recording and store it (directly, or through the process owning the file)."""
    sidecar = sidecar_metadata(Path(path))  # read once: its team picks the emotion calibration profile
    team = (metadata or {}).get("team") or sidecar.get("team")
    result = analyzer.analyze(path, **options, **({"team": str(team)} if team else {}))
    meta = {**recording_metadata(Path(path), result.duration_s, sidecar),
            **{k: v for k, v in (metadata or {}).items() if v}}
    try:  # a kept recording loses its redacted spans before the call is stored
        redact_kept_audio(Path(path), result, analyzer.settings)
    except (OSError, ValueError) as exc:  # WavError, a full disk: the call is not stored, the file kept as it was
        raise AudioError(f"{path}: recording could not be redacted ({exc}); call not stored") from exc
    store.save_call(to_record(result, mode=meta.pop("mode", "batch"), metadata=meta))
    return result


def known_call_ids(store: Store) -> set[str]:
    """Ids of every stored call; empty when there is no database yet."""
    try:
        return set(store.read("stored_call_ids").call_id)
    except StorageError:
        return set()
