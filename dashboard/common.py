"""What every dashboard page shares: the store (acting for the signed-in user), roles, colours and charts."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from emotivoice.config import Settings, load_settings
from emotivoice.storage.store import Store, open_store

EMOTION_COLORS = {"anger": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happiness": "#2ca02c",
                  "neutral": "#9e9e9e", "sadness": "#1f77b4", "surprise": "#ff7f0e"}
CHART_MARGIN = {"l": 10, "r": 10, "t": 30, "b": 10}


def settings() -> Settings:
    return load_settings()


# The pages each role is shown (app.py); the store enforces the same limits on every read and
# write whatever a page does (storage/access.py), so this only keeps people off pages they cannot use.
PAGES = {"admin": ("live", "review", "agents", "churn", "audit", "rules"),
         "supervisor": ("live", "review", "agents", "churn"),
         "coach": ("review", "agents"),
         "analyst": ("review", "agents", "churn"),
         "agent": ("review", "agents")}
PAGES = {role: (*pages, "search") for role, pages in PAGES.items()}  # issue 16: every role searches its own calls
ABILITIES = {"feedback": ("admin", "supervisor", "coach"), "play": ("admin", "supervisor", "coach", "agent"),
             "acknowledge": ("admin", "supervisor")}


def db_path() -> str:
    return os.environ.get("EMOTIVOICE_DB_PATH") or str(settings().db_path)


def client_address() -> str:
    """Who is signed in from where, for the throttle and the audit log (Streamlit reports loopback as None)."""
    address = st.context.ip_address
    return address if isinstance(address, str) and address else "loopback"


def store() -> Store:
    """The service that owns the database when one runs, else the file (re-checked every run),
    acting for the signed-in user: it only ever answers what that user may see."""
    name = user()
    if not name:
        st.error("Sign in first.")
        st.stop()
    return open_store(db_path(), user=name, client=client_address())


def role() -> str | None:
    """The signed-in user's role, from the user file (None when the entry is gone)."""
    from emotivoice.dashboard.auth import account

    found = account(settings(), user())
    return found.role if found else None


def may(ability: str) -> bool:
    """Whether the signed-in user's role may do this (the store refuses it anyway if not)."""
    return role() in ABILITIES[ability]


def record_export(file_name: str, rows: int) -> None:
    """A download button's on_click: the export goes to the audit log (the browser makes the file)."""
    store().write("record_event", event="export", detail=f"{file_name} ({rows} rows)")


def read_or_stop(db: Store, query: str, **params) -> pd.DataFrame:
    """A page's first read; with no database yet the page says so and ends here."""
    from emotivoice.storage.access import AccessDenied
    from emotivoice.storage.db import StorageError

    try:
        return db.read(query, **params)
    except AccessDenied as exc:
        st.error(f"Not allowed: {exc}")
        st.stop()
    except StorageError as exc:
        st.info(f"No calls yet: {exc}")
        st.stop()


def user() -> str:
    return st.session_state.get("user", "")


def require_sign_in() -> str:
    """The first line of every page and of every self-refreshing fragment: its user, or nothing
    unless this run has a live session (an ended one goes back to the sign-in form).

    app.py only runs a page for a signed-in session; this holds even if a page script were ever
    run some other way (as Streamlit's v1 page discovery once did, straight from the URL).
    """
    from emotivoice.dashboard.sessions import REGISTRY

    signed_in = REGISTRY.user(st.session_state.get("session_token"))
    if not signed_in:
        if st.session_state.get("session_token"):  # it ended (log-out elsewhere, expiry): back to sign-in
            st.rerun(scope="app")
        st.error("Sign in first.")
        st.stop()
    return signed_in


def audio_player(call_id: str, start_s: int) -> None:
    """A player for a call's kept recording through a signed link bound to this session.

    The link is reused while more than half its life is left, so reruns do not restart playback;
    /api/audio checks it (and the session cookie) on every request.
    """
    from emotivoice.dashboard.sessions import link_secret, make_link

    config, now = settings(), time.time()
    ttl = config.dashboard.media_link_ttl_s
    cached = st.session_state.get("audio_link")
    if not cached or cached[0] != call_id or cached[2] - now < ttl / 2:
        link = make_link(link_secret(config), call_id, user(), st.session_state.get("session_token", ""), ttl, now)
        cached = st.session_state["audio_link"] = (call_id, link, now + ttl)
    st.html(f'<audio controls preload="metadata" style="width: 100%" '
            f'src="/api/audio/{cached[1]}#t={max(int(start_s), 0)}"></audio>')


