"""QA scorecards on the dashboard: the call review's scorecard (score, answers, disputes) with the
form the signed-in role may use (a coach changes an answer or resolves a dispute, the agent
disputes), and the Agents page's scores per agent and team over weeks.

The forms only offer what the role may do; the store decides (storage/scorecards.py and
storage/access.py refuse anyone else, and write every step to the audit trail).
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from emotivoice.dashboard.common import CHART_MARGIN, role
from emotivoice.storage.store import Store

ANSWER_WORDS = {1.0: "yes", 0.5: "partly", 0.0: "no"}
CHOICES = ["yes", "partly", "no", "n/a"]
COACHES = ("coach", "admin")
FLASH = "scorecard_flash"


def _answer(score: object, kind: str, source: str) -> str:
    if score is None or pd.isna(score):
        return "waiting for the coach" if kind == "coach" and source == "auto" else "not applicable"
    return ANSWER_WORDS.get(float(score), f"{float(score):.0%}")


def answers_table(card: pd.DataFrame) -> pd.DataFrame:
    """The answers as a coach reads them: headers in words, the answer and who gave it."""
    return pd.DataFrame({
        "Question": card.question, "Weight": card.weight,
        "Answer": [_answer(s, k, src) for s, k, src in zip(card.score, card.answer_kind, card.source)],
        "Answered by": ["coach " + str(by) if src == "coach" else "automatically" for src, by in
                        zip(card.source, card.changed_by)],
        "Why": [n if src == "coach" and isinstance(n, str) else a for src, n, a in
                zip(card.source, card.note, card.auto_note)]})


def _about(question_id: object) -> str:
    return question_id if isinstance(question_id, str) else "the whole scorecard"  # NULL arrives as NaN


def disputes_table(disputes: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Dispute": [f"#{d}" for d in disputes.dispute_id],
        "About": [_about(q) for q in disputes.question_id], "Reason": disputes.reason,
        "Raised by": disputes.raised_by, "Status": disputes.status,
        "Resolved by": disputes.resolved_by.fillna(""), "Resolution": disputes.resolution.fillna("")})


def _write(db: Store, action: str, done: str, **params) -> None:
    """One workflow step through the store; its refusal is shown, its success after the rerun."""
    from emotivoice.storage.db import BadRequest, StorageError

    try:
        db.write(action, **params)
    except (BadRequest, StorageError) as exc:  # AccessDenied is a BadRequest: the store's own words
        st.error(str(exc))
        return
    st.session_state[FLASH] = done
    st.rerun()


def show_scorecard(db: Store, call_id: str) -> None:
    """The call review's scorecard section, with the form the signed-in role may use."""
    st.subheader("QA scorecard")
    if FLASH in st.session_state:
        st.success(st.session_state.pop(FLASH))
    card = db.read("call_scorecard", call_id=call_id)
    if card.empty:
        st.caption("No scorecard for this call (analysed before scorecards, or the scorecard file could not be "
                   "used: see the call's warnings).")
        return
    score = card.scorecard_score.iloc[0]
    waiting = int(((card.answer_kind == "coach") & (card.source == "auto")).sum())
    st.metric(f"Score ({card.scorecard_name.iloc[0]})", "no answers yet" if pd.isna(score) else f"{score:.0f} / 100")
    if waiting:
        st.caption(f"{waiting} question(s) wait for a coach; the score counts the answered ones.")
    st.dataframe(answers_table(card), hide_index=True, width="stretch", key="scorecard-answers")
    disputes = db.read("call_scorecard_disputes", call_id=call_id)
    if not disputes.empty:
        st.markdown("**Disputes**")
        st.dataframe(disputes_table(disputes), hide_index=True, width="stretch", key="scorecard-disputes")
    questions = dict(zip(card.question_id, card.question))
    who = role()
    if who in COACHES:
        _coach_forms(db, call_id, questions, disputes)
    elif who == "agent":
        _agent_form(db, call_id, questions)


