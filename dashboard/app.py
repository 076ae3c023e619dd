"""Supervisor dashboard (first cut): stored calls, and per call an emotion timeline per speaker
and the transcript tagged with its emotion tiers. Reads DuckDB through storage.queries only.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from emotivoice.config import load_settings
from storage.db import StorageError
from storage.queries import call_emotion_scores, call_speakers, call_utterances, list_calls

EMOTION_COLORS = {"anger": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happiness": "#2ca02c",
                  "neutral": "#9e9e9e", "sadness": "#1f77b4", "surprise": "#ff7f0e"}

st.set_page_config(page_title="EmotiVoice", layout="wide")
db_path = os.environ.get("EMOTIVOICE_DB_PATH") or str(load_settings().db_path)


def emotion_timeline(scores, speaker: str) -> go.Figure:
    """Stacked emotion probabilities over call time for one speaker, one step per utterance."""
    fig = go.Figure()
    mine = scores[scores.speaker == speaker]
    for emotion in sorted(mine.emotion.unique()):
        rows = mine[mine.emotion == emotion]
        fig.add_trace(go.Scatter(x=rows.start_s, y=rows.probability, name=emotion, stackgroup="p",
                                 mode="lines", line={"shape": "hv", "color": EMOTION_COLORS.get(emotion)}))
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title=speaker,
                      xaxis_title="call time (s)", yaxis={"range": [0, 1], "title": "probability"})
    return fig


st.title("EmotiVoice")
try:
    calls = list_calls(db_path)
except StorageError as exc:
    st.info(f"No calls yet: {exc}")
    st.stop()
if calls.empty:
    st.info("No calls stored yet. Analyse one: `emotivoice analyze CALL.wav`")
    st.stop()

st.subheader("Calls")
st.dataframe(calls, hide_index=True, width="stretch")
call_id = st.selectbox("Call", calls.call_id.tolist())
speakers = call_speakers(db_path, call_id)
utterances = call_utterances(db_path, call_id)
scores = call_emotion_scores(db_path, call_id)
row = calls[calls.call_id == call_id].iloc[0]
if pd.notna(row.emotion_provisional) and bool(row.emotion_provisional):
    st.caption(f"Emotion model {row.emotion_model} is provisional: its accuracy target is not yet met.")
st.caption(f"Speakers: {row.diarization}")

cols = st.columns(max(len(speakers), 1))
for col, sp in zip(cols, speakers.itertuples()):
    with col:
        st.metric(f"{sp.speaker} ({sp.role})", f"{sp.talk_time_s:.0f} s talk")
        m = json.loads(sp.metrics) if isinstance(sp.metrics, str) else {}
        if m:
            st.caption(f"talk share {m['talk_share']:.0%} · {m['words_per_minute']:.0f} words/min · "
                       f"longest monologue {m['longest_monologue_s']:.0f} s · "
                       f"interrupted others {m['interruptions_made']}×")
        st.plotly_chart(emotion_timeline(scores, sp.speaker), key=f"timeline-{sp.speaker}")

st.subheader("Transcript")
view = utterances.assign(
    time=utterances.start_s.map(lambda s: f"{int(s // 60)}:{s % 60:04.1f}"),
    emotion=utterances.base_emotion + " " + (utterances.base_confidence * 100).round().astype(int).astype(str) + "%",
    granular=utterances.granular_labels.map(lambda g: ", ".join(g) if g is not None else ""),
)[["time", "speaker", "text", "emotion", "granular", "complex_emotion"]]
st.dataframe(view, hide_index=True, width="stretch", height=min(36 * (len(view) + 1) + 2, 800))