def factors_text(factors) -> str:
    data = json.loads(factors) if isinstance(factors, str) else (factors or {})
    return ", ".join(f"{k} ({v:.1f})" for k, v in data.items())


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def emotion_timeline(scores: pd.DataFrame, speaker: str, title: str | None = None) -> go.Figure:
    """Stacked emotion probabilities over call time for one speaker, one step per utterance."""
    fig = go.Figure()
    mine = scores[scores.speaker == speaker]
    for emotion in sorted(mine.emotion.unique()):
        rows = mine[mine.emotion == emotion]
        fig.add_trace(go.Scatter(x=rows.start_s, y=rows.probability, name=emotion, stackgroup="p",
                                 mode="lines", line={"shape": "hv", "color": EMOTION_COLORS.get(emotion)}))
    fig.update_layout(height=240, margin=CHART_MARGIN, title=title or speaker,
                      xaxis_title="call time (s)", yaxis={"range": [0, 1], "title": "probability"})
    return fig


def risk_curve(utterances: pd.DataFrame, alerts: pd.DataFrame) -> go.Figure:
    """Escalation risk per speaker over the call, with alert points and their top factors."""
    fig = go.Figure()
    for speaker in utterances.speaker.unique():
        rows = utterances[(utterances.speaker == speaker) & utterances.risk.notna()]
        fig.add_trace(go.Scatter(x=rows.end_s, y=rows.risk, name=speaker, mode="lines+markers",
                                 hovertext=rows.risk_factors.map(factors_text)))
    if not alerts.empty:
        fig.add_trace(go.Scatter(x=alerts.t_s, y=alerts.score, name="alert", mode="markers",
                                 marker={"symbol": "triangle-up", "size": 14, "color": "#d62728"},
                                 hovertext=alerts.factors.map(factors_text)))
    fig.update_layout(height=260, margin=CHART_MARGIN, title="Escalation risk",
                      xaxis_title="call time (s)", yaxis={"range": [0, 1], "title": "risk"})
    return fig


def transcript_view(utterances: pd.DataFrame) -> pd.DataFrame:
    """The transcript with every utterance tagged: base, granular and complex emotion, sarcasm, risk."""
    sarcasm = utterances.is_sarcastic.fillna(False).astype(bool)
    return pd.DataFrame({
        "time": utterances.start_s.map(clock),
        "speaker": utterances.speaker,
        "text": utterances.text,
        "emotion": (utterances.base_emotion + " "
                    + (utterances.base_confidence * 100).round().astype(int).astype(str) + "%"),
        "granular": utterances.granular_labels.map(lambda g: ", ".join(g) if g is not None else ""),
        "complex": utterances.complex_emotion.fillna(""),
        "sarcasm": [("sarcastic?" if amb else "sarcastic") if s else ("ambiguous" if amb else "")
                    for s, amb in zip(sarcasm, utterances.sarcasm_ambiguous.fillna(False).astype(bool))],
        "risk": utterances.risk,
    })


# Column headers in words for every page's tables (issue 16): a column a page shows gets its words
# here unless the page configures it; anything unlisted is its name with spaces.
HEADERS = {
    "call_id": "Call", "started_at": "Started", "analyzed_at": "Analysed", "agent_id": "Agent",
    "customer_id": "Customer", "customer": "Customer", "team": "Team", "status": "Status",
    "duration_s": "Length (s)", "peak_risk": "Peak risk", "alert_count": "Alerts", "risk": "Risk now",
    "risk_trend": "Risk, last minutes", "customer_emotion": "Customer's emotion now",
    "customer_final_emotion": "Customer's last emotion", "sarcasm_count": "Sarcastic remarks",
    "churn_phrases": "Churn phrases said", "customer_end_negative": "Customer negative at the end",
    "calls_in_period": "Calls in the period", "churn_score": "Churn score", "categories": "Categories",
    "calls": "Calls", "escalation_share": "Escalated calls", "customer_worsening": "Customer worse at the end by",
    "empathy": "Empathy", "opportunity": "Coaching opportunity", "scope": "Compared with",
    "talk_share": "Talk share", "interruptions": "Interruptions made", "words_per_minute": "Words per minute",
    "overlap_s": "Overlap (s)", "feedback_id": "Feedback", "utterance_idx": "Utterance", "kind": "Kind",
    "value": "Correct label", "note": "Note", "author": "By", "created_at": "When (UTC)",
    "audit_id": "Entry", "logged_at": "When (UTC)", "user_name": "User", "role": "Role", "action": "Action",
    "detail": "Detail", "client": "From address",
}


def headed(frame: pd.DataFrame, configured: dict | None = None) -> dict:
    """A column_config that heads every column of `frame` in words: the page's own configs
    (which carry their labels) first, then HEADERS, then the name with spaces."""
    configured = configured or {}
    return {c: configured.get(c, HEADERS.get(c, str(c).replace("_", " ").capitalize())) for c in frame.columns}
