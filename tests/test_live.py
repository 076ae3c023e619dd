"""The live path without a network peer: frames replayed into the real engine, real models, a
real DuckDB file, a real webhook endpoint on loopback. (tests/test_sip.py and
tests/test_media_forks.py drive the same path through real sockets.)"""

from __future__ import annotations

import json
import os
import threading
import time
import wave
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from analysis.audio import load_audio, to_8k_pcm16
from analysis.live.endpoint import Endpointer
from analysis.live.engine import LiveEngine
from analysis.live.recorder import apply_retention
from analysis.live.replay import replay
from emotivoice.serve import batch_finalizer
from storage.db import StorageError
from storage.server import StoreServer
from tests.conftest import DEMO, DEMO_TRUTH

RATE = 8000


@pytest.fixture(scope="module")
def demo_legs() -> dict[str, np.ndarray]:
    """The demo call's two channels as 8 kHz int16 legs, as a SIP connector delivers them."""
    audio = load_audio(DEMO, 2)
    return {role: to_8k_pcm16(audio[i]) for i, role in enumerate(DEMO_TRUTH["channels"])}


def live_settings(settings, tmp_path, **live):
    return replace(settings, db_path=tmp_path / "live.duckdb",
                   live=replace(settings.live, audio_dir=tmp_path / "calls", **live))


def test_endpointer_cuts_each_turn_and_sends_rolling_updates(demo_legs):
    customer = demo_legs["customer"]
    turns = [t for t in DEMO_TRUTH["turns"] if t["speaker"] == "customer"]
    endpointer = Endpointer(RATE)
    found = []
    for i in range(0, len(customer), 160):
        found += endpointer.feed(customer[i:i + 160])
    found += endpointer.flush()
    finals = [s for s in found if s.final]
    assert len(finals) == len(turns)
    for speech, turn in zip(finals, turns):  # inside the turn (CREMA-D clips carry some silence)
        assert turn["start"] - 0.2 <= speech.start < speech.end <= turn["end"] + 0.3
    # a long stretch of speech (four turns' speech with short pauses) gets rolling updates before its end
    pieces = [s.clip for s in finals[:4]]
    long_speech = np.concatenate([np.concatenate([p, np.zeros(int(0.15 * RATE), np.int16)]) for p in pieces])
    endpointer = Endpointer(RATE, rolling_update_s=2.5)
    events = []
    for i in range(0, len(long_speech), 160):
        events += endpointer.feed(long_speech[i:i + 160])
    events += endpointer.flush()
    assert len([e for e in events if not e.final]) >= 2
    assert events[-1].final and events[-1].end - events[-1].start > 5


class Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []
    attempts = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        type(self).attempts += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).attempts == 1:  # the endpoint is down once: the alert must be retried
            self.send_response(503)
        else:
            type(self).received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_live_call_is_stored_while_it_runs_alerts_go_out_and_the_batch_pass_supersedes(settings, tmp_path, demo_legs):
    webhook = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    s = live_settings(settings, tmp_path, webhook_url=f"http://127.0.0.1:{webhook.server_address[1]}/hook")
    store = StoreServer(s.db_path).start()  # as in `emotivoice serve`: the batch pass writes through it
    engine = LiveEngine(s, store, finalizer=batch_finalizer(s)).start()
    legs = {k: v[: 31 * RATE] for k, v in demo_legs.items()}  # up to the customer's angry "It's 11 o'clock!"
    seen_live = []

    def watch():
        while not seen_live:
            try:
                calls = store.read("live_calls")
            except StorageError:
                calls = None
            if calls is not None and len(calls) and calls.status[0] == "live" and calls.risk.notna()[0]:
                seen_live.append(store.read("call_utterances", call_id="live-1"))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    replay(engine.inbox, "live-1", legs, RATE, roles={"agent": "agent", "customer": "customer"}, speed=2.0,
           metadata={"agent_id": "agent-7", "customer_id": "cust-3"})
    watcher.join(30)
    engine.stop(wait_s=180)
    webhook.shutdown()
    store.close()
    store = StoreServer(s.db_path)  # reopened: what was stored is on disk

    assert seen_live, "the call never showed as live with a risk score while it ran"
    assert {"agent", "customer"} <= set(seen_live[0].speaker)
    # alerts: stored with the call, and pushed to the webhook after one failed attempt
    assert Webhook.attempts >= 2 and Webhook.received
    pushed = Webhook.received[0]
    assert pushed["call_id"] == "live-1" and pushed["role"] == "customer" and pushed["agent_id"] == "agent-7"
    assert pushed["score"] >= s.risk.alert_threshold and pushed["factors"]
    # every utterance was analysed live, within the engine's own timing record
    assert len(engine.latencies) >= 8
    assert all(lat["transcript"] == "done" and lat["emotion_s"] < lat["transcript_s"] for lat in engine.latencies)
    # finalised: the batch pass on the kept audio replaced the live rows; the call is complete
    call = store.read("list_calls").set_index("call_id").loc["live-1"]
    assert call["status"] == "complete" and call["mode"] == "live"
    stored = store.read("call_utterances", call_id="live-1")
    assert set(stored.speaker) == {"agent", "customer"}
    assert stored.text.str.len().gt(0).mean() >= 0.8  # the batch pass may keep a cut-off last turn wordless
    assert not stored.partial.any()
    wav_path = next((tmp_path / "calls").rglob("live-1.wav"))
    with wave.open(str(wav_path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, RATE)
        assert abs(w.getnframes() - 31 * RATE) < RATE
    sidecar = json.loads(wav_path.with_suffix(".json").read_text())
    assert sidecar["agent_id"] == "agent-7" and sidecar["mode"] == "live"
    alerts = store.read("call_alerts", call_id="live-1")
    assert (alerts.speaker == "customer").any()


class FlakyStore(StoreServer):
    """A disk that is full for the first writes (the error DuckDB reports), then has room again."""

    def __init__(self, path, failures: int):
        super().__init__(path)
        self.failures = failures

    def save_call(self, record):
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("could not store call: No space left on device")
        super().save_call(record)


@pytest.mark.slow
def test_a_full_inbox_drops_and_counts_frames_and_a_store_outage_loses_nothing(settings, tmp_path, demo_legs):
    s = live_settings(settings, tmp_path, max_queued_frames=40, finalize="none", keep_audio=False, transcribe=False)
    store = FlakyStore(s.db_path, failures=3)
    engine = LiveEngine(s, store).start()
    legs = {k: v[: 12 * RATE] for k, v in demo_legs.items()}
    dropped = replay(engine.inbox, "burst", legs, RATE, roles={"agent": "agent", "customer": "customer"}, speed=0)
    engine.stop(wait_s=60)
    assert dropped > 0, "sending 12 s in a burst into a 40-frame inbox should overflow it"
    call = store.read("list_calls").set_index("call_id").loc["burst"]
    assert call["status"] == "complete"
    row = store.con.execute("SELECT dropped_frames, warnings FROM calls WHERE call_id = 'burst'").fetchone()
    assert row[0] == dropped
    assert any("dropped" in w for w in row[1])
    assert store.failures == 0  # the writer retried through the outage and stored the call


def test_a_call_that_ends_before_any_audio_is_stored_complete_and_says_so(settings, tmp_path):
    s = live_settings(settings, tmp_path, finalize="none")
    store = StoreServer(s.db_path).start()
    engine = LiveEngine(s, store).start()
    replay(engine.inbox, "empty", {"agent": np.zeros(0, np.int16), "customer": np.zeros(0, np.int16)}, RATE,
           roles={"agent": "agent", "customer": "customer"})
    engine.stop(wait_s=30)
    status, warnings = store.con.execute("SELECT status, warnings FROM calls WHERE call_id = 'empty'").fetchone()
    store.close()
    assert status == "complete" and "no audio received from the source" in warnings
    assert not list((tmp_path / "calls").rglob("empty.wav"))  # nothing to keep


def test_retention_deletes_kept_audio_older_than_its_days(tmp_path):
    old_day, new_day = tmp_path / "2026-01-01", tmp_path / "2026-11-25"
    for day in (old_day, new_day):
        day.mkdir()
        (day / "c.wav").write_bytes(b"RIFF")
        (day / "c.json").write_text("{}")
    month_ago = time.time() - 31 * 86400
    for f in old_day.iterdir():
        os.utime(f, (month_ago, month_ago))
    assert apply_retention(tmp_path, days=30) == 2
    assert not old_day.exists() and (new_day / "c.wav").exists()
    assert apply_retention(tmp_path, days=0) == 0  # 0 keeps everything


@pytest.mark.slow
def test_long_speech_is_stored_as_rolling_updates_then_replaced_by_the_finished_utterance(settings, tmp_path,
                                                                                        demo_legs):
    customer = demo_legs["customer"]
    endpointer = Endpointer(RATE)
    speech = [s.clip for s in endpointer.feed(customer) + endpointer.flush()][:5]
    long_turn = np.concatenate([np.concatenate([c, np.zeros(int(0.15 * RATE), np.int16)]) for c in speech])
    legs = {"customer": np.concatenate([np.zeros(RATE, np.int16), long_turn, np.zeros(2 * RATE, np.int16)])}
    s = live_settings(settings, tmp_path, finalize="none", keep_audio=False)
    store = StoreServer(s.db_path).start()
    engine = LiveEngine(s, store).start()
    partial_seen = []

    def watch():
        while not partial_seen:
            try:
                rows = store.read("call_utterances", call_id="long")
            except StorageError:
                rows = None
            if rows is not None and len(rows) and rows.partial.any():
                partial_seen.append(rows)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    replay(engine.inbox, "long", legs, RATE, roles={"customer": "customer"}, speed=1.0)
    watcher.join(5)
    engine.stop(wait_s=60)
    final = store.read("call_utterances", call_id="long")
    store.close()
    assert partial_seen, "no rolling update was stored while the customer was still speaking"
    interim = partial_seen[0][partial_seen[0].partial]
    assert interim.base_emotion.notna().all()
    assert len(final) == 1 and not final.partial.any()
    assert final.end_s.iloc[0] - final.start_s.iloc[0] > interim.end_s.iloc[0] - interim.start_s.iloc[0]
