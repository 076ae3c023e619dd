"""Named read queries and write actions: the only SQL the dashboard and reports run.

Each takes an open DuckDB connection and plain parameters, bound with `?`: no SQL is built from
input (report weights too: the settings' reports section, sent by the dashboard, bound like the
rest). `storage.store` runs them against the file directly or through the process that owns it,
always by name through `run_read` / `run_write`, which refuse unknown names and parameters with a
BadRequest and turn DuckDB's errors into StorageError, so a caller never sees a raw traceback.

This module holds the registry and one call's rows; the rest is split by topic and registered
at the bottom: pages.py (live floor, call finder, agents), churn.py, audit.py (audit trail,
erasure), recovery.py (unfinished calls), search.py, rules_file.py, scorecards.py.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone

import duckdb
import pandas as pd

from emotivoice.config import ReportsConfig
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
_REPORT_FIELDS = {f.name for f in fields(ReportsConfig)}


def report_weights(weights: object) -> ReportsConfig:
    """A query's `weights` parameter (fields of the settings' reports section, as the dashboard sends
    them) over the defaults; refused unless every key is such a field and every value a finite number."""
    if weights is None:
        return ReportsConfig()
    if not isinstance(weights, dict):
        raise BadRequest("weights must be an object")
    for key, value in weights.items():
        if key not in _REPORT_FIELDS:
            raise BadRequest(f"weights has no field {short(key)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest(f"weights.{key} must be a finite number")
        if isinstance(getattr(ReportsConfig(), key), int) and not float(value).is_integer():
            raise BadRequest(f"weights.{key} must be a whole number")
    return replace(ReportsConfig(), **weights)


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


# Named queries kept in modules of their own by topic, registered here as they load (issues 11 and 16)
from emotivoice.storage import audit as _audit, pages as _pages, recovery as _recovery  # noqa: E402,F401
from emotivoice.storage.audit import call_tables  # noqa: E402,F401  (storage.retention and tests use it from here)
from emotivoice.storage import churn as _churn, rules_file as _rules_file  # noqa: E402,F401
from emotivoice.storage import search as _search  # noqa: E402,F401  (its read query and actions register here; issue 16)
# QA scorecards register their queries and actions (storage/scorecards.py, migration 012)
from emotivoice.storage import scorecards  # noqa: E402,F401
