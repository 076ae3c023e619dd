"""Live floor: active and just-finished calls by escalation risk, and alerts to acknowledge.
Refreshes itself every couple of seconds (a fragment), without reloading the page."""

from __future__ import annotations

import streamlit as st

from emotivoice.dashboard.common import (clock, emotion_timeline, factors_text, headed, require_sign_in, settings,
                                        store, user)
from emotivoice.storage.access import AccessDenied
from emotivoice.storage.db import StorageError

require_sign_in()
st.title("Live floor")


@st.fragment(run_every=settings().dashboard.refresh_s)
def floor() -> None:
    require_sign_in()  # a refresh is a run of its own: it stops once the session has ended
    db = store()  # looked up once per refresh
    try:
        calls = db.read("live_calls")
        alerts = db.read("open_alerts")
    except AccessDenied as exc:  # the store's answer for a role without the live floor
        st.error(f"Not allowed: {exc}")
        return
    except StorageError as exc:
        st.info(f"No calls yet: {exc}")
        return
    if alerts.empty:
        st.success("No open alerts")
    else:
        st.error(f"🔴 {len(alerts)} open alert{'s' if len(alerts) > 1 else ''}")
        for a in alerts.itertuples():
            left, right = st.columns([5, 1])
            left.markdown(f"**{a.kind}** · call `{a.call_id}` · {a.speaker} at {clock(a.t_s)} · "
                          f"risk {a.score:.2f} · {factors_text(a.factors)}")
            if right.button("Acknowledge", key=f"ack-{a.alert_id}"):
                db.write("acknowledge_alert", alert_id=int(a.alert_id), user=user())
                st.rerun()
    st.subheader("Calls")
    if calls.empty:
        st.info("No active or recent calls.")
        return
    shown = calls[["call_id", "status", "agent_id", "customer_id", "duration_s", "customer_emotion", "risk",
                   "risk_trend", "alert_count"]]
    st.dataframe(shown, hide_index=True, width="stretch", column_config=headed(shown, {
        "risk": st.column_config.ProgressColumn("Risk now", min_value=0.0, max_value=1.0, format="%.2f"),
        "risk_trend": st.column_config.LineChartColumn("Risk, last minutes", y_min=0.0, y_max=1.0),
        "duration_s": st.column_config.NumberColumn("Length (s)", format="%.0f")}))
    call_id = st.selectbox("Open a call", calls.call_id.tolist(), key="live_call")
    scores = db.read("call_emotion_scores", call_id=call_id)
    speakers = db.read("call_speakers", call_id=call_id)
    cols = st.columns(max(len(speakers), 1))
    for col, sp in zip(cols, speakers.itertuples()):
        col.plotly_chart(emotion_timeline(scores, sp.speaker, f"{sp.speaker} ({sp.role})"),
                         key=f"live-{call_id}-{sp.speaker}")
    recent = db.read("call_utterances", call_id=call_id).tail(10)
    for u in recent.itertuples():  # live: emotions come first, the words follow a moment later
        words = u.text or ("*(still speaking…)*" if u.partial else "*(transcript to follow)*")
        st.markdown(f"`{clock(u.start_s)}` **{u.speaker}** ({u.base_emotion}): {words}")


floor()
