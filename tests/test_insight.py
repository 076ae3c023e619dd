"""Sentiment, sarcasm, roles and escalation risk: the rules on hand-made signals, then end to end."""

from __future__ import annotations

import json

import duckdb
import pytest

from emotivoice.analysis.insight.phrases import ESCALATION, matches
from emotivoice.analysis.insight.prosody import Baseline, Prosody
from emotivoice.analysis.insight.risk import RiskTracker
from emotivoice.analysis.insight.roles import guess_roles
from emotivoice.analysis.insight.sarcasm import check_sarcasm
from emotivoice.analysis.insight.sentiment import text_sentiment
from emotivoice.analysis.insight.stage import InsightState
from emotivoice.analysis.results import Utterance
from emotivoice.config import RiskConfig

CALM = {"neutral": 0.8, "happiness": 0.1, "anger": 0.05, "sadness": 0.05}
ANGRY = {"anger": 0.85, "disgust": 0.05, "neutral": 0.1}
HAPPY = {"happiness": 0.8, "neutral": 0.2}


def test_sentiment_handles_negation_and_contrast():
    assert text_sentiment("That's great.") > 0.5
    assert text_sentiment("That's not great.") < 0
    assert text_sentiment("The agent was nice, but the product is terrible.") < 0
    assert text_sentiment("") == 0.0


def test_positive_words_said_angrily_are_sarcasm_and_say_why():
    s = text_sentiment("Oh, that's just great.")
    flagged = check_sarcasm(s, ANGRY, {})
    assert flagged.is_sarcastic and flagged.confidence > 0.5
    assert "anger" in flagged.reason and "positive words" in flagged.reason
    assert not check_sarcasm(s, HAPPY, {}).is_sarcastic  # sincere
    assert not check_sarcasm(text_sentiment("This is unacceptable."), ANGRY, {}).is_sarcastic  # words agree


def test_contempt_prosody_tips_an_ambiguous_case():
    s = text_sentiment("Well, that's lovely.")
    mild = {"neutral": 0.55, "disgust": 0.3, "happiness": 0.15}
    plain = check_sarcasm(s, mild, {})
    flat = check_sarcasm(s, mild, {"pitch_range_st": -2.5, "pitch_st": -1.5, "rate_wps": -1.5})
    assert flat.confidence > plain.confidence
    assert "flat/low/slow" in flat.reason


def test_baseline_is_the_speakers_own_and_causal():
    b = Baseline()
    assert b.deviations(Prosody(30, 4, -30, 2.5)) == dict.fromkeys(b.mean, 0.0)  # nothing known yet
    for loud in (-30, -31, -29, -30):
        b.update(Prosody(30, 4, loud, 2.5))
    z = b.deviations(Prosody(30, 4, -18, 2.5))
    assert z["loudness_dbfs"] > 2 and abs(z["pitch_st"]) < 1e-9


def test_risk_rises_with_anger_and_alerts_once_with_hysteresis():
    tracker = RiskTracker("customer", RiskConfig())
    scores, alerts = [], []
    signals = [CALM] * 3 + [ANGRY] * 4 + [CALM] * 6 + [ANGRY] * 4
    for i, emotions in enumerate(signals):
        scored = tracker.update(emotions, 0.0, 0.0, 0, 0.0, [])
        scores.append(scored.score)
        if alert := tracker.alert(float(i), i, scored):
            alerts.append(alert)
    assert scores[2] < 0.3 < 0.55 < max(scores[3:7])
    assert [a.utterance_idx for a in alerts][0] in (3, 4)
    assert len(alerts) == 2  # re-armed only after the calm stretch brought it below 0.4
    assert "negative emotion" in alerts[0].factors


def test_escalation_phrase_is_a_named_factor():
    assert matches("I want to speak to your manager right now", ESCALATION)
    tracker = RiskTracker("customer")
    scored = tracker.update(CALM, 0.0, -0.4, 0, 0.0, matches("I'm going to cancel my account", ESCALATION))
    assert next(iter(scored.factors)).startswith("escalation phrase: cancel")


def test_sarcastic_utterance_counts_as_negative_in_the_risk():
    def risk_of(text: str) -> float:
        state = InsightState()
        u = Utterance("c", 1, "customer", 0.0, 2.0, -25.0, text=text, emotions=ANGRY)
        state.add(0, u)
        return u.risk.score
    assert risk_of("Oh great, wonderful, thanks so much.") > risk_of("It is eleven o'clock.")


def test_roles_from_cues_with_confidence():
    roles = guess_roles({"speaker_1": 0.4, "speaker_2": 3.0},
                        {"speaker_1": "Thank you for calling Acme, my name is Sam, how can I help?",
                         "speaker_2": "I'm calling about my bill, I was charged twice."},
                        {"speaker_1": 0.5, "speaker_2": 0.5})
    assert roles["speaker_1"].role == "agent" and roles["speaker_2"].role == "customer"
    assert roles["speaker_1"].confidence > 0.9 and "thank you for calling" in roles["speaker_1"].reason
    unsure = guess_roles({"a": 0.0, "b": 1.0}, {"a": "Hello.", "b": "Hello."}, {})
    assert 0.5 < unsure["a"].confidence < 0.85  # only "spoke first" tells them apart


