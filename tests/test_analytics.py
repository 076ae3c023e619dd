"""Conversation analytics on constructed calls: quarters, start against end, the post-call summary and
rule categories, computed by the real insight stage and stored in a real DuckDB file; then one slow
test through `emotivoice analyze --json` on the assembled demo call."""

from __future__ import annotations

import json

import pytest

from emotivoice.analysis.emotion.tiers import granular
from emotivoice.analysis.insight.analytics import annotate
from emotivoice.analysis.insight.quarters import quarters, start_vs_end
from emotivoice.analysis.insight.stage import enrich
from emotivoice.analysis.results import CallResult, Speaker, Utterance
from emotivoice.analysis.sink import to_record
from emotivoice.analysis.transcription import Word
from emotivoice.storage.db import connect, save_call
from emotivoice.storage.queries import run_read

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
    assert trend["mood_change"] == pytest.approx(trend["sentiment_change"] - trend["negative_change"], abs=1e-3)
    assert trend["start_emotion"] == "anger" and trend["end_emotion"] == "happiness"
    assert trend["start_negative"] > 0.8 > 0.1 > trend["end_negative"]


def test_start_against_end_worsened_one_quarter_and_no_customer():
    worse = make_call([utt("customer", 1, 5, "Thanks, that is lovely", HAPPY),
                       utt("customer", 80, 85, "This is terrible and useless", ANGRY)], 90.0)
    assert start_vs_end(quarters(worse))["trend"] == "worsened"
    voice = make_call([utt("customer", 1, 5, "The surface is slick", CALM),
                       utt("customer", 80, 85, "The surface is slick", ANGRY)], 90.0)
    by_voice = start_vs_end(quarters(voice))  # the same flat words, said in anger at the end
    assert by_voice["sentiment_change"] == 0.0 and by_voice["trend"] == "worsened"
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

    from emotivoice.analysis.sink import to_record as record_of
    from emotivoice.dashboard.auth import hash_password

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

    from emotivoice.dashboard.sessions import REGISTRY

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=60)
    at.session_state["session_token"] = REGISTRY.open("sam", 600)
    at.session_state["user"] = "sam"
    at.switch_page("views/review.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
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
    categories = next(m.value for m in at.markdown if m.value.startswith("**Categories**"))
    assert "- **escalation request** (alert): customer at 0:12.2" in categories
    assert "- **greeting**: agent at 0:00.5" in categories and "profanity" not in categories


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


# ---- categories and rules ---------------------------------------------------------------------------

def rough_call() -> CallResult:
    """90 s: the agent talks over the customer twice, a 25 s hold, swearing and a cancellation."""
    return make_call([
        utt("agent", 0.5, 4.0, "Acme billing, Sam speaking"),
        utt("customer", 4.5, 12.0, "I want to cancel my subscription, this is the third bill this month", ANGRY),
        utt("agent", 11.0, 15.0, "Right, well, let me just stop you there"),          # cuts in (1.0 s overlap)
        utt("customer", 15.5, 22.0, "No, you listen, this shitty service is a joke", ANGRY),
        utt("agent", 21.0, 24.0, "Please hold while I check"),                         # cuts in again
        utt("agent", 50.0, 54.0, "Thanks for waiting, the account is closed now"),    # after 26 s of nothing
        utt("customer", 55.0, 60.0, "Fine.", CALM),
    ], 90.0)


def names(matches: list[dict]) -> list[str]:
    return [m["category"] for m in matches]


def test_default_rules_find_exactly_their_categories():
    from emotivoice.analysis.insight.rulematch import evaluate
    from emotivoice.analysis.insight.rules import load_rules

    rules = load_rules()
    assert names(rules.categories and [{"category": c.name} for c in rules.categories]) == [
        "greeting", "identity check", "empathy statement", "escalation request", "cancellation intent",
        "long hold or silence", "profanity", "agent talking over the customer"]
    assert names(evaluate(angry_call_that_calms_down(), rules)) == [
        "greeting", "identity check", "empathy statement", "escalation request"]
    found = {m["category"]: m for m in evaluate(rough_call(), rules)}
    assert list(found) == ["cancellation intent", "long hold or silence", "profanity",
                           "agent talking over the customer"]  # "Sam speaking" is no greeting in this set
    assert found["cancellation intent"]["evidence"] == [
        {"utterance_idx": 1, "speaker": "customer", "start_s": 6.23, "end_s": 6.81, "text": "cancel"}]
    assert found["profanity"]["evidence"][0]["text"] == "shitty" and found["profanity"]["alert"]
    assert found["long hold or silence"]["evidence"] == [
        {"metric": "longest_silence_s", "value": 26.0, "start_s": 24.0, "end_s": 50.0}]
    assert [e["utterance_idx"] for e in found["agent talking over the customer"]["evidence"]] == [2, 4]


CUSTOM = """
[[category]]
name = "angry customer"
  [[category.condition]]
  speaker = "customer"
  emotion = "anger"
  min_probability = 0.7
  min_count = 2

[[category]]
name = "very angry customer"
  [[category.condition]]
  speaker = "customer"
  emotion = "anger"
  min_probability = 0.7
  min_count = 3

[[category]]
name = "rage"
  [[category.condition]]
  granular = "rage"
  min_probability = 0.8

[[category]]
name = "subscription cancel"
  [[category.condition]]
  near = ["cancel*", "subscription|contract"]
  within = 2

[[category]]
name = "cancel far from bill"
  [[category.condition]]
  near = ["cancel*", "bill"]
  within = 3

[[category]]
name = "opened with swearing"
  [[category.condition]]
  phrases = ["sh?tty", "b*cks"]
  first_s = 30

[[category]]
name = "swearing at the end"
  [[category.condition]]
  phrases = ["sh?tty"]
  last_s = 60

[[category]]
name = "negative start"
  [[category.condition]]
  speaker = "customer"
  sentiment_below = -0.3
  first_s = 20

[[category]]
name = "risky"
  [[category.condition]]
  risk_at_least = 0.5

[[category]]
name = "agent dominates"
match = "all"
  [[category.condition]]
  metric = "talk_share"
  speaker = "agent"
  above = 0.6
  [[category.condition]]
  metric = "interruptions"
  speaker = "agent"
  above = 1

[[category]]
name = "customer dominates"
  [[category.condition]]
  metric = "talk_share"
  speaker = "customer"
  above = 0.55

[[category]]
name = "no greeting"
  [[category.condition]]
  speaker = "agent"
  phrases = ["hello", "good morning"]
  negate = true

[[category]]
name = "hold or swearing"
match = "any"
  [[category.condition]]
  metric = "longest_silence_s"
  above = 60
  [[category.condition]]
  phrases = ["joke"]
"""


def test_a_custom_rule_set_matches_each_kind_of_condition_exactly():
    from emotivoice.analysis.conversation import Span, conversation_metrics
    from emotivoice.analysis.insight.rulematch import evaluate
    from emotivoice.analysis.insight.rules import parse_rules

    call = rough_call()
    per, call.metrics = conversation_metrics([Span(u.speaker, u.start, u.end, len(u.words)) for u in call.utterances],
                                             call.duration_s)
    for s in call.speakers:
        s.metrics = per[s.label]
    assert per["customer"]["talk_share"] > 0.5 and per["agent"]["interruptions_made"] == 2
    found = {m["category"]: m["evidence"] for m in evaluate(call, parse_rules(CUSTOM))}
    assert list(found) == ["angry customer", "rage", "subscription cancel", "opened with swearing", "negative start",
                           "risky", "customer dominates", "no greeting", "hold or swearing"]
    assert [e["utterance_idx"] for e in found["angry customer"]] == [1, 3]
    assert [e["utterance_idx"] for e in found["negative start"]] == [3]  # -0.47; the first (-0.18) is not enough
    assert found["subscription cancel"][0]["text"] == "cancel my subscription"
    assert found["no greeting"] == []
    assert found["customer dominates"][0]["speaker"] == "customer"
    assert found["hold or swearing"][0]["text"] == "joke"


def test_bad_rules_are_refused_with_the_place_and_the_key():
    from emotivoice.analysis.insight.rules import RulesError, load_rules, parse_rules

    cases = {
        '[[category]]\nname = "x"\n[[category.condition]]\nphrase = ["a"]': "category 'x' condition 1: unknown key",
        '[[category]]\nname = "x"\n[[category.condition]]\nmin_count = "2"': "min_count: expected int",
        '[[category]]\nname = "x"\n[[category.condition]]\nmetric = "silence"\nabove = 1': "unknown metric",
        '[[category]]\nname = "x"\n[[category.condition]]\nemotion = "rage"': "emotion: one of anger",
        '[[category]]\nname = "x"\n[[category.condition]]\nmetric = "overlap_s"': "needs above or below",
        '[[category]]\nname = "x"': "needs at least one",
        '[[rule]]\nname = "x"': "unknown table 'rule'",
        '[[category]\nname = "x"': "not valid TOML",
    }
    for text, message in cases.items():
        with pytest.raises(RulesError, match=message):
            parse_rules(text, "mine.toml")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules("/nonexistent/rules.toml")


def test_an_alert_rule_raises_an_alert_that_is_stored_and_the_rules_file_is_configurable(tmp_path):
    from emotivoice.config import load_settings

    path = tmp_path / "rules.toml"
    path.write_text('[[category]]\nname = "billing"\nalert = true\n[[category.condition]]\nphrases = ["bill*"]\n')
    settings = load_settings(env={"EMOTIVOICE_ANALYTICS_RULES_FILE": str(path)})
    call = annotate(rough_call(), settings.analytics)
    assert names(call.categories) == ["billing"]
    rule_alert = next(a for a in call.alerts if a.kind == "category:billing")
    assert (rule_alert.speaker, rule_alert.utterance_idx) == ("customer", 1)
    assert [m["kind"] for m in call.summary["key_moments"]].count("category") == 1
    con = connect(tmp_path / "a.duckdb")
    save_call(con, to_record(call))
    row = run_read(con, "call_analytics", {"call_id": "c1"}).iloc[0]
    assert list(row.categories) == ["billing"] and json.loads(row.category_matches) == call.categories
    assert run_read(con, "call_alerts", {"call_id": "c1"}).kind.tolist().count("category:billing") == 1
    save_call(con, to_record(annotate(call, settings.analytics)))  # annotated again: still one such alert
    assert run_read(con, "call_alerts", {"call_id": "c1"}).kind.tolist().count("category:billing") == 1


def test_live_calls_raise_a_rule_alert_once_as_the_utterance_arrives(tmp_path, capsys):
    """The live engine's scoring step on a call fed utterance by utterance: the escalation-request
    rule raises its alert on the utterance that says it (published as an ALERT line), once."""
    import numpy as np

    from emotivoice.analysis.insight.stage import InsightState
    from emotivoice.analysis.live.call import LiveCall, LiveUtterance
    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.analysis.live.messages import CallStarted, LegInfo
    from emotivoice.config import load_settings
    from emotivoice.storage.store import FileStore

    settings = load_settings(env={"EMOTIVOICE_DATA_DIR": str(tmp_path)})
    engine = LiveEngine(settings, FileStore(tmp_path / "live.duckdb"), emotion_model=object())  # never asked
    started = CallStarted("live-1", "twilio", (LegInfo("inbound", "customer"), LegInfo("outbound", "agent")))
    template = angry_call_that_calms_down()
    result = CallResult("live-1", "twilio:test", 0.0, 2, "live", "asr", "emo", False, speakers=template.speakers)
    call = LiveCall(started, result, {}, InsightState())
    engine.calls["live-1"] = call
    published = []
    for uid, source in enumerate(template.utterances):
        u = utt(source.speaker, source.start, source.end, source.text, source.emotions)
        u.call_id = "live-1"
        item = LiveUtterance("live-1", uid, None, u.start, u.end, np.zeros(1, np.float32), 0.0)
        item.utterance, item.transcript = u, "done"
        call.utterances.append(item)
        engine._score(call)
        published.append([json.loads(line[6:]) for line in capsys.readouterr().out.splitlines()
                          if line.startswith("ALERT ")])
    rule = [(i, a) for i, alerts in enumerate(published) for a in alerts if a["kind"].startswith("category:")]
    assert rule == [(2, rule[0][1])]  # raised by the third utterance ("speak to a manager"), and only then
    assert rule[0][1]["kind"] == "category:escalation request" and rule[0][1]["speaker"] == "customer"
    assert "manager" in rule[0][1]["text"]
    snapshot = call.snapshot()
    assert "category:escalation request" in [a.kind for a in snapshot.alerts]
    assert names(snapshot.categories) == ["greeting", "identity check", "empathy statement", "escalation request"]
    assert snapshot.summary["reason"]["utterance_idx"] == 1 and len(snapshot.quarters) == 8
    engine.publisher.close()


# ---- end to end -------------------------------------------------------------------------------------

E2E_RULES = """
[[category]]
name = "alarm clock"
  [[category.condition]]
  speaker = "agent"
  phrases = ["alarm clock"]

[[category]]
name = "airplane full"
  [[category.condition]]
  speaker = "customer"
  near = ["*plane", "full"]
  within = 3

[[category]]
name = "agent says eleven"
  [[category.condition]]
  speaker = "agent"
  phrases = ["eleven|11"]

[[category]]
name = "customer says eleven"
alert = true
  [[category.condition]]
  speaker = "customer"
  phrases = ["eleven|11"]
  last_s = 25

[[category]]
name = "long hold"
  [[category.condition]]
  metric = "longest_silence_s"
  above = 20
"""


@pytest.mark.slow
def test_analyze_json_carries_quarters_summary_and_categories_and_stores_them(tmp_path):
    """`emotivoice analyze --json` on the assembled demo call, with a rules file from the config."""
    import duckdb

    from conftest import DEMO, DEMO_TRUTH, run_cli

    rules = tmp_path / "rules.toml"
    rules.write_text(E2E_RULES)
    db, js = tmp_path / "calls.duckdb", tmp_path / "calls.json"
    proc = run_cli("analyze", str(DEMO), "--db", str(db), "--json", str(js), "--quiet",
                   env={"EMOTIVOICE_ANALYTICS_RULES_FILE": str(rules)})
    assert proc.returncode == 0, proc.stderr
    call = json.loads(js.read_text())["calls"][0]
    turns = DEMO_TRUTH["turns"]
    assert len(call["utterances"]) == len(turns)
    assert [(q["speaker"], q["quarter"]) for q in call["quarters"]] == [
        (s, q) for s in ("agent", "customer") for q in (1, 2, 3, 4)]
    # 12 alternating turns over 44.7 s: each speaker speaks in every quarter
    assert all(q["utterances"] >= 1 and q["sentiment"] is not None and q["top_emotion"] for q in call["quarters"])
    assert sum(q["utterances"] for q in call["quarters"]) == len(turns)
    trend = call["customer_start_vs_end"]
    # calm words throughout, but the customer's voice goes from neutral to angry: worse, by the voice
    assert (trend["start_quarter"], trend["end_quarter"]) == (1, 4) and trend["trend"] == "worsened"
    assert trend["end_negative"] > trend["start_negative"] + 0.3
    summary = call["summary"]
    assert call["utterances"][summary["reason"]["utterance_idx"]]["speaker"] == "customer"
    assert [t["utterance_idx"] for t in summary["ending"]["last_turns"]] == [9, 10, 11]
    found = {m["category"]: m for m in call["categories"]}
    assert list(found) == ["alarm clock", "airplane full", "customer says eleven"]
    assert [e["utterance_idx"] for e in found["alarm clock"]["evidence"]] == [2]
    assert [e["utterance_idx"] for e in found["airplane full"]["evidence"]] == [3]
    eleven = found["customer says eleven"]["evidence"]
    assert [e["utterance_idx"] for e in eleven] == [7] and 25.0 < eleven[0]["start_s"] < 28.8  # the word itself
    assert "category:customer says eleven" in [a["kind"] for a in call["alerts"]]

    con = duckdb.connect(str(db), read_only=True)
    quarters, stored_summary, names_, matches, trend_ = con.execute(
        "SELECT quarters, summary, categories, category_matches, customer_trend FROM calls").fetchone()
    assert json.loads(quarters) == call["quarters"] and json.loads(stored_summary) == summary
    assert names_ == list(found) and json.loads(matches) == call["categories"] and trend_ == trend["trend"]
    assert con.execute("SELECT count(*) FROM alerts WHERE kind = 'category:customer says eleven'").fetchone()[0] == 1


@pytest.mark.slow
def test_rules_run_recategorises_stored_calls_from_what_is_stored(tmp_path):
    from emotivoice.analysis.insight.rulematch import evaluate
    from emotivoice.analysis.insight.rules import load_rules, parse_rules
    from emotivoice.analysis.recategorize import rerun_rules, stored_result
    from conftest import run_cli
    from emotivoice.storage.store import FileStore

    db = tmp_path / "a.duckdb"
    con = connect(db)
    original = annotate(rough_call())
    save_call(con, to_record(original))
    save_call(con, to_record(annotate(make_call(angry_call_that_calms_down().utterances, 80.0, call_id="c2"))))
    con.close()
    store = FileStore(db)
    again = stored_result(store, "c1")  # what the rules see of the stored call is what they saw of the original
    assert evaluate(again, load_rules()) == evaluate(original, load_rules()) == original.categories
    assert evaluate(again, parse_rules(CUSTOM)) == evaluate(original, parse_rules(CUSTOM))

    rules = tmp_path / "rules.toml"
    rules.write_text('[[category]]\nname = "billing"\n[[category.condition]]\nphrases = ["bill*", "charged"]\n')
    changes = rerun_rules(store, load_rules(rules), ["c1"])
    assert changes == [{"call_id": "c1", "before": names(original.categories), "after": ["billing"]}]
    row = store.read("call_analytics", call_id="c1").iloc[0]
    assert list(row.categories) == ["billing"]
    assert json.loads(row.category_matches)[0]["evidence"][0]["text"] == "billing"  # "Acme billing", the first
    assert [m["kind"] for m in json.loads(row.summary)["key_moments"]].count("category") == 1
    untouched = store.read("call_analytics", call_id="c2").iloc[0]
    assert "escalation request" in list(untouched.categories)

    proc = run_cli("rules", "run", str(rules), "--db", str(db))  # every call, from the shell
    assert proc.returncode == 0, proc.stderr
    assert "c2: greeting, identity check, empathy statement, escalation request -> billing" in proc.stdout
    assert "2 call(s) re-categorised, 1 changed" in proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[category]]\nname = "x"\n[[category.condition]]\nphrase = ["a"]\n')
    proc = run_cli("rules", "check", str(bad))
    assert proc.returncode == 2 and "category 'x' condition 1: unknown key 'phrase'" in proc.stderr
