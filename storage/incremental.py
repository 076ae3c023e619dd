"""Incremental saves of live calls: only the rows that changed, many calls in one transaction.

A whole-call rewrite (storage.db.save_call) deletes and re-inserts every row of the call, 27-40 ms
for a 45 s call and growing with it; a live call changes one or two utterances at a time. So the
Ray engine (analysis/live/cluster/) sends a `CallDelta` per changed call: the call's own row (one
row, always), its speakers and alerts only when they changed, and the utterances that changed
with their child rows (emotion scores, sarcasm, risk). `utterance_count` says how many utterances
the call has now: rows at or past it go (a rolling update that became final, or shrank). Deltas
of many calls are written in one transaction (a group commit), and `diff_record` makes a delta
from two successive CallRecords, so what is stored is exactly what save_call would store.

Safety is save_call's: every key must name a real column of its table (storage.db.check_record,
the same allowlist), every row must carry the call's id, utterance indices must be integers, and
values travel only as parameters. Tables and columns in SQL are our own names, never a caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import duckdb

from emotivoice.storage import db
from emotivoice.storage.db import BadRequest, CallRecord, StorageError

CHILD_TABLES = ("emotion_scores", "sarcasm", "risk_scores")  # rows keyed by (call_id, utterance_idx, ...)


@dataclass
class CallDelta:
    """What changed in one call since its last save; `speakers`/`alerts` None: unchanged."""

    call: dict
    utterance_count: int
    utterances: list[dict] = field(default_factory=list)
    emotion_scores: list[dict] = field(default_factory=list)
    sarcasm: list[dict] = field(default_factory=list)
    risk_scores: list[dict] = field(default_factory=list)
    speakers: list[dict] | None = None
    alerts: list[dict] | None = None

    @property
    def call_id(self) -> str:
        return self.call["call_id"]

    @classmethod
    def from_json(cls, body: object) -> CallDelta:
        """A delta sent over the wire: only CallDelta's fields (columns are checked by save_deltas)."""
        if not isinstance(body, dict):
            raise BadRequest("a call delta must be a JSON object")
        known = {f.name for f in fields(cls)}
        for key in body:
            if key not in known:
                raise BadRequest(f"unknown field {db.short(key)}")
        if "call" not in body or "utterance_count" not in body:
            raise BadRequest("a call delta needs 'call' and 'utterance_count'")
        return cls(**body)


