"""Conversation analytics on constructed calls: quarters, start against end, the post-call summary and
rule categories, computed by the real insight stage and stored in a real DuckDB file; then one slow
test through `emotivoice analyze --json` on the assembled demo call."""

from __future__ import annotations

import json

import pytest

from analysis.emotion.tiers import granular
from analysis.insight.analytics import annotate
from analysis.insight.quarters import quarters, start_vs_end
from analysis.insight.stage import enrich
from analysis.results import CallResult, Speaker, Utterance
from analysis.sink import to_record
from analysis.transcription import Word
from storage.db import connect, save_call
from storage.queries import run_read

CALM = {"neutral": 0.8, "happiness": 0.1, "anger": 0.05, "sadness": 0.05}
ANGRY = {"anger": 0.85, "disgust": 0.05, "neutral": 0.1}
HAPPY = {"happiness": 0.8, "neutral": 0.2}


def utt(speaker: str, start: float, end: float, text: str, emotions: dict[str, float] = CALM) -> Utterance:
    """An utterance with words spread evenly over its time, as Whisper would give them."""
    tokens = text.split()
    step = (end - start) / max(len(tokens), 1)
    words = [Word(" " + t, round(start + i * step, 3), round(start + (i + 1) * step, 3), 0.9)
             for i, t in enumerate(tokens)]
    return Utterance("c1", 0 if speaker == "agent" else 1, speaker, start, end, -20.0, text=text, words=words,
                     emotions=dict(emotions), granular=granular(emotions))


def make_call(turns: list[Utterance], duration_s: float, call_id: str = "c1") -> CallResult:
    """A stereo call scored by the real insight stage (sentiment, sarcasm, risk, alerts)."""
    result = CallResult(call_id, "constructed.wav", duration_s, 2, "channel-per-speaker (stereo)", "asr", "emo", False,
                        speakers=[Speaker("agent", "agent", 0), Speaker("customer", "customer", 1)],
                        utterances=sorted(turns, key=lambda u: u.start))
    for u in result.utterances:
        u.call_id = call_id
    result.alerts = enrich(result.utterances)
    return result


def angry_call_that_calms_down() -> CallResult:
    """80 s: the customer is furious in the first quarter and thanks the agent in the last."""
    return make_call([
        utt("agent", 0.5, 3.0, "Thank you for calling Acme, how can I help you today?"),
        utt("customer", 3.5, 9.0, "I was charged twice this month and it is absolutely terrible service", ANGRY),
        utt("customer", 9.5, 14.0, "This is ridiculous, I want to speak to a manager", ANGRY),
        utt("agent", 14.5, 19.0, "I am so sorry about that, I understand how frustrating this is"),
        utt("agent", 22.0, 30.0, "Can you confirm your date of birth for me please"),
        utt("customer", 30.5, 35.0, "It is the third of March"),
        utt("agent", 42.0, 50.0, "I will refund the second charge and I will send you an email confirmation"),
        utt("customer", 61.0, 66.0, "That is great, thank you so much, I really appreciate it", HAPPY),
        utt("agent", 70.0, 76.0, "You are welcome, have a great day", HAPPY),
    ], 80.0)


def test_each_utterance_falls_in_the_quarter_of_its_midpoint_weighted_by_length():
    call = make_call([
        utt("customer", 0.0, 10.0, "This is awful", ANGRY),          # midpoint 5: Q1
        utt("customer", 18.0, 22.0, "fine", CALM),                    # midpoint 20: Q1 (0-25)
        utt("customer", 24.0, 28.0, "okay then", CALM),               # midpoint 26: Q2
        utt("agent", 90.0, 100.0, "Goodbye", HAPPY),                  # midpoint 95: Q4
    ], 100.0)
    rows = quarters(call)
    assert len(rows) == 8 and [r["quarter"] for r in rows] == [1, 2, 3, 4] * 2
    by = {(r["speaker"], r["quarter"]): r for r in rows}
    assert [by["customer", q]["utterances"] for q in (1, 2, 3, 4)] == [2, 1, 0, 0]
    assert [by["agent", q]["utterances"] for q in (1, 2, 3, 4)] == [0, 0, 0, 1]
    q1 = by["customer", 1]
    # anger 0.85 over 10 s and 0.05 over 4 s: weighted by length
    assert q1["emotions"]["anger"] == pytest.approx((0.85 * 10 + 0.05 * 4) / 14, abs=1e-3)
    assert q1["top_emotion"] == "anger" and q1["talk_s"] == 14.0
    u0, u1 = call.utterances[0], call.utterances[1]
    assert q1["sentiment"] == pytest.approx((u0.sentiment * 10 + u1.sentiment * 4) / 14, abs=1e-3)
    assert by["customer", 3]["sentiment"] is None and by["customer", 3]["emotions"] == {}
    assert (by["agent", 4]["start_s"], by["agent", 4]["end_s"]) == (75.0, 100.0)


def test_customer_start_against_end_says_the_call_improved():
    call = angry_call_that_calms_down()
    trend = start_vs_end(quarters(call))
    assert trend["start_quarter"] == 1 and trend["end_quarter"] == 4
    assert trend["start_sentiment"] < 0 < trend["end_sentiment"]
    assert trend["trend"] == "improved" and trend["sentiment_change"] > 0.5
    assert trend["start_emotion"] == "anger" and trend["end_emotion"] == "happiness"
    assert trend["start_negative"] > 0.8 > 0.1 > trend["end_negative"]


