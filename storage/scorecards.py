"""QA scorecards in the store (migration 012): each call's answers, the coach's changes, the agent's
disputes and their resolution, and the scores the Agents page charts.

The workflow is enforced here and in storage/access.py, never by a page: a coach of the agent's
team (or an admin) may change an answer, with a note; the agent may dispute their own call's
scorecard (or one answer), with a reason; a coach resolves the dispute (accept, optionally
changing the answer, or reject), with a note. Each step is one write action, run by access.py in
one transaction with its audit row; any other role is refused (403). A coach's answer survives
re-analysis and `emotivoice scorecard rescore`, which replace only the automatic answers.

The stored score (calls.scorecard_score) uses analysis/insight/scorecard.py's formula: the weighted
share of the answered questions' scores, 0-100.
"""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pandas as pd

from emotivoice.storage.db import BadRequest, rollback, short
from emotivoice.storage.queries import FULL, Scope, in_scope, read_query, write_action

Con = duckdb.DuckDBPyConnection
ROW_COLUMNS = ("call_id", "question_id", "position", "question", "weight", "answer_kind", "auto_score", "auto_note",
               "evidence")
KINDS = ("category", "metric", "coach")
ANSWERS = {"yes": 1.0, "partly": 0.5, "no": 0.0, "n/a": None}  # a coach's answer as the score it counts for
MAX_NOTE = 1000
CARRIED = ("source", "score", "note", "changed_by", "changed_at")  # a coach's answer, kept across re-saves


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_rows(call_id: str, rows: object) -> None:
    """Refuse scorecard rows that are not exactly ours (BadRequest names the first refusal)."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadRequest("scorecard must be a list of objects")
    for row in rows:
        for key in row:
            if key not in ROW_COLUMNS:
                raise BadRequest(f"unknown column {short(key)} in scorecard_answers")
        if row.get("call_id") != call_id:
            raise BadRequest("every scorecard row needs the call's call_id")
        if not isinstance(row.get("question_id"), str) or not row["question_id"] or row.get("answer_kind") not in KINDS:
            raise BadRequest("a scorecard row needs a question_id and an answer_kind")


def sync_answers(con: Con, call_id: str, rows: list[dict]) -> None:
    """Inside the caller's transaction: the call's automatic answers become `rows` (the coach's
    answers to questions still on the card kept), and the call's score follows. No rows: the
    stored answers stay as they are (a live call's saves, a record made without a scorecard)."""
    if rows:
        coached = {r[0]: r[1:] for r in con.execute(
            f"SELECT question_id, {', '.join(CARRIED)} FROM scorecard_answers WHERE call_id = ? AND source = 'coach'",
            [call_id]).fetchall()}
        con.execute("DELETE FROM scorecard_answers WHERE call_id = ?", [call_id])
        names = ", ".join((*ROW_COLUMNS, *CARRIED))
        values = []
        for r in rows:
            carried = coached.get(r["question_id"]) or ("auto", r.get("auto_score"), None, None, None)
            values.append([r.get(c) for c in ROW_COLUMNS] + list(carried))
        con.executemany(f"INSERT INTO scorecard_answers ({names}) VALUES ({', '.join('?' * len(names.split(', ')))})",
                        values)
    refresh_score(con, call_id)


def refresh_score(con: Con, call_id: str) -> float | None:
    """calls.scorecard_score from the call's answers as they stand; returns it."""
    row = con.execute("""
        UPDATE calls SET scorecard_score = (
            SELECT CASE WHEN sum(weight) FILTER (WHERE score IS NOT NULL) > 0
                        THEN round(100.0 * sum(weight * score) FILTER (WHERE score IS NOT NULL)
                                   / sum(weight) FILTER (WHERE score IS NOT NULL), 1) END
            FROM scorecard_answers WHERE call_id = ?)
        WHERE call_id = ? RETURNING scorecard_score""", [call_id, call_id]).fetchone()
    return row[0] if row else None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} is required")
    if len(value) > MAX_NOTE:
        raise BadRequest(f"{what} must be at most {MAX_NOTE} characters")
    return value.strip()


