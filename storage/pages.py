"""The dashboard pages' reads over many calls: the live floor (calls in progress, open alerts), the
call finder, and the agents page (weekly trends, coaching opportunities). The churn page has its
own module (storage/churn.py), one call's rows stay in storage/queries.py.

Registered with storage.queries like every named query (the same parameter checks, scope and
roles: storage/access.py); split from it by topic (issue 11) so each module stays small.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from emotivoice.storage.queries import FULL, Con, Scope, _utc_now, in_scope, read_query, report_weights


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
                           limit: int = 20, weights: dict | None = None, *, scope: Scope = FULL) -> pd.DataFrame:
    """Agents ranked by where coaching pays most: escalations, and customers who leave angrier than
    they came (end minus start negativity), weighted by how many calls that covers. `weights`:
    fields of the settings' reports section (coaching_w_*), bound as parameters; absent: its defaults."""
    w = report_weights(weights)
    return con.execute(f"""
        SELECT agent_id, count(*) AS calls, avg((alert_count > 0)::INT) AS escalation_share,
               avg(customer_end_negative - customer_start_negative) AS customer_worsening,
               avg(agent_empathy) AS empathy,
               (?::DOUBLE * avg((alert_count > 0)::INT)
                + ?::DOUBLE * greatest(avg(customer_end_negative - customer_start_negative), 0))
                 * ln(1 + count(*)) AS opportunity
        FROM calls
        WHERE started_at >= ?::TIMESTAMP AND started_at < ?::TIMESTAMP + INTERVAL 1 DAY
          AND agent_id IS NOT NULL AND (?::VARCHAR IS NULL OR team = ?) AND {in_scope()}
        GROUP BY agent_id ORDER BY opportunity DESC LIMIT ?""",
        [w.coaching_w_escalation, w.coaching_w_worsening, date_from, date_to, team, team, *scope.params(),
         limit]).df()


@read_query
def teams(con: Con, *, scope: Scope = FULL) -> pd.DataFrame:
    return con.execute(f"SELECT DISTINCT team FROM calls WHERE team IS NOT NULL AND {in_scope()} ORDER BY 1",
                       scope.params()).df()
