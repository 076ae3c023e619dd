"""The audit trail and erasure: events a client reports, the audit log an admin reads, and the
right to erasure over every table holding a call's rows (storage/access.py records the audit
rows and checks who may).

Registered with storage.queries like every named query; split from it by topic (issue 11).
"""

from __future__ import annotations

import json

import pandas as pd

from emotivoice.storage import search_index
from emotivoice.storage.db import BadRequest, short
from emotivoice.storage.queries import Con, read_query, write_action

# what a client may report on its own (the rest the store sees); recalibrate: `emotivoice recalibrate` saved a fit
EVENT_ACTIONS = ("sign_in", "sign_out", "export", "recalibrate")


@write_action
def record_event(con: Con, event: str, call_id: str | None = None, detail: str | None = None) -> dict:
    """What the store cannot see for itself (a sign-in, a download made in the browser), reported
    by the dashboard; storage/access.py writes the audit row with the acting user."""
    if event not in EVENT_ACTIONS:
        raise BadRequest(f"an event is one of {', '.join(EVENT_ACTIONS)}, not {short(event)}")
    if detail is not None and (not isinstance(detail, str) or len(detail) > 500):
        raise BadRequest("detail must be a string of at most 500 characters")
    return {"recorded": event}


@read_query
def audit_log(con: Con, date_from: str | None = None, date_to: str | None = None, user_name: str | None = None,
              action: str | None = None, limit: int = 10_000) -> pd.DataFrame:
    """The audit trail, newest first, filtered by day, user and action."""
    return con.execute("""
        SELECT audit_id, logged_at, user_name, role, action, call_id, detail, client FROM audit_log
        WHERE (?::TIMESTAMP IS NULL OR logged_at >= ?::TIMESTAMP)
          AND (?::TIMESTAMP IS NULL OR logged_at < ?::TIMESTAMP + INTERVAL 1 DAY)
          AND (?::VARCHAR IS NULL OR user_name = ?)
          AND (?::VARCHAR IS NULL OR action = ?)
        ORDER BY logged_at DESC, audit_id DESC LIMIT ?""",
        [date_from, date_from, date_to, date_to, user_name, user_name, action, action, limit]).df()


def call_tables(con: Con) -> list[str]:
    """Every table of ours with a call_id column, but the audit trail: where a call's rows are."""
    rows = con.execute("""
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)
        WHERE c.table_catalog = current_database() AND c.table_schema = 'main' AND c.column_name = 'call_id'
          AND t.table_type = 'BASE TABLE' AND c.table_name <> 'audit_log'
        ORDER BY c.table_name = 'calls', c.table_name""").fetchall()  # calls last
    return [r[0] for r in rows]


def _json_strings(value: object) -> set[str]:
    if isinstance(value, dict):
        return set().union(*map(_json_strings, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_json_strings, value)) if value else set()
    return {value} if isinstance(value, str) else set()


def _customer_calls(con: Con, customer_id: str) -> list[tuple[str, str | None]]:
    """(call_id, source) of the customer's calls: by customer_id, or where the source's own ids
    (calls.external_ids, migration 006) carry it as a value."""
    found = dict(con.execute("SELECT call_id, source FROM calls WHERE customer_id = ?", [customer_id]).fetchall())
    for call_id, source, external in con.execute(
            "SELECT call_id, source, external_ids FROM calls WHERE external_ids IS NOT NULL").fetchall():
        try:
            if customer_id in _json_strings(json.loads(external)):
                found[call_id] = source
        except ValueError:
            continue
    return sorted(found.items())


@write_action
def erase_calls(con: Con, call_id: str | None = None, customer_id: str | None = None,
                requested_by: str | None = None) -> dict:
    """Right to erasure: every row of one call, or of every call of one customer, from every table
    but the audit trail (storage/access.py runs this in one transaction with the audit rows that
    record it). Returns the calls with their sources, for the caller to remove the audio."""
    if (call_id is None) == (customer_id is None):
        raise BadRequest("name either a call_id or a customer_id")
    key = call_id if customer_id is None else customer_id
    if not isinstance(key, str) or not key.strip():
        raise BadRequest("the id to erase must be a non-empty string")
    if requested_by is not None and (not isinstance(requested_by, str) or len(requested_by) > 200):
        raise BadRequest("requested_by must be a short string")
    if call_id is not None:
        calls = con.execute("SELECT call_id, source FROM calls WHERE call_id = ?", [call_id]).fetchall()
        ids = [call_id]
    else:
        calls = _customer_calls(con, customer_id)
        ids = [c for c, _ in calls]
    rows = search_index.forget_calls(con, ids)  # keyed by call_key, so not among call_tables' own deletes
    for table in call_tables(con):  # names from the schema, never from the caller
        rows += con.execute(f'DELETE FROM "{table}" WHERE list_contains(?::VARCHAR[], call_id)', [ids]).fetchone()[0]
    return {"calls": [{"call_id": c, "source": s} for c, s in calls], "rows": int(rows),
            "erased_ids": ids if rows else []}
