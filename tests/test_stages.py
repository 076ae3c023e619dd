"""The per-utterance stages (analysis/stages/) and the live chain around them, with stub models.

Fast (no Whisper, no emotion encoder: a stub emotion model returns fixed probabilities, a stub
Whisper fixed words, a dead one raises), but otherwise real: the real endpointer (silero ONNX) on
the demo call's legs, the real recording front, a real DuckDB file behind the store service.
"""

from __future__ import annotations

import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio, to_8k_pcm16
from emotivoice.analysis.insight.prosody import measure as measure_prosody
from emotivoice.analysis.live.alerts import AlertPublisher
from emotivoice.analysis.live.call import new_call
from emotivoice.analysis.live.engine import LiveEngine
from emotivoice.analysis.live.endpoint import to_16k
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo
from emotivoice.analysis.live.replay import replay
from emotivoice.analysis.results import CallResult, Utterance
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.analysis.stages.insight import InsightStage
from emotivoice.analysis.stages.transcript import TranscriptStage, attach_words, shed_backlog, take_pass
from emotivoice.analysis.transcription import Word
from emotivoice.config import load_settings
from emotivoice.storage.server import StoreServer
from tests.conftest import DEMO, DEMO_TRUTH

RATE = 8000
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
ROLES = {"agent": "agent", "customer": "customer"}


def probs_for(label: str, weight: float = 0.8) -> dict[str, float]:
    rest = (1 - weight) / (len(LABELS) - 1)
    return {k: weight if k == label else rest for k in LABELS}


class StubEmotion:
    name, provisional = "stub-emotion", True

    def __init__(self, label: str = "neutral"):
        self.label, self.calls = label, 0

    def predict(self, clips):
        self.calls += 1
        return [probs_for(self.label) for _ in clips]


class DeadEmotion(StubEmotion):
    def predict(self, clips):
        raise RuntimeError("emotion model is dead")