def _by_idx(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in rows:
        out.setdefault(row["utterance_idx"], []).append(row)
    return out


def diff_record(previous: CallRecord | None, record: CallRecord) -> CallDelta:
    """The delta that turns what `previous` stored into `record` (everything when previous is None)."""
    old_u = {u["utterance_idx"]: u for u in previous.utterances} if previous else {}
    old_children = {t: _by_idx(getattr(previous, t)) for t in CHILD_TABLES} if previous else {}
    new_children = {t: _by_idx(getattr(record, t)) for t in CHILD_TABLES}
    changed = []
    for u in record.utterances:
        i = u["utterance_idx"]
        if previous is None or old_u.get(i) != u or any(
                old_children[t].get(i, []) != new_children[t].get(i, []) for t in CHILD_TABLES):
            changed.append(i)
    keep = set(changed)
    return CallDelta(
        call=record.call, utterance_count=len(record.utterances),
        utterances=[u for u in record.utterances if u["utterance_idx"] in keep],
        **{t: [r for r in getattr(record, t) if r["utterance_idx"] in keep] for t in CHILD_TABLES},
        speakers=record.speakers if previous is None or previous.speakers != record.speakers else None,
        alerts=record.alerts if previous is None or previous.alerts != record.alerts else None)


def merge(older: CallDelta, newer: CallDelta) -> CallDelta:
    """One delta doing what `older` then `newer` would (a save the store refused waits merged)."""
    count = newer.utterance_count
    mine = {u["utterance_idx"] for u in newer.utterances}
    kept_old = {u["utterance_idx"] for u in older.utterances if u["utterance_idx"] < count} - mine

    def rows(table: str) -> list[dict]:
        return [r for r in getattr(older, table) if r["utterance_idx"] in kept_old] + getattr(newer, table)

    return CallDelta(newer.call, count, rows("utterances"), *(rows(t) for t in CHILD_TABLES),
                     speakers=newer.speakers if newer.speakers is not None else older.speakers,
                     alerts=newer.alerts if newer.alerts is not None else older.alerts)


def check_delta(con: duckdb.DuckDBPyConnection, delta: CallDelta) -> None:
    """Refuse a delta unless its keys are real columns (check_record's allowlist), its rows are
    the call's, and every index is an integer in range whose children come with their utterance."""
    if not isinstance(delta.utterance_count, int) or isinstance(delta.utterance_count, bool) \
            or delta.utterance_count < 0:
        raise BadRequest("utterance_count must be a non-negative integer")
    db.check_record(con, CallRecord(delta.call, delta.speakers or [], delta.utterances, delta.emotion_scores,
                                    delta.sarcasm, delta.risk_scores, delta.alerts or []))
    for name in ("speakers", "alerts"):
        if getattr(delta, name) is not None and not isinstance(getattr(delta, name), list):
            raise BadRequest(f"{name} must be a list or null")
    indices = set()
    for u in delta.utterances:
        i = u.get("utterance_idx")
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < delta.utterance_count or i in indices:
            raise BadRequest("each utterance needs its own utterance_idx below utterance_count")
        indices.add(i)
    for table in CHILD_TABLES:
        if any(r.get("utterance_idx") not in indices for r in getattr(delta, table)):
            raise BadRequest(f"{table} rows must belong to an utterance of the delta")


def _write_one(con: duckdb.DuckDBPyConnection, delta: CallDelta) -> None:
    call_id, columns = delta.call_id, list(delta.call)  # columns checked: real columns of calls
    con.execute("DELETE FROM calls WHERE call_id = ?", [call_id])
    names = ", ".join(f'"{c}"' for c in columns)
    con.execute(f"INSERT INTO calls ({names}) VALUES ({', '.join('?' * len(columns))})",
                [delta.call[c] for c in columns])
    indices = [u["utterance_idx"] for u in delta.utterances]
    for table in ("utterances", *CHILD_TABLES):  # our own table names
        con.execute(f"DELETE FROM {table} WHERE call_id = ? AND (utterance_idx >= ? "
                    "OR list_contains(?::INTEGER[], utterance_idx))", [call_id, delta.utterance_count, indices])
        db._insert(con, table, getattr(delta, table))
    if delta.speakers is not None:
        con.execute("DELETE FROM speakers WHERE call_id = ?", [call_id])
        db._insert(con, "speakers", delta.speakers)
    if delta.alerts is not None:  # acknowledgements carried over exactly as save_call does
        alerts = db._carry_acknowledgements(con, call_id, delta.alerts)
        con.execute("DELETE FROM alerts WHERE call_id = ?", [call_id])
        for alert in alerts:
            carried = [c for c in ("alert_id", "created_at", "acknowledged_by", "acknowledged_at") if c in alert]
            db._insert(con, "alerts", [{k: v for k, v in alert.items() if k not in carried}], extra=carried,
                       values=[alert[c] for c in carried])


def save_deltas(con: duckdb.DuckDBPyConnection, deltas: list[CallDelta]) -> None:
    """Apply the deltas of many calls in one transaction. Every delta is checked first (BadRequest
    names the first refusal and nothing is written); any other failure is a StorageError and
    leaves every call as it was."""
    for delta in deltas:
        check_delta(con, delta)
    if not deltas:
        return
    try:
        con.execute("BEGIN TRANSACTION")
        for delta in deltas:
            _write_one(con, delta)
        con.execute("COMMIT")
    except Exception as exc:
        db.rollback(con)
        db._forget_rows(con)
        ids = ", ".join(d.call_id[:40] for d in deltas[:3])
        for kinds, what in db._DATA_ERRORS:
            if isinstance(exc, kinds):
                raise BadRequest(f"could not store the changes of {ids}: {what}") from exc
        raise StorageError(f"could not store the changes of {ids}: {db.first_line(exc)}") from exc
    db.keep_private_con(con)