@pytest.mark.slow
def test_demo_call_stores_sarcasm_risk_and_roles(demo_analysis):
    db, doc = demo_analysis
    call = doc["calls"][0]
    assert all(u["sarcasm"] is not None and 0 <= u["risk"]["score"] <= 1 for u in call["utterances"])
    assert {s["role_source"] for s in call["speakers"]} == {"channel"}
    customer = [u["risk"]["score"] for u in call["utterances"] if u["speaker"] == "customer"]
    assert customer[-1] > customer[0] + 0.2  # the demo customer ends angry
    con = duckdb.connect(str(db), read_only=True)
    try:
        n_utt = con.execute("SELECT count(*) FROM utterances").fetchone()[0]
        assert con.execute("SELECT count(*) FROM sarcasm").fetchone()[0] == n_utt
        assert con.execute("SELECT count(*) FROM risk_scores").fetchone()[0] == n_utt
        factors = con.execute("SELECT factors FROM risk_scores WHERE speaker = 'customer' "
                              "ORDER BY score DESC LIMIT 1").fetchone()[0]
        assert "negative emotion" in json.loads(factors)
        assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] == len(call["alerts"])
    finally:
        con.close()


@pytest.fixture(scope="module")
def assembled_calls(manifest, tmp_path_factory, settings):
    """An escalating and a calm call from two held-out CREMA-D actors, analysed for real."""
    from emotivoice.analysis.pipeline import CallAnalyzer
    from emotivoice.analysis.synth import Turn, assemble, write_audio

    def clip(actor: str, emotion: str, k: int = 0):
        found = [c for c in manifest if c.speaker == actor and c.emotion == emotion and "_IEO_" not in c.path.name]
        return found[k % len(found)]

    agent, customer = "cremad-1006", "cremad-1011"
    plans = {"escalating": ["neutral", "neutral", "anger", "anger", "disgust"],
             "calm": ["neutral", "happiness", "sadness", "neutral", "fear"]}
    analyzer = CallAnalyzer(settings)
    out = {}
    for name, customer_emotions in plans.items():
        turns = []
        for k, emotion in enumerate(customer_emotions):
            a = clip(agent, "neutral", k)
            c = clip(customer, emotion, k)
            turns += [Turn(0, a.path, "neutral", a.text), Turn(1, c.path, emotion, c.text)]
        audio, placed = assemble(turns)
        path = write_audio(audio, tmp_path_factory.mktemp(name) / f"{name}.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"])
        out[name] = (analyzer.analyze(path), placed)
    return out


@pytest.mark.slow
def test_escalating_call_alerts_after_the_customer_turns_and_calm_call_does_not(assembled_calls):
    escalating, placed = assembled_calls["escalating"]
    onset = [p for p in placed if p.leg == 1][2].start
    alerts = [a for a in escalating.alerts if a.speaker == "customer"]
    assert alerts and onset <= alerts[0].t_s <= onset + 10.0
    assert alerts[0].factors and len(alerts) == 1  # hysteresis: one episode, one alert
    calm, _ = assembled_calls["calm"]
    assert not calm.alerts
    peak = lambda r: max(u.risk.score for u in r.utterances if u.speaker == "customer")  # noqa: E731
    assert peak(escalating) > peak(calm) + 0.2


def test_agent_override_wins_and_a_wrong_label_is_reported():
    from emotivoice.analysis.insight.roles import assign_roles
    from emotivoice.analysis.results import CallResult, Speaker

    def call():
        r = CallResult("c", "x.wav", 10.0, 1, "diarized", "asr", "emo", False,
                       speakers=[Speaker("speaker_1", "unknown", 0), Speaker("speaker_2", "unknown", 0)])
        r.utterances = [Utterance("c", 0, "speaker_1", 0.0, 2.0, -20, text="Thank you for calling, how can I help?"),
                        Utterance("c", 0, "speaker_2", 2.5, 4.0, -20, text="My bill is wrong.")]
        return r
    guessed = call()
    assign_roles(guessed)
    assert [s.role for s in guessed.speakers] == ["agent", "customer"]
    forced = call()
    assign_roles(forced, agent="speaker_2")
    assert [(s.role, s.role_source, s.role_confidence) for s in forced.speakers] == [
        ("customer", "override", 1.0), ("agent", "override", 1.0)]
    wrong = call()
    assign_roles(wrong, agent="speaker_9")
    assert wrong.speakers[0].role == "agent" and "speaker_9" in wrong.warnings[0]