def _answer(value: object) -> float | None:
    if value not in ANSWERS:
        raise BadRequest(f"an answer is one of {', '.join(ANSWERS)}, not {short(value)}")
    return ANSWERS[value]


def _question(con: Con, call_id: str, question_id: object) -> str:
    if not isinstance(question_id, str) or con.execute(
            "SELECT 1 FROM scorecard_answers WHERE call_id = ? AND question_id = ?", [call_id, question_id]
    ).fetchone() is None:
        raise BadRequest(f"no scorecard question {short(question_id)} on this call")
    return question_id


def _coach_answer(con: Con, call_id: str, question_id: str, answer: str, note: str, by: str) -> float | None:
    con.execute("UPDATE scorecard_answers SET source = 'coach', score = ?, note = ?, changed_by = ?, changed_at = ? "
                "WHERE call_id = ? AND question_id = ?", [_answer(answer), note, by, _now(), call_id, question_id])
    return refresh_score(con, call_id)


# ---- the workflow (storage/access.py: who may, the audit row, one transaction) --------------------

@write_action
def set_scorecard_answer(con: Con, call_id: str, question_id: str, answer: str, note: str, by: str) -> dict:
    """A coach changes one answer (yes, partly, no, n/a) and says why; the call's score follows."""
    question_id, note = _question(con, call_id, question_id), _text(note, "a note")
    score = _coach_answer(con, call_id, question_id, answer, note, _text(by, "who"))
    return {"call_id": call_id, "question_id": question_id, "answer": answer, "call_score": score,
            "detail": f"{question_id}: {answer} ({note[:200]})"}


@write_action
def dispute_scorecard(con: Con, call_id: str, reason: str, by: str, question_id: str | None = None) -> dict:
    """The agent disputes their call's scorecard, or one answer on it, giving a reason."""
    reason = _text(reason, "a reason")
    if con.execute("SELECT 1 FROM scorecard_answers WHERE call_id = ? LIMIT 1", [call_id]).fetchone() is None:
        raise BadRequest("this call has no scorecard")
    if question_id is not None:
        _question(con, call_id, question_id)
    if con.execute("SELECT 1 FROM scorecard_disputes WHERE call_id = ? AND question_id IS NOT DISTINCT FROM ? "
                   "AND status = 'open'", [call_id, question_id]).fetchone():
        raise BadRequest("this is already disputed and waits for a coach")
    row = con.execute("INSERT INTO scorecard_disputes (call_id, question_id, reason, raised_by, raised_at) "
                      "VALUES (?, ?, ?, ?, ?) RETURNING dispute_id",
                      [call_id, question_id, reason, _text(by, "who"), _now()]).fetchone()
    return {"call_id": call_id, "dispute_id": row[0],
            "detail": f"dispute #{row[0]} of {question_id or 'the scorecard'}: {reason[:200]}"}


@write_action
def resolve_scorecard_dispute(con: Con, call_id: str, dispute_id: int, decision: str, note: str, by: str,
                              answer: str | None = None) -> dict:
    """A coach accepts or rejects an open dispute, with a note; accepting a dispute of one answer
    may change that answer at the same time (`answer`)."""
    if decision not in ("accept", "reject"):
        raise BadRequest(f"a decision is accept or reject, not {short(decision)}")
    note, by = _text(note, "a note"), _text(by, "who")
    found = con.execute("SELECT question_id, status FROM scorecard_disputes WHERE dispute_id = ? AND call_id = ?",
                        [int(dispute_id), call_id]).fetchone()
    if found is None:
        raise BadRequest(f"no dispute {int(dispute_id)} on this call")
    if found[1] != "open":
        raise BadRequest(f"dispute {int(dispute_id)} is already {found[1]}")
    if answer is not None and (decision != "accept" or found[0] is None):
        raise BadRequest("an answer is changed only by accepting a dispute of that answer")
    status = "accepted" if decision == "accept" else "rejected"
    con.execute("UPDATE scorecard_disputes SET status = ?, resolved_by = ?, resolved_at = ?, resolution = ? "
                "WHERE dispute_id = ?", [status, by, _now(), note, int(dispute_id)])
    score = _coach_answer(con, call_id, found[0], answer, note, by) if answer is not None else None
    changed = f", {found[0]} now {answer}" if answer is not None else ""
    return {"call_id": call_id, "dispute_id": int(dispute_id), "status": status, "call_score": score,
            "detail": f"dispute #{int(dispute_id)} {status}{changed}: {note[:200]}"}