class StubWhisper:
    """A word every 0.5 s of the audio it is given (as Whisper would time them), `delay_s` per pass."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.passes = delay_s, 0

    def transcribe(self, samples, language=None, beam_size=1, initial_prompt=None):
        self.passes += 1
        time.sleep(self.delay_s)
        duration = len(samples) / 16000
        words = [SimpleNamespace(word=f" {w}", start=float(t), end=float(t) + 0.3, probability=0.9)
                 for w, t in zip(_vocabulary(), np.arange(0.1, max(duration - 0.3, 0.1), 0.5))]
        segment = SimpleNamespace(words=words, text="".join(w.word for w in words), no_speech_prob=0.0,
                                  avg_logprob=-0.1)
        return [segment], SimpleNamespace(language="en", language_probability=0.99)


class DeadWhisper(StubWhisper):
    def transcribe(self, samples, language=None, beam_size=1, initial_prompt=None):
        raise RuntimeError("whisper is dead")


def _vocabulary():
    base = "please check my account balance today because the last invoice looked wrong again".split()
    k = 0
    while True:
        yield f"{base[k % len(base)]}{k // len(base) or ''}"
        k += 1


@pytest.fixture(scope="module")
def demo_legs() -> dict[str, np.ndarray]:
    audio = load_audio(DEMO, 2)
    return {role: to_8k_pcm16(audio[i]) for i, role in enumerate(DEMO_TRUTH["channels"])}


def stub_settings(tmp_path, **live):
    s = load_settings(env={"EMOTIVOICE_DATA_DIR": str(tmp_path)})
    return replace(s, db_path=tmp_path / "live.duckdb", redaction=replace(s.redaction, live=False),
                   live=replace(s.live, audio_dir=tmp_path / "calls", finalize="none", keep_audio=True, **live))


class Running:
    """A started engine on a real store; stopped (every call finalised) on exit."""

    def __init__(self, tmp_path, emotion=None, whisper=None, **live):
        self.settings = stub_settings(tmp_path, **live)
        self.store = StoreServer(self.settings.db_path).start()
        self.engine = LiveEngine(self.settings, self.store, emotion_model=emotion or StubEmotion(),
                                 transcriber=whisper or StubWhisper(), publisher=AlertPublisher(stdout=False))

    def __enter__(self) -> Running:
        self.engine.start()
        return self

    def __exit__(self, *exc) -> None:
        self.engine.stop(wait_s=30)
        self.store.close()

    def stop(self) -> None:
        self.engine.stop(wait_s=30)

    def threads_alive(self) -> bool:
        return all(t.is_alive() for t in self.engine._threads)

    def call(self, call_id: str) -> tuple:
        sql = "SELECT status, warnings FROM calls WHERE call_id = ?"
        return self.store.con.cursor().execute(sql, [call_id]).fetchone()

    def utterances(self, call_id: str):
        return self.store.read("call_utterances", call_id=call_id)


def wait_for(cond, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def kept_wav(tmp_path, call_id: str) -> bool:
    return any((tmp_path / "calls").rglob(f"{call_id}.wav"))


# ---- each stage's contract --------------------------------------------------------------------------

def test_emotion_stage_builds_the_utterance_with_tiers_prosody_and_the_calls_profile(tmp_path):
    settings = stub_settings(tmp_path)
    stage = EmotionStage(settings, StubEmotion("anger"))
    result = CallResult("c", "test", 0.0, 2, "", "", stage.name, stage.provisional)
    clip = (0.1 * np.sin(np.arange(16000) * 2 * np.pi * 180 / 16000)).astype(np.float32)
    probs = stage.recalibrate(stage.predict([clip, clip]), result, team=None)
    assert probs == [probs_for("anger")] * 2  # no calibration file: the identity
    picked = result.calibration
    assert picked is not None and "profile" in picked
    stage.recalibrate([probs[0]], result, team="another", language="de")
    assert result.calibration is picked  # one profile for the whole call, picked once
    u = stage.utterance("c", 1, "customer", 2.0, 3.0, clip, probs[0], partial=True)
    assert (u.call_id, u.leg, u.speaker, u.start, u.end, u.partial) == ("c", 1, "customer", 2.0, 3.0, True)
    assert u.top_emotion[0] == "anger" and u.granular and u.prosody is not None and u.prosody.rate_wps == 0
    assert u.loudness_dbfs < -15
    batch = stage.utterance("c", 0, "agent", 0.0, 1.0, clip, probs[0], words=[Word(" hi", 0.1, 0.3, 0.9)] * 3)
    assert batch.prosody.rate_wps == pytest.approx(3.0)  # batch: the words came first
    assert stage.utterance("c", 0, "agent", 0.0, 1.0, clip, {}).prosody is None  # a failed model: no prosody


def test_transcript_stage_words_language_rate_and_the_live_pass_and_shedding_rules(tmp_path):
    stage = TranscriptStage(stub_settings(tmp_path), StubWhisper(), live=True)
    clips = [np.random.default_rng(i).normal(0, 0.1, 32000).astype(np.float32) for i in range(2)]
    transcript = stage.transcribe(clips, [5.0, 20.0], groups=[("c", "agent"), ("c", "customer")])
    assert transcript.language == "en" and all(transcript.words)
    for words, start in zip(transcript.words, (5.0, 20.0)):
        assert all(start <= w.start <= w.end <= start + 2.0 for w in words)  # clamped to its clip
    u = Utterance("c", 0, "agent", 5.0, 7.0, -20.0, prosody=measure_prosody(clips[0], -20.0, 0))
    attach_words(u, transcript.words[0], "en")
    assert u.text.startswith("please") and u.prosody.rate_wps == pytest.approx(len(u.words) / 2.0)
    queue = [SimpleNamespace(s=s) for s in (8.0, 8.0, 8.0, 3.0)]
    assert [i.s for i in take_pass(queue, lambda i: i.s, 20.0)] == [8.0, 8.0]  # the third would pass 20 s
    assert [i.s for i in take_pass([SimpleNamespace(s=25.0)], lambda i: i.s, 20.0)] == [25.0]  # never none
    assert [i.s for i in shed_backlog(queue, lambda i: i.s, 5.0)] == [8.0] and [i.s for i in queue] == [3.0]


def demo_utterances(demo_legs) -> list[Utterance]:
    """The demo call's turns as utterances: the script's words and emotions (what the models would
    say, fixed so the test sees the stage, not model noise), prosody measured on the real audio."""
    out = []
    for t in DEMO_TRUTH["turns"]:
        leg = DEMO_TRUTH["channels"].index(t["speaker"])
        clip = to_16k(demo_legs[t["speaker"]][int(t["start"] * RATE):int(t["end"] * RATE)], RATE)
        said = t["text"].split()
        step = (t["end"] - t["start"]) / len(said)
        words = [Word(f" {w}", t["start"] + k * step, t["start"] + (k + 0.8) * step, 0.9) for k, w in enumerate(said)]
        weight = 0.9 if t["emotion"] == "anger" else 0.6
        u = EmotionStage(load_settings(env={}), StubEmotion()).utterance(
            "demo", leg, t["speaker"], t["start"], t["end"], clip, probs_for(t["emotion"], weight), words)
        u.words, u.text, u.language = words, t["text"], "en"
        out.append(u)
    return out


def test_parity_live_incremental_insight_equals_batch_utterance_for_utterance(demo_legs):
    """The demo call's utterances through the batch insight (whole call) and the live one (each
    call scored as transcripts arrive, out of order): the same sarcasm flags, risk curve and
    alerts. Both get the same utterances, so this tests the shared stage, not VAD differences."""
    settings = load_settings(env={})
    insight = InsightStage(settings, rules=False)  # batch judges the rules in annotate, on the whole call
    batch = demo_utterances(demo_legs)
    batch_alerts = insight.whole_call(batch)

    started = CallStarted("demo", "replay", tuple(LegInfo(r, r, r, RATE) for r in DEMO_TRUTH["channels"]))
    call = new_call(started, settings, "stub", True, endpointers=False)
    live = demo_utterances(demo_legs)
    items = []
    for u in live:  # emotions in, transcripts still pending
        item = call.new_utterance(call.legs[u.speaker], u.start, u.end, np.zeros(1, np.float32), 0.0, True)
        item.utterance = replace(u, words=[], text="")
        items.append((item, u))
    published = []
    order = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10]  # transcripts finish out of order
    for k in order:
        item, u = items[k]
        attach_words(item.utterance, u.words, "en", text=u.text)
        item.transcript = "done"
        published += insight.score(call)
    scored = [item.utterance for item, _ in items]
    assert all(item.scored for item, _ in items)
    assert [u.sarcasm.is_sarcastic for u in scored] == [u.sarcasm.is_sarcastic for u in batch]
    assert [u.sarcasm.confidence for u in scored] == [u.sarcasm.confidence for u in batch]
    assert [u.risk for u in scored] == [u.risk for u in batch]
    assert [(a.kind, a.utterance_idx, a.t_s, a.score) for a in call.insight.alerts] == \
        [(a.kind, a.utterance_idx, a.t_s, a.score) for a in batch_alerts]
    assert batch_alerts, "the angry customer's turns should raise an escalation alert"
    assert len(published) == len(batch_alerts) and published[0][1]["call_id"] == "demo"
    assert max(u.risk.score for u in batch) > min(u.risk.score for u in batch)  # a curve, not a constant


# ---- the live chain with stub models ---------------------------------------------------------------

def test_the_chain_stores_emotions_and_transcripts_of_a_call(tmp_path, demo_legs):
    legs = {k: v[:14 * RATE] for k, v in demo_legs.items()}
    with Running(tmp_path) as run:
        replay(run.engine.inbox, "ok-1", legs, RATE, roles=ROLES, speed=0)
        run.stop()
        rows = run.utterances("ok-1")
        assert run.call("ok-1")[0] == "complete"
        stats = run.engine.stats()
    assert len(rows) >= 4 and set(rows.speaker) == {"agent", "customer"}
    assert rows.base_emotion.eq("neutral").all() and rows.text.str.len().gt(0).all()
    assert stats["emotion_batches"] >= 1 and stats["transcript_batches"] >= 1 and stats["insight_batches"] >= 1
    assert stats["emotion_queue"] == 0 and not any(k.endswith(("_error", "_failure")) for k in stats)
    assert all(lat["transcript"] == "done" for lat in run.engine.latencies)
    assert kept_wav(tmp_path, "ok-1")


def test_a_stored_transcripts_latency_is_broken_down_by_stage_and_each_pass_is_noted(tmp_path, demo_legs):
    """benchmarks/live.py explains the transcript tail from these: queue, pass, insight, writer."""
    legs = {k: v[:14 * RATE] for k, v in demo_legs.items()}
    with Running(tmp_path, whisper=StubWhisper(delay_s=0.3)) as run:
        replay(run.engine.inbox, "parts", legs, RATE, roles=ROLES, speed=0)
        run.stop()
        stats = run.engine.stats()
        passes = list(run.engine.transcript_step.passes)
    done = [lat for lat in run.engine.latencies if lat["transcript"] == "done"]
    assert done and len(passes) == stats["transcript_batches"]
    assert sum(p["utterances"] for p in passes) == len(done)
    assert all(p["whisper_s"] >= 0.3 and p["audio_s"] > 0 and p["lock_wait_s"] >= 0 for p in passes)
    for lat in done:
        parts = [lat[k] for k in ("transcript_queue_s", "transcript_pass_s", "transcript_insight_s",
                                  "transcript_writer_s")]
        assert all(x is not None and x >= 0 for x in parts), lat
        assert lat["transcript_pass_s"] >= 0.3  # the stub's time per pass is in it
        assert lat["transcript_queue_s"] + lat["transcript_pass_s"] <= lat["transcript_s"]
    assert stats["writer_batches"] >= 1 and stats["writer_save_ms"] >= 0


def test_transcripts_are_shed_first_under_a_slow_transcriber_and_emotions_never(tmp_path, demo_legs):
    legs = {k: v[:26 * RATE] for k, v in demo_legs.items()}
    with Running(tmp_path, whisper=StubWhisper(delay_s=0.4), transcript_backlog_s=2.0,
                 transcribe_batch_s=2.0) as run:
        replay(run.engine.inbox, "busy", legs, RATE, roles=ROLES, speed=0)
        run.stop()
        rows = run.utterances("busy")
        status, warnings = run.call("busy")
        stats = run.engine.stats()
    assert stats["transcripts_shed"] >= 1, stats
    assert status == "complete" and any("transcripts deferred to the final pass" in w for w in warnings)
    assert rows.base_emotion.eq("neutral").all() and len(rows) >= 7  # every utterance kept its emotions
    assert rows.text.str.len().eq(0).sum() == stats["transcripts_shed"]  # the shed ones, and only those
    shed = [lat for lat in run.engine.latencies if lat["transcript"] == "shed"]
    assert len(shed) == stats["transcripts_shed"] and all(lat["emotion_s"] is not None for lat in shed)


def test_a_dead_emotion_model_is_reported_and_the_call_is_stored_with_its_recording(tmp_path, demo_legs):
    legs = {k: v[:10 * RATE] for k, v in demo_legs.items()}
    with Running(tmp_path, emotion=DeadEmotion()) as run:
        replay(run.engine.inbox, "no-emo", legs, RATE, roles=ROLES, speed=0)
        assert wait_for(lambda: run.engine.stats().get("emotion_failures", 0) >= 1)
        stats = run.engine.stats()
        assert "emotion model is dead" in stats["emotion_failure"] and run.threads_alive()
        run.stop()
        rows = run.utterances("no-emo")
        assert run.call("no-emo")[0] == "complete"
    assert len(rows) >= 2 and rows.base_emotion.fillna("").eq("").all() and rows.text.str.len().gt(0).all()
    assert kept_wav(tmp_path, "no-emo")  # the final pass (or a person) can redo it from the recording


def test_a_dead_transcriber_is_reported_and_nothing_stored_is_lost(tmp_path, demo_legs):
    legs = {k: v[:10 * RATE] for k, v in demo_legs.items()}
    with Running(tmp_path, whisper=DeadWhisper()) as run:
        replay(run.engine.inbox, "no-asr", legs, RATE, roles=ROLES, speed=0)
        assert wait_for(lambda: run.engine.stats().get("transcript_failures", 0) >= 1)
        assert wait_for(lambda: len(run.utterances("no-asr")) >= 2)
        before = run.utterances("no-asr")
        stats = run.engine.stats()
        assert "whisper is dead" in stats["transcript_failure"] and run.threads_alive()
        run.stop()
        after = run.utterances("no-asr")
        assert run.call("no-asr")[0] == "complete"
    assert len(after) >= len(before) and after.base_emotion.eq("neutral").all()
    assert set(before.start_s) <= set(after.start_s)  # what was stored while it ran is still there
    assert after.text.str.len().eq(0).all()
    assert kept_wav(tmp_path, "no-asr")


def frames(leg: np.ndarray, name: str, call_id: str, skip: range = range(0)) -> list[Frame]:
    step = RATE // 50
    return [Frame(call_id, name, i, leg[i * step:(i + 1) * step].astype("<i2").tobytes())
            for i in range(len(leg) // step) if i not in skip]


def send(engine: LiveEngine, call_id: str, leg: np.ndarray, skip: range = range(0)) -> None:
    engine.inbox.start(CallStarted(call_id, "test", (LegInfo("customer", "customer", "customer", RATE),)))
    for frame in frames(leg, "customer", call_id, skip):
        engine.inbox.push(frame)
    engine.inbox.end(CallEnded(call_id))


def test_frame_number_gaps_are_filled_with_silence_keeping_leg_time(tmp_path, demo_legs):
    customer = demo_legs["customer"][:14 * RATE]
    with Running(tmp_path, transcribe=False) as run:
        send(run.engine, "whole", customer)
        send(run.engine, "gappy", customer, skip=range(50, 60))  # 1.0-1.2 s: the customer is silent there
        run.stop()
        whole, gappy = run.utterances("whole"), run.utterances("gappy")
        _, warnings = run.call("gappy")
    assert len(whole) >= 2 and list(gappy.start_s) == list(whole.start_s) and list(gappy.end_s) == list(whole.end_s)
    assert any("10 frames (0.20 s) of leg audio never arrived" in w for w in warnings), warnings


def test_late_and_orphan_frames_are_counted_and_change_nothing(tmp_path, demo_legs):
    customer = demo_legs["customer"][:8 * RATE]
    with Running(tmp_path, transcribe=False) as run:
        engine = run.engine
        engine.inbox.push(Frame("nobody", "customer", 0, b"\x01\x00" * 160))  # a call never started
        engine.inbox.start(CallStarted("c-1", "test", (LegInfo("customer", "customer", "customer", RATE),)))
        sent = frames(customer, "customer", "c-1")
        for frame in sent[:100]:
            engine.inbox.push(frame)
        engine.inbox.push(sent[10])  # a repeat, out of order
        for frame in sent[100:]:
            engine.inbox.push(frame)
        engine.inbox.end(CallEnded("c-1"))
        assert wait_for(lambda: (run.call("c-1") or ("",))[0] == "complete")
        before = run.utterances("c-1")
        engine.inbox.push(Frame("c-1", "customer", len(sent), sent[-1].pcm))  # after its end
        assert wait_for(lambda: engine.stats().get("orphan_frames", 0)
                        + engine.inbox.stats().get("frames_after_end", 0) >= 2)
        stats = engine.stats()
        assert stats["late_frames"] == 1 and stats["orphan_frames"] >= 1 and run.threads_alive()
        run.stop()
        assert run.utterances("c-1").equals(before) and run.call("c-1")[0] == "complete"
        assert run.store.con.cursor().execute("SELECT count(*) FROM calls WHERE call_id = 'nobody'").fetchone()[0] == 0
