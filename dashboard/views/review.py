"""Call review for coaching: find a call, see how each speaker felt and where risk rose, read the
tagged transcript, play the audio from any utterance (only a recording kept in the audio dir, through
a signed, expiring link: see dashboard/web.py), compare the agent with their own average
and the team's, and correct labels or leave a note (stored as feedback)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import streamlit as st

from emotivoice.dashboard.analytics import calibration_note, show_analytics
from emotivoice.dashboard.common import (audio_player, clock, emotion_timeline, headed, may, read_or_stop,
                                         require_sign_in, risk_curve, settings, store, transcript_view, user)
from emotivoice.dashboard.playback import NOT_KEPT, call_source, kept_recording
from emotivoice.dashboard.scorecard import show_scorecard



def linked_moment() -> tuple[str | None, float | None]:
    """The call and second a link asked for (?call=ID&t=SECONDS); a bad t is ignored."""
    call = st.query_params.get("call")
    try:
        t = max(float(st.query_params.get("t", "")), 0.0)
    except ValueError:
        t = None
    return (call[:200] if isinstance(call, str) and call else None), (t if t == t and t != float("inf") else None)


require_sign_in()
st.title("Call review")
db = store()  # looked up once per run: the service that owns the file, or the file
agents = read_or_stop(db, "agent_ids").agent_id.tolist()

with st.expander("Filters", expanded=True):
    c1, c2, c3, c4 = st.columns(4)
    period = c1.date_input("Started between", (date.today() - timedelta(days=90), date.today()))
    agent = c2.selectbox("Agent", ["(any)", *agents])
    min_risk = c3.slider("Peak risk at least", 0.0, 1.0, 0.0, 0.05)
    emotion = c4.selectbox("Customer's last emotion", ["(any)", "anger", "disgust", "fear", "happiness", "neutral",
                                                        "sadness", "surprise"])
start, end = (period if isinstance(period, tuple) and len(period) == 2 else (None, None))
calls = db.read("find_calls", date_from=str(start) if start else None, date_to=str(end) if end else None,
                     agent_id=None if agent == "(any)" else agent, min_risk=min_risk,
                     customer_emotion=None if emotion == "(any)" else emotion)
linked, linked_t = linked_moment()  # ?call=ID&t=SECONDS: a search hit (or any link) opens that moment
if calls.empty and linked is None:
    st.info("No calls match these filters.")
    st.stop()
listed = calls.drop(columns=["calibration"])
st.dataframe(listed, hide_index=True, width="stretch", column_config=headed(listed, {
    "peak_risk": st.column_config.ProgressColumn("Peak risk", min_value=0.0, max_value=1.0, format="%.2f")}))
options = calls.call_id.tolist()
if linked is not None:  # first, even when the filters leave it out; the store still decides if it may be seen
    options = [linked, *(c for c in options if c != linked)]
call_id = st.selectbox("Call", options)

speakers = read_or_stop(db, "call_speakers", call_id=call_id)  # another agent's call: "Not allowed" here
utterances = db.read("call_utterances", call_id=call_id)
scores = db.read("call_emotion_scores", call_id=call_id)
alerts = db.read("call_alerts", call_id=call_id)

st.caption(calibration_note(calls.set_index("call_id").calibration.get(call_id)))
cols = st.columns(max(len(speakers), 1))
for col, sp in zip(cols, speakers.itertuples()):
    with col:
        role = f"{sp.role}" + (f", {sp.role_confidence:.0%} sure from {sp.role_source}"
                               if sp.role_source == "cues" else "")
        st.metric(f"{sp.speaker} ({role})", f"{sp.talk_time_s:.0f} s talk")
        st.plotly_chart(emotion_timeline(scores, sp.speaker), key=f"timeline-{sp.speaker}")
st.plotly_chart(risk_curve(utterances, alerts), key="risk")
if not alerts.empty:
    st.caption("Alerts: " + "; ".join(f"{a.speaker} at {a.t_s:.0f} s, risk {a.score:.2f} ({a.factors})"
                                      for a in alerts.itertuples()))

show_analytics(db, call_id)

st.subheader("Talk metrics against the agent's average and the team's")
compared = db.read("agent_vs_team", call_id=call_id)
st.dataframe(compared, hide_index=True, width="stretch", column_config=headed(compared))

st.subheader("Transcript")
selection = st.dataframe(transcript_view(utterances), hide_index=True, width="stretch", key="transcript",
                         on_select="rerun", selection_mode="single-row", column_config={
                             "risk": st.column_config.ProgressColumn("risk", min_value=0.0, max_value=1.0,
                                                                     format="%.2f")})
rows = selection.selection.rows if selection and hasattr(selection, "selection") else []
u = utterances.iloc[rows[0]] if rows else None
moment = linked_t if call_id == linked and linked_t is not None and u is None else None
if moment is not None:
    at = utterances[utterances.start_s <= moment + 0.05].tail(1)
    said = f" — {at.speaker.iloc[0]}: {at.text.iloc[0]}" if not at.empty else ""
    st.info(f"Opened at {clock(moment)}{said}", icon="🔎")
if may("play") and kept_recording(settings(), call_source(db, call_id)):  # an analyst hears nothing
    audio_player(call_id, int(u.start_s) if u is not None else int(moment or 0))
    if u is None:
        st.caption("Select an utterance in the transcript to play the call from there.")
else:
    st.caption(NOT_KEPT)
if u is not None and pd.notna(u.sarcasm_reason) and u.is_sarcastic:
    st.caption(f"Sarcasm: {u.sarcasm_reason}")

st.subheader("Coach feedback")
with st.form("feedback", clear_on_submit=True):
    labels = [f"{i}: {t[:60]}" for i, t in zip(utterances.utterance_idx, utterances.text)]
    which = st.selectbox("Utterance", ["(whole call)", *labels])
    kind = st.radio("Correction", ["emotion", "sarcasm", "escalation", "note"], horizontal=True,
                    captions=["this emotion is wrong", "not sarcastic", "not an escalation", "just a note"])
    value = st.text_input("Correct label (for an emotion correction)")
    note = st.text_area("Note")
    if st.form_submit_button("Save feedback", disabled=not may("feedback")):  # a coach's, supervisor's or admin's
        idx = None if which == "(whole call)" else int(which.split(":")[0])
        saved = db.write("add_feedback", call_id=call_id, kind=kind, author=user(), utterance_idx=idx,
                              value=value or None, note=note or None)
        st.success(f"Saved feedback #{saved['feedback_id']}")
feedback = db.read("call_feedback", call_id=call_id)
if not feedback.empty:
    st.dataframe(feedback, hide_index=True, width="stretch", column_config=headed(feedback))

# last, so the page's other tables keep their places: score, answers, disputes, the role's form
show_scorecard(db, call_id)
