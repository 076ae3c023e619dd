"""Search every stored transcript: words (all must occur) and "quoted phrases", filtered by who
spoke, agent, team, date, category, emotion and peak risk; ranked hits with the snippet and the
time, each one click from the call review at that moment (review?call=ID&t=SECONDS).

The store does the search and decides what this user may see (storage/search.py and
storage/access.py): an agent finds only their calls, a supervisor or coach their teams', an
analyst the hits without their text. The snippet is transcript text, so it is shown escaped.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import streamlit as st

from emotivoice.dashboard.common import clock, read_or_stop, require_sign_in, store
from emotivoice.storage.access import AccessDenied
from emotivoice.storage.db import BadRequest, StorageError

REVIEW = Path(__file__).resolve().parent / "review.py"
EMOTIONS = ["(any)", "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
_MARKDOWN = set("\\`*_{}[]()#+-.!|<>~$:=")


def escaped(text: str) -> str:
    """`text` as literal markdown (no links, emphasis, emoji or maths from a transcript), with
    the store's «hit» marks shown bold."""
    plain = "".join("\\" + c if c in _MARKDOWN else c for c in str(text)).replace("\n", " ")
    return plain.replace("«", "**").replace("»", "**")


require_sign_in()
st.title("Search")
db = store()  # looked up once per run: the service that owns the file, or the file
agents = read_or_stop(db, "agent_ids").agent_id.tolist()
teams = db.read("teams").team.tolist()

text = st.text_input("Search transcripts", max_chars=500, key="search_text",
                     placeholder='words all said, or "an exact phrase"')
with st.expander("Filters"):
    c1, c2, c3, c4 = st.columns(4)
    role = c1.selectbox("Who said it", ["(either)", "customer", "agent"])
    agent = c2.selectbox("Agent", ["(any)", *agents])
    team = c3.selectbox("Team", ["(any)", *teams])
    period = c4.date_input("Calls between", (date.today() - timedelta(days=365), date.today()), key="search_period")
    c5, c6, c7, c8 = st.columns(4)
    category = c5.text_input("Category", max_chars=100, help="as the rules name it, e.g. cancellation intent")
    emotion = c6.selectbox("Emotion of the utterance", EMOTIONS)
    min_risk = c7.slider("Peak risk of the call at least", 0.0, 1.0, 0.0, 0.05)
    limit = c8.number_input("Hits at most", 1, 200, 50)

if not text.strip():
    st.caption("Type a word or a phrase. Every call you may see is searched.")
    st.stop()
start, end = period if isinstance(period, tuple) and len(period) == 2 else (None, None)
try:
    hits = db.read("search_utterances", search=text, role=None if role == "(either)" else role,
                   agent_id=None if agent == "(any)" else agent, team=None if team == "(any)" else team,
                   date_from=str(start) if start else None, date_to=str(end) if end else None,
                   category=category.strip() or None, emotion=None if emotion == "(any)" else emotion,
                   min_risk=min_risk, limit=int(limit))
except AccessDenied as exc:
    st.error(f"Not allowed: {exc}")
    st.stop()
except BadRequest as exc:  # too long, too many words: the store's own words
    st.warning(str(exc))
    st.stop()
except StorageError as exc:
    st.error(f"Search failed: {exc}")
    st.stop()

if hits.empty:
    st.info("No utterance matches. Every word must occur; common words (the, and, I...) are not searched alone.")
    st.stop()
st.caption(f"{len(hits)} hit{'s' if len(hits) != 1 else ''}, best first")
for h in hits.itertuples():
    with st.container(border=True):
        left, right = st.columns([2, 5])
        left.page_link(REVIEW, label=f"{escaped(h.call_id)} at {clock(h.start_s)}", icon="🎧",
                       query_params={"call": h.call_id, "t": f"{h.start_s:.1f}"})
        when = h.started_at.strftime("%Y-%m-%d %H:%M") if hasattr(h.started_at, "strftime") else ""
        who = f"{h.speaker} ({h.role})" if isinstance(h.role, str) else h.speaker
        left.caption(escaped(" · ".join(p for p in (who, h.emotion, h.agent_id, when) if isinstance(p, str) and p)))
        right.markdown(escaped(h.text))