def _coach_forms(db: Store, call_id: str, questions: dict[str, str], disputes: pd.DataFrame) -> None:
    with st.form("scorecard-edit", clear_on_submit=True):
        st.markdown("**Change an answer**")
        question = st.selectbox("Question", list(questions), format_func=questions.get, key="scorecard-question")
        answer = st.radio("Answer", CHOICES, horizontal=True, key="scorecard-answer")
        note = st.text_area("Note (required: why you changed it)", key="scorecard-note", max_chars=1000)
        if st.form_submit_button("Save answer"):
            if not note.strip():
                st.error("A note is required to change an answer.")
            else:
                _write(db, "set_scorecard_answer", f"Answer to {question!r} saved.", call_id=call_id,
                       question_id=question, answer=answer, note=note)
    open_ = disputes[disputes.status == "open"] if not disputes.empty else disputes
    if open_.empty:
        return
    labels = {int(d.dispute_id): f"#{d.dispute_id}: {_about(d.question_id)} ({d.reason[:60]})"
              for d in open_.itertuples()}
    with st.form("scorecard-resolve", clear_on_submit=True):
        st.markdown("**Resolve a dispute**")
        dispute = st.selectbox("Dispute", list(labels), format_func=labels.get, key="scorecard-dispute")
        decision = st.radio("Decision", ["accept", "reject"], horizontal=True, key="scorecard-decision")
        answer = st.selectbox("New answer (accepting a dispute of one answer)", ["(unchanged)", *CHOICES],
                              key="scorecard-new-answer")
        note = st.text_area("Resolution note (required)", key="scorecard-resolution", max_chars=1000)
        if st.form_submit_button("Resolve dispute"):
            if not note.strip():
                st.error("A note is required to resolve a dispute.")
            else:
                _write(db, "resolve_scorecard_dispute", f"Dispute #{dispute} {decision}ed.", call_id=call_id,
                       dispute_id=dispute, decision=decision, note=note,
                       answer=None if answer == "(unchanged)" else answer)


def _agent_form(db: Store, call_id: str, questions: dict[str, str]) -> None:
    with st.form("scorecard-dispute-form", clear_on_submit=True):
        st.markdown("**Dispute this scorecard**")
        options = ["", *questions]
        question = st.selectbox("What you dispute", options, key="scorecard-disputed",
                                format_func=lambda q: questions.get(q, "the whole scorecard"))
        reason = st.text_area("Reason (required)", key="scorecard-reason", max_chars=1000)
        if st.form_submit_button("Dispute"):
            if not reason.strip():
                st.error("Say why you dispute it.")
            else:
                _write(db, "dispute_scorecard", "Dispute sent to your coach.", call_id=call_id,
                       question_id=question or None, reason=reason)


# ---- Agents page ------------------------------------------------------------------------------------

WEEKS = {"tickformat": "%d %b", "dtick": 7 * 86_400_000, "title": "week starting"}


def weekly_table(weekly: pd.DataFrame, who: str) -> pd.DataFrame:
    return pd.DataFrame({who: weekly.who, "Week starting": pd.to_datetime(weekly.week).dt.date,
                         "Calls scored": weekly.calls, "Average score": weekly.score.round(1),
                         "Disputed": weekly.disputed})


def show_scorecard_trends(db: Store, params: dict) -> None:
    """Average QA score per agent and per team over the weeks, as charts and tables."""
    st.subheader("QA scorecards")
    by_agent = db.read("scorecard_weekly", **params, by="agent")
    if by_agent.empty:
        st.info("No scored calls in this period.")
        return
    by_team = db.read("scorecard_weekly", **params, by="team")
    left, right = st.columns(2)
    for column, frame, who, title, key in ((left, by_agent, "Agent", "QA score per agent", "qa-agents"),
                                           (right, by_team, "Team", "QA score per team", "qa-teams")):
        if frame.empty:
            column.caption(f"No scored calls with a {who.lower()} in this period.")
            continue
        fig = px.line(frame.rename(columns={"who": who}), x="week", y="score", color=who, markers=True, title=title)
        fig.update_layout(height=280, margin=CHART_MARGIN, yaxis={"range": [0, 100], "title": "average score"},
                          xaxis=WEEKS)
        column.plotly_chart(fig, key=key)
        column.dataframe(weekly_table(frame, who), hide_index=True, width="stretch", key=f"{key}-table")
