"""The churn page's queries (dashboard/views/churn.py): calls scored for churn risk, the trend over
weeks, the reasons behind the calls at risk, and customers ranked across their calls.

Registered with storage.queries like every named query (the same parameter checks, scope and
roles: storage/access.py), kept here so that module stays small. All four start from one CTE,
so a call has the same churn score in the table, the trend, the reasons and the customer ranking.
Every query reads one row per call from `calls` (the per-call summaries of migration 004 and the
categories of 010), never the utterances: 100,000 calls answer within the page's 200 ms
(benchmarks/dashboard_queries.py). The score's weights and the reasons' floors are the settings'
reports section (emotivoice/config), which the page sends as `weights` and the SQL binds.
"""

from __future__ import annotations

import pandas as pd

from emotivoice.config import ReportsConfig
from emotivoice.storage.queries import FULL, Con, Scope, in_scope, read_query, report_weights

# Who a call's customer is: the customer id the recording system or connector gave, else the
# caller's number AudioHook reports (external.ani), else a custom parameter named like "customer"
# (Twilio's customParameters, AudioHook's customConfig): migration 006's external_ids, read as data.
CUSTOMER_KEY = """CASE WHEN nullif(trim(customer_id), '') IS NOT NULL THEN customer_id
    WHEN external_ids IS NULL OR NOT json_valid(external_ids) THEN NULL
    ELSE coalesce(nullif(json_extract_string(external_ids, '$.external.ani'), ''),
                  nullif(list_filter(map_entries(try_cast(json_extract(external_ids, '$.custom')
                                                          AS MAP(VARCHAR, VARCHAR))),
                                     lambda e: lower(e.key) LIKE '%customer%')[1].value, '')) END"""
# where CUSTOMER_KEY found the customer (JSON read again only for calls without a customer id)
CUSTOMER_SOURCE = """CASE WHEN nullif(trim(customer_id), '') IS NOT NULL THEN 'customer id'
    WHEN customer IS NOT DISTINCT FROM json_extract_string(external_ids, '$.external.ani') THEN 'caller number'
    ELSE 'call parameter' END"""
CHURN_AT_RISK = ReportsConfig().churn_at_risk  # the default floor: a call at or above it is "at risk"


def _churn_scored(scope: Scope) -> str:
    """The `period` and `scored` CTEs every churn query starts from (params: date_from, date_to,
    team, team, the scope's, then _score_params'): each call of the period with its churn score.
    Repeat calls count per customer (CUSTOMER_KEY); a call whose customer is unknown is no repeat
    of anything."""
    return f"""
        period AS (
            SELECT *, {CUSTOMER_KEY} AS customer FROM calls
            WHERE started_at >= ?::TIMESTAMP AND started_at < ?::TIMESTAMP + INTERVAL 1 DAY
              AND (?::VARCHAR IS NULL OR team = ?) AND {in_scope()}),
        counted AS (
            SELECT *, CASE WHEN customer IS NULL THEN 1 ELSE count(*) OVER (PARTITION BY customer) END
                      AS calls_in_period FROM period),
        scored AS (
            SELECT *, ?::DOUBLE * coalesce(peak_risk, 0) + ?::DOUBLE * coalesce(customer_end_negative, 0)
                      + ?::DOUBLE * (len(coalesce(churn_phrases, [])) > 0)::INT
                      + ?::DOUBLE * least(calls_in_period - 1, ?::INT) / ?::DOUBLE AS churn_score
            FROM counted)"""


def _score_params(w: ReportsConfig) -> list:
    """The `scored` CTE's weights, in its order."""
    return [w.churn_w_peak_risk, w.churn_w_end_negative, w.churn_w_churn_phrase, w.churn_w_repeat_calls,
            int(w.churn_repeat_calls_full), float(w.churn_repeat_calls_full)]


@read_query
def churn_risk(con: Con, date_from: str, date_to: str, team: str | None = None, limit: int = 500,
               weights: dict | None = None, *, scope: Scope = FULL) -> pd.DataFrame:
    """Customers at risk of leaving: escalation, anger unresolved at the end, churn phrases and
    repeat calls in the period, combined into a 0..1 score with the reasons beside it. `weights`
    (in every churn query): fields of the settings' reports section; absent, its defaults."""
    return con.execute(f"""
        WITH {_churn_scored(scope)}
        SELECT call_id, customer, agent_id, team, started_at, peak_risk, customer_end_negative, churn_phrases,
               categories, calls_in_period, churn_score
        FROM scored ORDER BY churn_score DESC LIMIT ?""",
        [date_from, date_to, team, team, *scope.params(), *_score_params(report_weights(weights)), limit]).df()


