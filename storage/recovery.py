"""Crash recovery's side of the store: calls a stopped service left unfinished, marked interrupted
and finished once recovery (analysis/live/recovery.py) has stored what their audio allows.

Registered with storage.queries like every named query; split from it by topic (issue 11).
"""

from __future__ import annotations

import pandas as pd

from emotivoice.storage import search_index
from emotivoice.storage.db import BadRequest, rollback, short
from emotivoice.storage.queries import Con, read_query, write_action

@read_query
def unfinished_calls(con: Con) -> pd.DataFrame:
    """Calls no process is working on any more, read at start by the process that now owns the
    file: 'live' (the service died mid-call or before the batch pass stored the call) and
    'interrupted' (marked so by an earlier start whose recovery was cut short too)."""
    return con.execute("""
        SELECT call_id, status, started_at, ended_at, analyzed_at, duration_s, channels
        FROM calls WHERE status IN ('live', 'interrupted') ORDER BY started_at, call_id""").df()


def _with_warnings(con: Con, call_id: str, warnings: list[str]) -> list[str]:
    """The call's warnings with `warnings` added once; an earlier "interrupted: ..." is replaced."""
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise BadRequest("warnings must be a list of strings")
    row = con.execute("SELECT warnings FROM calls WHERE call_id = ?", [call_id]).fetchone()
    if row is None:
        raise BadRequest(f"no call {short(call_id)}")
    replaced = {"interrupted:"} if any(w.startswith("interrupted:") for w in warnings) else set()
    kept = [w for w in (row[0] or []) if w not in warnings and not any(w.startswith(p) for p in replaced)]
    return kept + warnings


@write_action
def mark_interrupted(con: Con, call_id: str, at: str, warning: str) -> dict:
    """A call its service stopped on (a crash, kill -9) is 'interrupted' from `at` on, saying so in
    its warnings, until recovery stores what its audio allows. Only a 'live' or 'interrupted'
    call is touched: one that was stored complete stays as it is."""
    con.execute("BEGIN TRANSACTION")
    try:
        status = con.execute("SELECT status FROM calls WHERE call_id = ?", [call_id]).fetchone()
        if status is None or status[0] not in ("live", "interrupted"):
            con.execute("ROLLBACK")
            return {"call_id": call_id, "marked": False}
        con.execute("UPDATE calls SET status = 'interrupted', ended_at = coalesce(ended_at, ?::TIMESTAMP), "
                    "warnings = ? WHERE call_id = ?", [at, _with_warnings(con, call_id, [warning]), call_id])
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return {"call_id": call_id, "marked": True}


@write_action
def finish_interrupted(con: Con, call_id: str, warnings: list[str], source: str | None = None) -> dict:
    """Recovery is done with the call: 'complete', with `warnings` (where it was cut, a failed
    batch pass) added to what the batch pass or the live service stored, and its kept audio."""
    con.execute("BEGIN TRANSACTION")
    try:
        merged = _with_warnings(con, call_id, warnings)
        con.execute("UPDATE calls SET status = 'complete', source = coalesce(?, source), warnings = ? "
                    "WHERE call_id = ?", [source, merged, call_id])
        search_index.index_stored_call(con, call_id)  # what the live saves left is searchable now
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return {"call_id": call_id, "warnings": merged}