def test_start_against_end_worsened_one_quarter_and_no_customer():
    worse = make_call([utt("customer", 1, 5, "Thanks, that is lovely", HAPPY),
                       utt("customer", 80, 85, "This is terrible and useless", ANGRY)], 90.0)
    assert start_vs_end(quarters(worse))["trend"] == "worsened"
    one = make_call([utt("customer", 1, 5, "Hello there")], 90.0)
    assert start_vs_end(quarters(one))["trend"] == "one quarter"
    assert start_vs_end(quarters(make_call([utt("agent", 1, 5, "Hello")], 10.0))) is None


def test_analytics_are_in_the_json_and_stored_with_the_call(tmp_path):
    call = annotate(angry_call_that_calms_down())
    doc = json.loads(json.dumps(call.to_json()))
    assert len(doc["quarters"]) == 8 and doc["customer_start_vs_end"]["trend"] == "improved"
    con = connect(tmp_path / "a.duckdb")
    save_call(con, to_record(call))
    row = run_read(con, "call_analytics", {"call_id": "c1"}).iloc[0]
    assert json.loads(row.quarters) == doc["quarters"]
    assert json.loads(row.customer_start_vs_end) == doc["customer_start_vs_end"]
    assert row.customer_trend == "improved"
    assert json.loads(row.summary) == doc["summary"] and row.summary_headline == doc["summary"]["headline"]
    assert row.customer_start_sentiment == pytest.approx(doc["customer_start_vs_end"]["start_sentiment"])


@pytest.fixture
def review_env(tmp_path, monkeypatch):
    """A store holding the constructed call, annotated, and one signed-in supervisor."""
    from datetime import datetime

    from analysis.sink import to_record as record_of
    from dashboard.auth import hash_password

    db = tmp_path / "r.duckdb"
    con = connect(db)
    save_call(con, record_of(annotate(angry_call_that_calms_down()),
                             metadata={"agent_id": "agent-7", "started_at": datetime.now()}))
    con.close()
    monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(db))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMOTIVOICE_DASHBOARD_USERS", f"sam:{hash_password('correct horse battery')}")
    return db


def open_review():
    """The call review page, signed in, run once on the stored call."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from dashboard.sessions import REGISTRY

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=60)
    at.session_state["session_token"] = REGISTRY.open("sam", 600)
    at.session_state["user"] = "sam"
    at.switch_page("views/review.py").run()
    assert not at.exception, at.exception
    return at


def test_call_review_shows_the_quarters_chart_and_the_trend(review_env):
    at = open_review()
    assert any(h.value == "Conversation analytics" for h in at.subheader)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    quarter = next(c for c in charts if c["layout"]["title"]["text"] == "Sentiment by quarter of the call")
    assert [t["name"] for t in quarter["data"]] == ["agent (agent)", "customer (customer)"]
    assert quarter["data"][1]["x"] == ["Q1", "Q2", "Q3", "Q4"]
    assert any(c.value.startswith("Customer at the start against the end: improved") for c in at.caption)
    summary = next(m.value for m in at.markdown if m.value.startswith("**Summary**"))
    assert "**Why they called** (0:03.5): “I was charged twice" in summary
    assert "**Agent promised**: “I will refund the second charge" in summary and "risk peak" in summary


def test_summary_finds_the_reason_the_promises_the_moments_and_the_ending():
    call = annotate(angry_call_that_calms_down())
    s = call.summary
    assert s["reason"] == {"utterance_idx": 1, "t_s": 3.5, "cue": "charged",
                           "text": "I was charged twice this month and it is absolutely terrible service"}
    assert [(c["utterance_idx"], c["what"]) for c in s["commitments"]] == [(6, ["i will refund", "i will send"])]
    assert s["commitments"][0]["t_s"] == 42.0  # the time of "I", the promise's first word
    kinds = [(m["kind"], m["utterance_idx"]) for m in s["key_moments"]]
    assert ("alert", call.alerts[0].utterance_idx) in kinds
    peak = max(range(len(call.utterances)), key=lambda i: call.utterances[i].risk.score
               if call.utterances[i].speaker == "customer" else -1)
    assert ("risk peak", peak) in kinds
    assert [m["t_s"] for m in s["key_moments"]] == sorted(m["t_s"] for m in s["key_moments"])
    end = s["ending"]
    assert [t["utterance_idx"] for t in end["last_turns"]] == [6, 7, 8]
    assert end["customer_emotion"] == "happiness" and end["customer_sentiment"] > 0.5 and end["trend"] == "improved"
    assert "Agent promised: i will refund, i will send" in s["headline"]


def test_summary_skips_greetings_for_the_reason_and_lists_sarcasm():
    call = annotate(make_call([
        utt("agent", 0.5, 3.0, "Good morning, this is Dana"),
        utt("customer", 3.5, 5.0, "Hi there"),
        utt("customer", 5.5, 10.0, "My internet is not working since Monday"),
        utt("agent", 11.0, 16.0, "Let me look. Engineers are on it. We'll call you back within two hours."),
        utt("customer", 17.0, 21.0, "Oh great, that is just perfect", ANGRY),
    ], 25.0))
    s = call.summary
    assert s["reason"]["utterance_idx"] == 2 and s["reason"]["cue"] in ("my internet", "not working")
    (promise,) = s["commitments"]
    assert promise["text"] == "We'll call you back within two hours."
    assert promise["what"] == ["we'll call", "within two hours"]
    assert promise["t_s"] > 13.0  # the third sentence, not the utterance start
    assert ("sarcasm", 4) in [(m["kind"], m["utterance_idx"]) for m in s["key_moments"]]
    assert "1 sarcastic remark" in s["headline"]
    quiet = annotate(make_call([utt("customer", 0, 3, "Hello"), utt("customer", 4, 9, "So this is Tom speaking")],
                               10.0))
    assert quiet.summary["reason"]["cue"] == "first words" and quiet.summary["commitments"] == []
