"""Audit log (admins only): who signed in, viewed, played, exported, acknowledged, corrected or
deleted which call, and when, from the append-only audit_log table; exportable as CSV. The store
refuses the read to any other role, whatever this page does."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from emotivoice.dashboard.common import headed, read_or_stop, record_export, require_sign_in, store

ACTIONS = ["(any)", "sign_in", "view", "playback", "export", "acknowledge", "feedback", "delete", "rules_save",
           "rules_run", "recalibrate", "retention",
           "scorecard_edit", "scorecard_dispute", "scorecard_resolve"]  # QA scorecards (storage/scorecards.py)

require_sign_in()
st.title("Audit log")
db = store()  # looked up once per run: the service that owns the file, or the file
c1, c2, c3 = st.columns(3)
period = c1.date_input("Between", (date.today() - timedelta(days=30), date.today()), key="audit_period")
who = c2.text_input("User", key="audit_user", max_chars=64)
action = c3.selectbox("Action", ACTIONS, key="audit_action")
if not (isinstance(period, tuple) and len(period) == 2):
    st.stop()
log = read_or_stop(db, "audit_log", date_from=str(period[0]), date_to=str(period[1]), user_name=who.strip() or None,
                   action=None if action == "(any)" else action)
st.metric("Entries", len(log))
if log.empty:
    st.info("Nothing recorded for these filters.")
    st.stop()
st.dataframe(log, hide_index=True, width="stretch", column_config=headed(log, {
    "logged_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss")}))
st.download_button("Export CSV", log.to_csv(index=False), "audit-log.csv", "text/csv",
                   on_click=record_export, args=("audit-log.csv", len(log)))
