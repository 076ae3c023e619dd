"""Retention in the store: transcripts and whole calls past their policy's age, taken out.

A retention policy (emotivoice.config.RetentionConfig) keeps each kind of call data for its own
number of days: the audio (files, removed by emotivoice/app/retention.py), the transcript (what was
said: utterance text, words and quoted phrases, and the summary and category evidence that quote
them) and the metadata (the call itself: every row of it in every table, as an erasure). A call's
age is its start (or, without one, when it was analysed). A call whose transcript has gone keeps
its emotions, risk, metrics and categories, and says when its words went
(`calls.transcript_expired_at`, migration 014), so the dashboard can show why there is no text.

`expire_calls` is a write action of the store: the store service runs it for whoever owns the
file, in one transaction with the audit rows that record it (storage/access.py), as it does an
erasure. No table or column name comes from the caller.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from emotivoice.storage import search_index
from emotivoice.storage.db import BadRequest
from emotivoice.storage.queries import Con, _utc_now, call_tables, write_action

# what a transcript is made of, beyond the utterances' own text and words: columns of calls that
# quote what was said (the summary's reasons and endings, the rules' evidence)
CALL_TRANSCRIPT_COLUMNS = ("summary", "summary_headline", "category_matches")
AGE = "coalesce(started_at, analyzed_at)"


def _days(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 365_000:
        raise BadRequest(f"{name} must be a whole number of days from 0 (keep forever) up")
    return value


def _now(now: object) -> datetime:
    if now is None:
        return _utc_now()
    try:
        return datetime.fromisoformat(str(now)).replace(tzinfo=None)
    except ValueError:
        raise BadRequest("now must be an ISO timestamp") from None


def _older(con: Con, cutoff: datetime, extra: str = "") -> list[tuple[str, str | None]]:
    """(call_id, source) of finished calls older than `cutoff`; `extra` is our own SQL condition."""
    return con.execute(
        f"SELECT call_id, source FROM calls WHERE {AGE} < ? AND status NOT IN ('live', 'interrupted') {extra} "
        "ORDER BY call_id", [cutoff]).fetchall()


@write_action
def expire_calls(con: Con, transcript_days: int = 0, metadata_days: int = 0, audio_files_removed: int = 0,
                 policy: str = "default", now: str | None = None) -> dict:
    """Retention for the store: the transcripts of calls older than `transcript_days` emptied, and
    calls older than `metadata_days` erased from every table but the audit trail (0: kept). Returns
    the calls erased, with their sources, for the caller to remove their audio;
    `audio_files_removed` (what the caller's file retention took) is only recorded."""
    transcript_days, metadata_days = _days("transcript_days", transcript_days), _days("metadata_days", metadata_days)
    if isinstance(audio_files_removed, bool) or not isinstance(audio_files_removed, int) or audio_files_removed < 0:
        raise BadRequest("audio_files_removed must be a count")
    if not isinstance(policy, str) or not policy or len(policy) > 64:
        raise BadRequest("policy must be a short name")
    at = _now(now)
    erased: list[tuple[str, str | None]] = []
    rows = 0
    if metadata_days:
        erased = _older(con, at - timedelta(days=metadata_days))
        ids = [c for c, _ in erased]
        rows += search_index.forget_calls(con, ids) if ids else 0  # postings are keyed by call_key, not call_id
        for table in call_tables(con):  # names from the schema, never from the caller
            rows += con.execute(f'DELETE FROM "{table}" WHERE list_contains(?::VARCHAR[], call_id)',
                                [ids]).fetchone()[0] if ids else 0
    expired: list[str] = []
    if transcript_days:
        expired = [c for c, _ in _older(con, at - timedelta(days=transcript_days), "AND transcript_expired_at IS NULL")]
        if expired:
            search_index.forget_calls(con, expired)  # an expired transcript must not live on as snippets
            con.execute("UPDATE utterances SET text = NULL, words = NULL, phrases = NULL "
                        "WHERE list_contains(?::VARCHAR[], call_id)", [expired])
            sets = ", ".join(f"{c} = NULL" for c in CALL_TRANSCRIPT_COLUMNS)  # our own column names
            con.execute(f"UPDATE calls SET {sets}, transcript_expired_at = ? "
                        "WHERE list_contains(?::VARCHAR[], call_id)",
                        [at, expired])
    return {"policy": policy, "calls": [{"call_id": c, "source": s} for c, s in erased], "rows": int(rows),
            "erased_ids": [c for c, _ in erased], "transcripts_expired": expired,
            "audio_files_removed": audio_files_removed, "transcript_days": transcript_days,
            "metadata_days": metadata_days}


def audit_rows(result: dict) -> list[tuple[str, str | None, str]]:
    """(action, call_id, detail) rows a retention run leaves in the audit trail: one per call
    whose transcript or whole record went, and one for the run (even when nothing was due)."""
    policy = result["policy"]
    rows: list[tuple[str, str | None, str]] = [
        ("retention", c, f"policy {policy}: transcript older than {result['transcript_days']} days removed")
        for c in result["transcripts_expired"]]
    rows += [("retention", c, f"policy {policy}: call older than {result['metadata_days']} days erased")
             for c in result["erased_ids"]]
    rows.append(("retention", None, f"policy {policy}: {len(result['erased_ids'])} call(s) erased "
                 f"({result['rows']} rows), {len(result['transcripts_expired'])} transcript(s) removed, "
                 f"{result['audio_files_removed']} audio file(s) removed"))
    return rows
