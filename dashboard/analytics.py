"""The call review's analytics section: sentiment by quarter per speaker, the customer at the start
against the end, the post-call summary and the categories the rules found, as stored with the call
(storage/migrations/010_analytics.sql). Only charts, captions and text, so the page's tables keep
their order."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from emotivoice.dashboard.common import CHART_MARGIN, clock
from emotivoice.storage.store import Store

SPEAKER_COLORS = {"agent": "#1f77b4", "customer": "#d62728"}


def _parsed(value) -> object:
    """A stored JSON column as Python (None for a call stored before migration 010)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return json.loads(value) if isinstance(value, str) else value


def quarter_chart(quarters: list[dict]) -> go.Figure:
    """Sentiment per quarter of the call, one line per speaker; the hover names the top emotion."""
    fig = go.Figure()
    for speaker in dict.fromkeys(q["speaker"] for q in quarters):
        rows = [q for q in quarters if q["speaker"] == speaker]
        role = rows[0]["role"]
        fig.add_trace(go.Scatter(
            x=[f"Q{q['quarter']}" for q in rows], y=[q["sentiment"] for q in rows], name=f"{speaker} ({role})",
            mode="lines+markers", connectgaps=False, line={"color": SPEAKER_COLORS.get(role)},
            hovertext=[f"{q['utterances']} utterances, mostly {q['top_emotion']}, negative {q['negative'] or 0:.0%}"
                       if q["utterances"] else "silent" for q in rows]))
    fig.update_layout(height=240, margin=CHART_MARGIN, title="Sentiment by quarter of the call",
                      yaxis={"range": [-1, 1], "title": "sentiment"}, xaxis_title="quarter")
    return fig


def trend_text(trend: dict) -> str:
    return (f"Customer at the start against the end: {trend['trend']} (sentiment {trend['start_sentiment']:+.2f} "
            f"in Q{trend['start_quarter']}, mostly {trend['start_emotion']}; {trend['end_sentiment']:+.2f} "
            f"in Q{trend['end_quarter']}, mostly {trend['end_emotion']})")


def show_analytics(db: Store, call_id: str) -> None:
    """The section itself; says so plainly when the call was stored without analytics."""
    rows = db.read("call_analytics", call_id=call_id)
    if rows.empty:
        return
    row = rows.iloc[0]
    st.subheader("Conversation analytics")
    quarters = _parsed(row.quarters)
    if not quarters:
        st.caption("No analytics stored for this call (analysed before they existed): re-analyse it to see them.")
        return
    st.plotly_chart(quarter_chart(quarters), key="quarters")
    trend = _parsed(row.customer_start_vs_end)
    if trend:
        st.caption(trend_text(trend))
    summary = _parsed(row.get("summary"))
    if summary:
        st.markdown(summary_markdown(summary))
    matches = _parsed(row.get("category_matches"))
    if matches is not None:
        st.markdown(categories_markdown(matches))


def summary_markdown(summary: dict) -> str:
    """The post-call summary as a short list a supervisor reads in ten seconds."""
    lines = ["**Summary**"]
    reason = summary.get("reason")
    lines.append(f"- **Why they called** ({clock(reason['t_s'])}): “{reason['text']}”" if reason
                 else "- **Why they called**: not found in the customer's words")
    for m in summary.get("key_moments", []):
        lines.append(f"- {clock(m['t_s'])} **{m['kind']}**: {m['detail']}")
    promised = summary.get("commitments", [])
    lines.append("- **Agent promised**: " + ("; ".join(f"“{c['text']}” ({clock(c['t_s'])})" for c in promised)
                                               if promised else "nothing found"))
    ending = summary.get("ending")
    if ending:
        lines.append(f"- **How it ended**: {ending['text']}")
    return "\n".join(lines)


def categories_markdown(matches: list[dict]) -> str:
    if not matches:
        return "**Categories**: none of the rules matched."
    lines = ["**Categories**"]
    for m in matches:
        where = ", ".join(f"{e.get('speaker', 'call')} at {clock(e['start_s'])}" for e in m["evidence"][:4])
        more = f" and {len(m['evidence']) - 4} more" if len(m["evidence"]) > 4 else ""
        lines.append(f"- **{m['category']}**{' (alert)' if m.get('alert') else ''}: {where}{more}")
    return "\n".join(lines)


def calibration_note(stored: object) -> str:
    """Which of the deployment's emotion corrections (emotivoice recalibrate) the call was scored under."""
    summary = _parsed(stored)
    if not isinstance(summary, dict) or not summary.get("profile"):
        return "Emotions as the model gives them (no calibration profile from coaches' corrections applies)."
    fitted = str(summary.get("fitted_at") or "")[:10]
    return (f"Emotions calibrated with the profile \"{summary['profile']}\""
            + (f" (fitted {fitted} from coaches' corrections)" if fitted else "") + ".")
