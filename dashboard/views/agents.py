"""Agents: weekly trends per agent (calls, escalations, did customers end calmer than they
started, empathy) and the coaching opportunities ranked."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta

import plotly.express as px
import streamlit as st

from emotivoice.dashboard.common import CHART_MARGIN, headed, read_or_stop, require_sign_in, settings, store
from emotivoice.dashboard.scorecard import show_scorecard_trends

require_sign_in()
st.title("Agents")
db = store()  # looked up once per run: the service that owns the file, or the file
teams = read_or_stop(db, "teams").team.tolist()
c1, c2 = st.columns(2)
period = c1.date_input("Weeks between", (date.today() - timedelta(weeks=12), date.today()), key="agents_period")
team = c2.selectbox("Team", ["(all)", *teams], key="agents_team")
if not (isinstance(period, tuple) and len(period) == 2):
    st.stop()
params = {"date_from": str(period[0]), "date_to": str(period[1]), "team": None if team == "(all)" else team}
weekly = db.read("agent_weekly", **params)
if weekly.empty:
    st.info("No calls with an agent in this period. Record agent ids with `analyze --agent-id` or a sidecar JSON.")
    st.stop()

st.subheader("Coaching opportunities")
coaching = db.read("coaching_opportunities", **params, weights=asdict(settings().reports))  # the settings' weights
st.dataframe(coaching, hide_index=True, width="stretch", column_config=headed(coaching, {
    "escalation_share": st.column_config.ProgressColumn("Escalated calls", min_value=0.0, max_value=1.0,
                                                        format="percent"),
    "customer_worsening": st.column_config.NumberColumn("Customer worse at the end by", format="%.2f"),
    "empathy": st.column_config.NumberColumn("Empathy", format="%.2f"),
    "opportunity": st.column_config.NumberColumn("Coaching opportunity", format="%.2f")}))

WEEKS = {"tickformat": "%d %b", "dtick": 7 * 86_400_000, "title": "week starting"}  # one tick per week
left, right = st.columns(2)
fig = px.line(weekly, x="week", y="escalation_share", color="agent_id", markers=True,
              title="Calls that escalated")
fig.update_layout(height=300, margin=CHART_MARGIN, yaxis={"range": [0, 1], "tickformat": ".0%"}, xaxis=WEEKS)
left.plotly_chart(fig, key="escalations")
calming = weekly.assign(calmed=weekly.customer_negative_start - weekly.customer_negative_end)
fig = px.bar(calming, x="week", y="calmed", color="agent_id", barmode="group",
             title="Customers calmed (negativity start − end)")
fig.update_layout(height=300, margin=CHART_MARGIN, xaxis=WEEKS)
right.plotly_chart(fig, key="calming")
fig = px.line(weekly, x="week", y="calls", color="agent_id", markers=True, title="Calls handled")
fig.update_layout(height=260, margin=CHART_MARGIN, xaxis=WEEKS)
left.plotly_chart(fig, key="volume")
fig = px.line(weekly, x="week", y="empathy", color="agent_id", markers=True,
              title="Empathy (calm/warm replies to upset customers)")
fig.update_layout(height=260, margin=CHART_MARGIN, yaxis={"range": [0, 1]}, xaxis=WEEKS)
right.plotly_chart(fig, key="empathy")

show_scorecard_trends(db, params)  # QA score per agent and per team over the weeks
