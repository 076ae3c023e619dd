"""Churn risk: calls and customers likely to leave, from escalation, anger unresolved at the end
of the call, churn phrases ("cancel", "switch", "competitor") and repeat calls; exportable."""

from __future__ import annotations

import io
from datetime import date, timedelta

import streamlit as st

from dashboard.common import read_or_stop, record_export, require_sign_in, store

require_sign_in()
st.title("Churn risk")
db = store()  # looked up once per run: the service that owns the file, or the file
teams = read_or_stop(db, "teams").team.tolist()
c1, c2, c3 = st.columns(3)
period = c1.date_input("Calls between", (date.today() - timedelta(days=30), date.today()), key="churn_period")
team = c2.selectbox("Team", ["(all)", *teams], key="churn_team")
floor = c3.slider("Churn score at least", 0.0, 1.0, 0.3, 0.05)
if not (isinstance(period, tuple) and len(period) == 2):
    st.stop()
risky = db.read("churn_risk", date_from=str(period[0]), date_to=str(period[1]),
                     team=None if team == "(all)" else team)
risky = risky[risky.churn_score >= floor]
st.metric("Calls at risk", len(risky), help="score = 0.35 peak escalation risk + 0.30 negativity at the end "
          "+ 0.20 churn phrase + 0.15 repeat calls in the period")
if risky.empty:
    st.info("No calls at or above this churn score in the period.")
    st.stop()
view = risky.assign(churn_phrases=risky.churn_phrases.map(lambda p: ", ".join(p) if p is not None else ""))
st.dataframe(view, hide_index=True, width="stretch", column_config={
    "churn_score": st.column_config.ProgressColumn("churn score", min_value=0.0, max_value=1.0, format="%.2f"),
    "peak_risk": st.column_config.NumberColumn("peak risk", format="%.2f")})
parquet = io.BytesIO()
risky.to_parquet(parquet, index=False)
d1, d2 = st.columns(2)
d1.download_button("Export CSV", view.to_csv(index=False), "churn-risk.csv", "text/csv",
                   on_click=record_export, args=("churn-risk.csv", len(risky)))  # to the audit log
d2.download_button("Export Parquet", parquet.getvalue(), "churn-risk.parquet", "application/octet-stream",
                   on_click=record_export, args=("churn-risk.parquet", len(risky)))