@read_query
def churn_trend(con: Con, date_from: str, date_to: str, team: str | None = None, at_risk: float = CHURN_AT_RISK,
                weights: dict | None = None, *, scope: Scope = FULL) -> pd.DataFrame:
    """Per week of the period: calls, calls at risk (churn score >= at_risk), their share, and the
    mean churn score, so a rise shows before the customers are gone."""
    return con.execute(f"""
        WITH {_churn_scored(scope)}
        SELECT date_trunc('week', started_at) AS week, count(*) AS calls,
               count(*) FILTER (WHERE churn_score >= ?) AS at_risk_calls,
               count(*) FILTER (WHERE churn_score >= ?) / count(*) AS at_risk_share,
               avg(churn_score) AS mean_churn_score
        FROM scored GROUP BY week ORDER BY week""",
        [date_from, date_to, team, team, *scope.params(), *_score_params(report_weights(weights)),
         at_risk, at_risk]).df()


@read_query
def churn_reasons(con: Con, date_from: str, date_to: str, team: str | None = None, at_risk: float = CHURN_AT_RISK,
                  limit: int = 15, weights: dict | None = None, *, scope: Scope = FULL) -> pd.DataFrame:
    """What the at-risk calls of the period have in common: their categories (rules), the churn
    phrases said, and which part of the score put them there; each with the number and share of
    at-risk calls it covers against its share of the other calls, ranked by how much more often
    it comes with risk (a greeting on every call is no reason)."""
    w = report_weights(weights)
    escalated = f"escalated (peak risk at least {w.churn_reason_peak_risk:g})"
    return con.execute(f"""
        WITH {_churn_scored(scope)},
        flagged AS (SELECT *, churn_score >= ? AS risky FROM scored),
        totals AS (SELECT count(*) FILTER (WHERE risky) AS risky_n, count(*) FILTER (WHERE NOT risky) AS other_n
                   FROM flagged),
        reasons AS (
            SELECT 'category' AS kind, unnest(categories) AS reason, risky FROM flagged
            UNION ALL SELECT 'phrase', unnest(churn_phrases), risky FROM flagged
            UNION ALL SELECT 'signal', ?::VARCHAR, risky FROM flagged WHERE peak_risk >= ?::DOUBLE
            UNION ALL SELECT 'signal', 'customer negative at the end', risky FROM flagged
                WHERE customer_end_negative >= ?::DOUBLE
            UNION ALL SELECT 'signal', 'repeat caller', risky FROM flagged WHERE calls_in_period > 1),
        tallied AS (
            SELECT kind, reason, count(*) FILTER (WHERE risky) AS at_risk_calls,
                   count(*) FILTER (WHERE NOT risky) AS other_calls FROM reasons GROUP BY kind, reason)
        SELECT kind, reason, at_risk_calls, at_risk_calls / greatest(risky_n, 1) AS at_risk_share,
               other_calls / greatest(other_n, 1) AS other_share
        FROM tallied, totals WHERE at_risk_calls > 0
        ORDER BY at_risk_share - other_share DESC, at_risk_calls DESC, reason LIMIT ?""",
        [date_from, date_to, team, team, *scope.params(), *_score_params(w), at_risk, escalated,
         w.churn_reason_peak_risk, w.churn_reason_end_negative, limit]).df()


@read_query
def churn_customers(con: Con, date_from: str, date_to: str, team: str | None = None,
                    at_risk: float = CHURN_AT_RISK, limit: int = 200, weights: dict | None = None, *,
                    scope: Scope = FULL) -> pd.DataFrame:
    """Customers (not calls) ranked by risk across their calls of the period: 1 - the product of
    (1 - each call's churn score), so two bad calls outrank one and a calm call lowers nothing;
    with their calls, calls at risk, worst call, last call, its agent and the categories seen."""
    return con.execute(f"""
        WITH {_churn_scored(scope)}
        SELECT customer, arg_max({CUSTOMER_SOURCE}, started_at) AS known_by,
               1 - product(1 - least(churn_score, 1)) AS customer_risk, count(*) AS calls,
               count(*) FILTER (WHERE churn_score >= ?) AS at_risk_calls, max(churn_score) AS worst_call_score,
               max(started_at) AS last_call, arg_max(agent_id, started_at) AS last_agent,
               list_sort(list_distinct(flatten(list(coalesce(categories, []))))) AS categories
        FROM scored WHERE customer IS NOT NULL
        GROUP BY customer ORDER BY customer_risk DESC, calls DESC, customer LIMIT ?""",
        [date_from, date_to, team, team, *scope.params(), *_score_params(report_weights(weights)),
         at_risk, limit]).df()