@write_action
def rescore_call(con: Con, call_id: str, scorecard: list[dict], scorecard_name: str) -> dict:
    """The services' own (`emotivoice scorecard rescore`): a stored call's automatic answers
    replaced after the card changed, the coach's kept."""
    check_rows(call_id, scorecard)
    if not isinstance(scorecard_name, str):
        raise BadRequest("scorecard_name must be a string")
    con.execute("BEGIN TRANSACTION")
    try:
        if con.execute("SELECT 1 FROM calls WHERE call_id = ?", [call_id]).fetchone() is None:
            raise BadRequest(f"no call {short(call_id)}")
        con.execute("UPDATE calls SET scorecard_name = ? WHERE call_id = ?", [scorecard_name, call_id])
        sync_answers(con, call_id, scorecard)
        score = con.execute("SELECT scorecard_score FROM calls WHERE call_id = ?", [call_id]).fetchone()[0]
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return {"call_id": call_id, "call_score": score}


# ---- reads: the review page and the Agents page -----------------------------------------------------

@read_query
def call_scorecard(con: Con, call_id: str) -> pd.DataFrame:
    """One call's scorecard in the card's order, with the call's score on every row."""
    return con.execute("""
        SELECT a.question_id, a.question, a.weight, a.answer_kind, a.auto_score, a.auto_note, a.evidence, a.source,
               a.score, a.note, a.changed_by, a.changed_at, c.scorecard_name, c.scorecard_score
        FROM scorecard_answers a JOIN calls c USING (call_id)
        WHERE a.call_id = ? ORDER BY a.position, a.question_id""", [call_id]).df()


@read_query
def call_scorecard_disputes(con: Con, call_id: str) -> pd.DataFrame:
    return con.execute("""
        SELECT dispute_id, question_id, reason, raised_by, raised_at, status, resolved_by, resolved_at, resolution
        FROM scorecard_disputes WHERE call_id = ? ORDER BY raised_at, dispute_id""", [call_id]).df()


@read_query
def scorecard_weekly(con: Con, date_from: str, date_to: str, team: str | None = None, by: str = "agent", *,
                     scope: Scope = FULL) -> pd.DataFrame:
    """Average scorecard score per agent (by="agent") or per team (by="team") and week, with how many
    calls were scored and how many of their scorecards were disputed."""
    if by not in ("agent", "team"):
        raise BadRequest("by is agent or team")
    group = "agent_id" if by == "agent" else "team"  # one of our two column names, never input
    return con.execute(f"""
        SELECT {group} AS who, date_trunc('week', started_at) AS week, count(*) AS calls,
               avg(scorecard_score) AS score,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM scorecard_disputes d WHERE d.call_id = c.call_id))
                   AS disputed
        FROM calls c
        WHERE started_at >= ?::TIMESTAMP AND started_at < ?::TIMESTAMP + INTERVAL 1 DAY
          AND scorecard_score IS NOT NULL AND {group} IS NOT NULL AND (?::VARCHAR IS NULL OR team = ?)
          AND {in_scope("c.")}
        GROUP BY ALL ORDER BY week, who""", [date_from, date_to, team, team, *scope.params()]).df()

