"""Named read queries and write actions: the only SQL the dashboard and reports run.

Each takes an open DuckDB connection and plain parameters, bound with `?`: no SQL is built from
input. `storage.store` runs them against the file directly or through the process that owns it,
always by name through `run_read` / `run_write`, which refuse unknown names and parameters with a
BadRequest and turn DuckDB's errors into StorageError, so a caller never sees a raw traceback.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import pandas as pd

from emotivoice.storage import search_index
from emotivoice.storage.db import BadRequest, StorageError, first_line, keep_private_con, rollback, short

Con = duckdb.DuckDBPyConnection
READS: dict[str, Callable[..., pd.DataFrame]] = {}
WRITES: dict[str, Callable[..., dict]] = {}


def _utc_now() -> datetime:
    """Naive UTC, as every timestamp in the store is written."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Scope:
    """The calls a request may see (storage/access.py decides it from the user's role): all of
    them, or those of some teams or of one agent. A query that lists calls takes it as the
    keyword `scope`, which no caller can send: only the store passes it."""

    all: bool = True
    teams: tuple[str, ...] = ()
    agent_id: str | None = None

    def params(self) -> list:
        """The values for one IN_SCOPE condition, in its order."""
        return [self.all, list(self.teams), self.agent_id]


FULL = Scope()


def in_scope(alias: str = "") -> str:
    """The condition on a calls row (`alias` is our own table alias, never input) for a Scope's params."""
    return f"(?::BOOLEAN OR list_contains(?::VARCHAR[], {alias}team) OR {alias}agent_id = ?::VARCHAR)"


