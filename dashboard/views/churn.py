"""Churn risk: how many calls put customers at risk of leaving, week by week; what those calls have
in common (categories from the rules, churn phrases, the parts of the score); which customers,
across all their calls, are most at risk; and the calls themselves, exportable.

A call's churn score is (by default) 0.35 × peak escalation risk + 0.30 × the customer's negativity
at the end + 0.20 × a churn phrase ("cancel", "switch", "competitor") + 0.15 × repeat calls in the
period, the same in every table and chart here (storage/churn.py). The weights are the settings'
`reports` section, sent with every read.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from datetime import date, timedelta

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from emotivoice.dashboard.common import (CHART_MARGIN, headed, read_or_stop, record_export, require_sign_in,
                                         settings, store)

REPORTS = settings().reports
SCORE_HELP = (f"score = {REPORTS.churn_w_peak_risk:g} peak escalation risk + {REPORTS.churn_w_end_negative:g} "
              f"negativity at the end + {REPORTS.churn_w_churn_phrase:g} churn phrase "
              f"+ {REPORTS.churn_w_repeat_calls:g} repeat calls in the period")
KIND_WORDS = {"category": "category (rules)", "phrase": "phrase said", "signal": "part of the score"}

require_sign_in()
st.title("Churn risk")
db = store()  # looked up once per run: the service that owns the file, or the file
teams = read_or_stop(db, "teams").team.tolist()
c1, c2, c3 = st.columns(3)
period = c1.date_input("Calls between", (date.today() - timedelta(weeks=12), date.today()), key="churn_period")
team = c2.selectbox("Team", ["(all)", *teams], key="churn_team")
floor = c3.slider("At risk from churn score", 0.0, 1.0, REPORTS.churn_at_risk, 0.05, key="churn_floor",
                  help=SCORE_HELP)
if not (isinstance(period, tuple) and len(period) == 2):
    st.stop()
params = {"date_from": str(period[0]), "date_to": str(period[1]), "team": None if team == "(all)" else team,
          "weights": asdict(REPORTS)}  # bound by the queries, never part of their SQL
calls = read_or_stop(db, "churn_risk", **params)
risky = calls[calls.churn_score >= floor]
customers = db.read("churn_customers", **params, at_risk=floor)
m1, m2, m3 = st.columns(3)
m1.metric("Calls at risk", len(risky), help=SCORE_HELP)
m2.metric("Customers with a call at risk", int((customers.at_risk_calls > 0).sum()) if not customers.empty else 0)
m3.metric("Mean churn score", f"{calls.churn_score.mean():.2f}" if not calls.empty else "–")
if calls.empty:
    st.info("No calls in the period.")
    st.stop()

st.subheader("Churn over weeks")
trend = db.read("churn_trend", **params, at_risk=floor)
fig = go.Figure()
fig.add_trace(go.Bar(x=trend.week, y=trend.at_risk_calls, name="calls at risk", marker_color="#d62728",
                     hovertemplate="%{y} of %{customdata} calls<extra></extra>", customdata=trend.calls))
fig.add_trace(go.Scatter(x=trend.week, y=trend.mean_churn_score, name="mean churn score", yaxis="y2",
                         mode="lines+markers", line={"color": "#1f77b4"}))
fig.update_layout(height=300, margin=CHART_MARGIN, legend={"orientation": "h", "y": 1.12},
                  xaxis={"tickformat": "%d %b", "dtick": 7 * 86_400_000, "title": "week starting"},
                  yaxis={"title": "calls at risk", "rangemode": "tozero"},
                  yaxis2={"title": "mean churn score", "overlaying": "y", "side": "right", "range": [0, 1]})
st.plotly_chart(fig, key="churn_trend")

left, right = st.columns([3, 2])
with left:
    st.subheader("Top reasons behind calls at risk")
    reasons = db.read("churn_reasons", **params, at_risk=floor)
    if reasons.empty:
        st.info("No call at or above this churn score in the period.")
    else:
        reasons = reasons.assign(kind=reasons.kind.map(KIND_WORDS))
        fig = px.bar(reasons.iloc[::-1], x="at_risk_share", y="reason", color="kind", orientation="h",
                     labels={"at_risk_share": "share of calls at risk", "reason": "", "kind": ""})
        fig.update_layout(height=90 + 28 * len(reasons), margin=CHART_MARGIN, xaxis={"tickformat": ".0%"},
                          yaxis={"categoryorder": "array", "categoryarray": reasons.reason.iloc[::-1].tolist()},
                          legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
        st.plotly_chart(fig, key="churn_reasons")
with right:
    st.subheader("Why: each reason counted")
    if not reasons.empty:
        st.dataframe(reasons, hide_index=True, width="stretch", column_config=headed(reasons, {
            "kind": "What", "reason": "Reason", "at_risk_calls": "Calls at risk with it",
            "at_risk_share": st.column_config.ProgressColumn("Share of calls at risk", min_value=0.0, max_value=1.0,
                                                             format="percent"),
            "other_share": st.column_config.NumberColumn("Share of the other calls", format="percent")}))

st.subheader("Customers most at risk")
st.caption("Across all their calls in the period: 1 − the product of (1 − each call's churn score), so two bad "
           "calls outrank one. Customers are known by the customer id, else the caller's number, else a call "
           "parameter naming the customer.")
if customers.empty:
    st.info("No call in the period names its customer. Record them with `analyze --customer-id`, a sidecar "
            "JSON or the connector's metadata.")
else:
    view = customers.assign(categories=customers.categories.map(lambda c: ", ".join(c) if c is not None else ""))
    st.dataframe(view, hide_index=True, width="stretch", column_config=headed(view, {
        "known_by": "Known by", "at_risk_calls": "Calls at risk", "last_agent": "Last agent",
        "customer_risk": st.column_config.ProgressColumn("Customer risk", min_value=0.0, max_value=1.0, format="%.2f"),
        "worst_call_score": st.column_config.NumberColumn("Worst call's score", format="%.2f"),
        "last_call": st.column_config.DatetimeColumn("Last call", format="YYYY-MM-DD HH:mm"),
        "categories": "Categories seen"}))

st.subheader("Calls at risk")
if risky.empty:
    st.info("No calls at or above this churn score in the period.")
    st.stop()
view = risky.assign(customer=risky.customer.fillna("unknown"),
                    churn_phrases=risky.churn_phrases.map(lambda p: ", ".join(p) if p is not None else ""),
                    categories=risky.categories.map(lambda c: ", ".join(c) if c is not None else ""))
st.dataframe(view, hide_index=True, width="stretch", column_config=headed(view, {
    "churn_score": st.column_config.ProgressColumn("Churn score", min_value=0.0, max_value=1.0, format="%.2f"),
    "peak_risk": st.column_config.NumberColumn("Peak risk", format="%.2f"),
    "customer_end_negative": st.column_config.NumberColumn("Customer negative at the end", format="%.2f"),
    "started_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm")}))
parquet = io.BytesIO()
risky.to_parquet(parquet, index=False)
d1, d2, d3 = st.columns(3)
d1.download_button("Export CSV", view.to_csv(index=False), "churn-risk.csv", "text/csv",
                   on_click=record_export, args=("churn-risk.csv", len(risky)))  # to the audit log
d2.download_button("Export Parquet", parquet.getvalue(), "churn-risk.parquet", "application/octet-stream",
                   on_click=record_export, args=("churn-risk.parquet", len(risky)))
if not customers.empty:
    d3.download_button("Export customers CSV", customers.to_csv(index=False),
                       "churn-customers.csv", "text/csv", on_click=record_export,
                       args=("churn-customers.csv", len(customers)))