def read_query(fn: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    READS[fn.__name__] = fn
    return fn


def write_action(fn: Callable[..., dict]) -> Callable[..., dict]:
    WRITES[fn.__name__] = fn
    return fn


def reader(name: str) -> Callable[..., pd.DataFrame]:
    if not isinstance(name, str) or name not in READS:
        raise BadRequest(f"no read query named {short(name)}")
    return READS[name]


def writer(name: str) -> Callable[..., dict]:
    if not isinstance(name, str) or name not in WRITES:
        raise BadRequest(f"no write action named {short(name)}")
    return WRITES[name]


def takes_scope(fn: Callable) -> bool:
    return "scope" in inspect.signature(fn).parameters


def _run(fn: Callable, con: Con, params: object, scope: Scope | None = None):
    """Call a named query with the caller's parameters, checked against its signature first."""
    if not isinstance(params, dict):
        raise BadRequest("params must be an object")
    accepted = [p for p in list(inspect.signature(fn).parameters)[1:] if p != "scope"]  # scope: the store's
    for key in params:
        if key not in accepted:
            raise BadRequest(f"{fn.__name__} takes no parameter {short(key)}")
    missing = [p.name for p in list(inspect.signature(fn).parameters.values())[1:]
               if p.default is inspect.Parameter.empty and p.name not in params]
    if missing:
        raise BadRequest(f"{fn.__name__} needs {', '.join(missing)}")
    try:
        return fn(con, **params, **({"scope": scope} if scope is not None and takes_scope(fn) else {}))
    except (duckdb.ConversionException, duckdb.InvalidInputException, TypeError, ValueError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"{fn.__name__}: a parameter has the wrong type") from exc
    except duckdb.Error as exc:
        raise StorageError(f"{fn.__name__} failed: {first_line(exc)}") from exc


def run_read(con: Con, name: str, params: object = None, scope: Scope | None = None) -> pd.DataFrame:
    """The named read query with these parameters, limited to `scope` when it lists calls."""
    return _run(reader(name), con, {} if params is None else params, scope)


def run_write(con: Con, name: str, params: object = None) -> dict:
    """The named write action with these parameters; the file and its WAL stay 0600 after it."""
    result = _run(writer(name), con, {} if params is None else params)
    keep_private_con(con)
    return result


@read_query
def list_calls(con: Con, limit: int = 500, *, scope: Scope = FULL) -> pd.DataFrame:
    return con.execute(f"""
        SELECT c.call_id, c.analyzed_at, c.duration_s, c.mode, c.status, c.diarization,
               c.emotion_model, c.emotion_provisional,
               (SELECT count(*) FROM utterances u WHERE u.call_id = c.call_id) AS utterances
        FROM calls c WHERE {in_scope("c.")} ORDER BY c.analyzed_at DESC LIMIT ?""", [*scope.params(), limit]).df()


@read_query
def call_speakers(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("SELECT * FROM speakers WHERE call_id = ? ORDER BY leg, speaker", [call_id]).df()


@read_query
def call_utterances(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("""
        SELECT u.utterance_idx, u.speaker, u.start_s, u.end_s, u.text, u.base_emotion, u.base_confidence,
               list_transform(u.granular, lambda g: g.label) AS granular_labels, u.complex_emotion, u.loudness_dbfs,
               u.sentiment, s.is_sarcastic, s.confidence AS sarcasm_confidence, s.ambiguous AS sarcasm_ambiguous,
               s.reason AS sarcasm_reason, r.score AS risk, r.factors AS risk_factors, u.partial
        FROM utterances u
        LEFT JOIN sarcasm s USING (call_id, utterance_idx)
        LEFT JOIN risk_scores r ON r.call_id = u.call_id AND r.utterance_idx = u.utterance_idx
        WHERE u.call_id = ? ORDER BY u.start_s""", [call_id]).df()


@read_query
def call_emotion_scores(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("""
        SELECT u.utterance_idx, u.speaker, u.start_s, u.end_s, s.emotion, s.probability
        FROM emotion_scores s JOIN utterances u USING (call_id, utterance_idx)
        WHERE s.call_id = ? ORDER BY u.start_s, s.emotion""", [call_id]).df()


@read_query
def call_alerts(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("""SELECT alert_id, speaker, t_s, kind, score, factors, created_at, acknowledged_by,
                                 acknowledged_at FROM alerts WHERE call_id = ? ORDER BY t_s""", [call_id]).df()


@read_query
def stored_call_ids(con: Con) -> pd.DataFrame:
    return con.execute("SELECT call_id FROM calls").df()


@write_action
def acknowledge_alert(con: Con, alert_id: int, user: str) -> dict:
    """Record who acknowledged an alert and when; acknowledging twice keeps the first."""
    now = _utc_now()
    con.execute("UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ? "
                "WHERE alert_id = ? AND acknowledged_by IS NULL", [user, now, int(alert_id)])
    row = con.execute("SELECT acknowledged_by, acknowledged_at FROM alerts WHERE alert_id = ?",
                      [int(alert_id)]).fetchone()
    if row is None:
        raise BadRequest(f"no alert {int(alert_id)}")
    return {"alert_id": int(alert_id), "acknowledged_by": row[0], "acknowledged_at": str(row[1])}


@write_action
def add_feedback(con: Con, call_id: str, kind: str, author: str, utterance_idx: int | None = None,
                 value: str | None = None, note: str | None = None) -> dict:
    """A coach's correction (emotion, sarcasm, escalation) or note, kept for recalibration."""
    if kind not in {"emotion", "sarcasm", "escalation", "note"}:
        raise BadRequest(f"feedback kind must be emotion, sarcasm, escalation or note, not {short(kind)}")
    row = con.execute("INSERT INTO feedback (call_id, utterance_idx, kind, value, note, author) "
                      "VALUES (?, ?, ?, ?, ?, ?) RETURNING feedback_id",
                      [call_id, utterance_idx, kind, value, note, author]).fetchone()
    return {"feedback_id": row[0]}


@read_query
def emotion_corrections(con: Con, team: str | None = None, *, scope: Scope = FULL) -> pd.DataFrame:
    """Coaches' emotion corrections (the latest per utterance) with the stored scores of that utterance
    and the calibration its call was scored under: what `emotivoice recalibrate` fits. Long form,
    one row per correction and emotion."""
    return con.execute(f"""
        WITH latest AS (
            SELECT call_id, utterance_idx, value, author,
                   row_number() OVER (PARTITION BY call_id, utterance_idx
                                      ORDER BY created_at DESC, feedback_id DESC) AS k
            FROM feedback WHERE kind = 'emotion' AND utterance_idx IS NOT NULL AND value IS NOT NULL)
        SELECT l.call_id, l.utterance_idx, l.value AS label, l.author, c.team, c.calibration,
               e.emotion, e.probability
        FROM latest l JOIN calls c USING (call_id)
        JOIN emotion_scores e ON e.call_id = l.call_id AND e.utterance_idx = l.utterance_idx
        WHERE l.k = 1 AND (?::VARCHAR IS NULL OR c.team = ?::VARCHAR) AND {in_scope("c.")}
        ORDER BY l.call_id, l.utterance_idx, e.emotion""", [team, team, *scope.params()]).df()


# ---- pages: live floor, call review, agents, churn ---------------------------------------------

@read_query
def live_calls(con: Con, recent_minutes: int = 30, limit: int = 50, *, scope: Scope = FULL) -> pd.DataFrame:
    """Calls in progress (live) and those analysed in the last minutes, riskiest first, each with
    the customer's latest base emotion and the last 20 risk scores for a sparkline."""
    return con.execute(f"""
        WITH active AS (
            SELECT * FROM calls
            WHERE (status = 'live' OR analyzed_at >= ?::TIMESTAMP) AND {in_scope()}
            ORDER BY analyzed_at DESC LIMIT ?),
        customer AS (SELECT s.call_id, s.speaker FROM speakers s JOIN active a USING (call_id)
                     WHERE s.role = 'customer'),
        recent AS (
            SELECT r.call_id, r.score, r.t_s, row_number() OVER (PARTITION BY r.call_id ORDER BY r.t_s DESC) AS k
            FROM risk_scores r JOIN customer c ON r.call_id = c.call_id AND r.speaker = c.speaker),
        latest AS (
            SELECT u.call_id, arg_max(u.base_emotion, u.start_s) AS customer_emotion
            FROM utterances u JOIN customer c ON u.call_id = c.call_id AND u.speaker = c.speaker
            GROUP BY u.call_id)
        SELECT a.call_id, a.status, a.agent_id, a.customer_id, a.duration_s, l.customer_emotion,
               (SELECT score FROM recent r WHERE r.call_id = a.call_id AND r.k = 1) AS risk,
               (SELECT list(score ORDER BY t_s) FROM recent r WHERE r.call_id = a.call_id AND r.k <= 20) AS risk_trend,
               a.alert_count, a.analyzed_at
        FROM active a LEFT JOIN latest l USING (call_id)
        ORDER BY risk DESC NULLS LAST, a.analyzed_at DESC""",
        [_utc_now() - timedelta(minutes=recent_minutes), *scope.params(), limit]).df()


@read_query
def open_alerts(con: Con, limit: int = 50, *, scope: Scope = FULL) -> pd.DataFrame:
    """Alerts nobody has acknowledged yet, newest first."""
    return con.execute(f"""
        SELECT a.alert_id, a.call_id, c.agent_id, a.speaker, a.t_s, a.kind, a.score, a.factors, a.created_at
        FROM alerts a JOIN calls c USING (call_id)
        WHERE a.acknowledged_by IS NULL AND {in_scope("c.")}
        ORDER BY a.created_at DESC, a.alert_id DESC LIMIT ?""", [*scope.params(), limit]).df()


@read_query
def find_calls(con: Con, date_from: str | None = None, date_to: str | None = None, agent_id: str | None = None,
               min_risk: float = 0.0, customer_emotion: str | None = None, limit: int = 200, *,
               scope: Scope = FULL) -> pd.DataFrame:
    """Past calls for review, filtered by date (started_at), agent, peak risk and the customer's last emotion."""
    return con.execute(f"""
        SELECT call_id, started_at, agent_id, customer_id, team, duration_s, peak_risk, alert_count,
               customer_final_emotion, sarcasm_count, churn_phrases, calibration
        FROM calls
        WHERE (?::TIMESTAMP IS NULL OR started_at >= ?::TIMESTAMP)
          AND (?::TIMESTAMP IS NULL OR started_at < ?::TIMESTAMP + INTERVAL 1 DAY)
          AND (?::VARCHAR IS NULL OR agent_id = ?)
          AND coalesce(peak_risk, 0) >= ?
          AND (?::VARCHAR IS NULL OR customer_final_emotion = ?)
          AND {in_scope()}
        ORDER BY started_at DESC NULLS LAST LIMIT ?""",
        [date_from, date_from, date_to, date_to, agent_id, agent_id, min_risk, customer_emotion, customer_emotion,
         *scope.params(), limit]).df()


@read_query
def agent_ids(con: Con, *, scope: Scope = FULL) -> pd.DataFrame:
    return con.execute(f"SELECT DISTINCT agent_id FROM calls WHERE agent_id IS NOT NULL AND {in_scope()} ORDER BY 1",
                       scope.params()).df()


@read_query
def agent_vs_team(con: Con, call_id: str) -> pd.DataFrame:
    """This call's agent metrics against the agent's own average and the team's (last 90 days)."""
    return con.execute("""
        WITH this AS (SELECT agent_id, team, started_at FROM calls WHERE call_id = ?),
        agent_rows AS (
            SELECT c.call_id, c.agent_id, c.team, c.metrics, s.metrics AS sm
            FROM calls c JOIN speakers s USING (call_id), this t
            WHERE s.role = 'agent' AND c.team IS NOT DISTINCT FROM t.team
              AND c.started_at >= coalesce(t.started_at, ?::TIMESTAMP) - INTERVAL 90 DAY),
        m AS (SELECT call_id, agent_id,
                     (sm->>'$.talk_share')::DOUBLE AS talk_share,
                     (sm->>'$.interruptions_made')::DOUBLE AS interruptions,
                     (sm->>'$.words_per_minute')::DOUBLE AS words_per_minute,
                     (metrics->>'$.overlap_s')::DOUBLE AS overlap_s FROM agent_rows)
        SELECT 'this call' AS scope, talk_share, interruptions, words_per_minute, overlap_s FROM m
            WHERE call_id = (SELECT ? )
        UNION ALL SELECT 'agent average', avg(talk_share), avg(interruptions), avg(words_per_minute), avg(overlap_s)
            FROM m WHERE agent_id IS NOT DISTINCT FROM (SELECT agent_id FROM this)
        UNION ALL SELECT 'team average', avg(talk_share), avg(interruptions), avg(words_per_minute), avg(overlap_s)
            FROM m""", [call_id, _utc_now(), call_id]).df()


@read_query
def agent_weekly(con: Con, date_from: str, date_to: str, team: str | None = None, *,
                 scope: Scope = FULL) -> pd.DataFrame:
    """Per agent and week: calls, share escalated, customer negativity at start and end, empathy."""
    return con.execute(f"""
        SELECT agent_id, date_trunc('week', started_at) AS week, count(*) AS calls,
               avg((alert_count > 0)::INT) AS escalation_share,
               avg(customer_start_negative) AS customer_negative_start,
               avg(customer_end_negative) AS customer_negative_end,
               avg(agent_empathy) AS empathy
        FROM calls
        WHERE started_at >= ?::TIMESTAMP AND started_at < ?::TIMESTAMP + INTERVAL 1 DAY
          AND agent_id IS NOT NULL AND (?::VARCHAR IS NULL OR team = ?) AND {in_scope()}
        GROUP BY ALL ORDER BY week, agent_id""", [date_from, date_to, team, team, *scope.params()]).df()


@read_query
def coaching_opportunities(con: Con, date_from: str, date_to: str, team: str | None = None,
                           limit: int = 20, *, scope: Scope = FULL) -> pd.DataFrame:
    """Agents ranked by where coaching pays most: escalations, and customers who leave angrier than
    they came (end minus start negativity), weighted by how many calls that covers."""
    return con.execute(f"""
        SELECT agent_id, count(*) AS calls, avg((alert_count > 0)::INT) AS escalation_share,
               avg(customer_end_negative - customer_start_negative) AS customer_worsening,
               avg(agent_empathy) AS empathy,
               (0.6 * avg((alert_count > 0)::INT)
                + 0.4 * greatest(avg(customer_end_negative - customer_start_negative), 0))
                 * ln(1 + count(*)) AS opportunity
        FROM calls
        WHERE started_at >= ?::TIMESTAMP AND started_at < ?::TIMESTAMP + INTERVAL 1 DAY
          AND agent_id IS NOT NULL AND (?::VARCHAR IS NULL OR team = ?) AND {in_scope()}
        GROUP BY agent_id ORDER BY opportunity DESC LIMIT ?""", [date_from, date_to, team, team, *scope.params(),
                                                                 limit]).df()


@read_query
def teams(con: Con, *, scope: Scope = FULL) -> pd.DataFrame:
    return con.execute(f"SELECT DISTINCT team FROM calls WHERE team IS NOT NULL AND {in_scope()} ORDER BY 1",
                       scope.params()).df()


@read_query
def call_source(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("SELECT source FROM calls WHERE call_id = ?", [call_id]).df()


@read_query
def call_feedback(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("""SELECT feedback_id, utterance_idx, kind, value, note, author, created_at FROM feedback
                          WHERE call_id = ? ORDER BY created_at""", [call_id]).df()


@read_query
def playback_source(con: Con, call_id: str) -> pd.DataFrame:
    """The stored source of a call about to be played (call_source, but audited as a playback)."""
    return con.execute("SELECT source FROM calls WHERE call_id = ?", [call_id]).df()


# ---- audit trail and erasure (storage/access.py records the rows and checks who may) -----------

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


# ---- crash recovery: calls a stopped service left unfinished (analysis/live/recovery.py) --------

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


# ---- conversation analytics (migration 010) ------------------------------------------------------

@read_query
def call_analytics(con: Con, call_id: str) -> pd.DataFrame:
    """One call's analytics as stored with it (JSON text columns; the review page parses them)."""
    return con.execute("""
        SELECT call_id, duration_s, quarters, customer_start_vs_end, customer_start_sentiment,
               customer_end_sentiment, customer_trend, summary, summary_headline, categories, category_matches
        FROM calls WHERE call_id = ?""", [call_id]).df()


@read_query
def call_rule_inputs(con: Con, call_id: str) -> pd.DataFrame:
    """What the rules and the summary judge, per utterance of a stored call (`emotivoice rules run`)."""
    return con.execute("""
        SELECT u.utterance_idx, u.speaker, u.leg, u.start_s, u.end_s, u.text, u.words, u.granular, u.complex_emotion,
               u.loudness_dbfs, u.sentiment, u.interrupts, u.partial,
               (SELECT list({'emotion': e.emotion, 'probability': e.probability} ORDER BY e.emotion)
                FROM emotion_scores e WHERE e.call_id = u.call_id AND e.utterance_idx = u.utterance_idx) AS emotions,
               s.is_sarcastic, s.confidence AS sarcasm_confidence, s.ambiguous AS sarcasm_ambiguous,
               s.reason AS sarcasm_reason, r.score AS risk, r.factors AS risk_factors
        FROM utterances u
        LEFT JOIN sarcasm s USING (call_id, utterance_idx)
        LEFT JOIN risk_scores r ON r.call_id = u.call_id AND r.utterance_idx = u.utterance_idx
        WHERE u.call_id = ? ORDER BY u.utterance_idx""", [call_id]).df()


@read_query
def call_rule_context(con: Con, call_id: str) -> pd.DataFrame:
    """The call row's part of what the rules judge: its length, metrics and the customer's trend."""
    return con.execute("""SELECT call_id, source, duration_s, channels, metrics, customer_start_vs_end, categories
                          FROM calls WHERE call_id = ?""", [call_id]).df()


@read_query
def call_alert_rows(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("""SELECT speaker, t_s, utterance_idx, kind, score, factors FROM alerts
                          WHERE call_id = ? ORDER BY t_s""", [call_id]).df()


@write_action
def set_categories(con: Con, call_id: str, categories: list[str], category_matches: str, summary: str,
                   summary_headline: str) -> dict:
    """Rules re-run on a stored call: its categories and summary replaced, nothing else touched."""
    json_ok = all(isinstance(v, str) for v in (category_matches, summary, summary_headline))
    if not json_ok or not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise BadRequest("set_categories: categories must be a list of strings, the rest strings")
    con.execute("BEGIN TRANSACTION")
    try:
        updated = con.execute("UPDATE calls SET categories = ?, category_matches = ?::JSON, summary = ?::JSON, "
                              "summary_headline = ? WHERE call_id = ? RETURNING call_id",
                              [categories, category_matches, summary, summary_headline, call_id]).fetchall()
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return {"call_id": call_id, "updated": bool(updated)}


# Named queries kept in modules of their own, registered here as they load (issue 16's reports and rules editor)
from emotivoice.storage import churn as _churn, rules_file as _rules_file  # noqa: E402,F401
from emotivoice.storage import search as _search  # noqa: E402,F401  (its read query and actions register here; issue 16)
# QA scorecards register their queries and actions (storage/scorecards.py, migration 012)
from emotivoice.storage import scorecards  # noqa: E402,F401
