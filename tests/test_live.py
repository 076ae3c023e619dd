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

from emotivoice.analysis.audio import load_audio, to_8k_pcm16
from emotivoice.analysis.live.endpoint import Endpointer
from emotivoice.analysis.live.engine import LiveEngine
from emotivoice.analysis.live.recorder import CallRecorder, apply_retention
from emotivoice.analysis.live.replay import replay
from emotivoice.analysis.vad import CHUNK, windowed_probabilities
from emotivoice.config import LiveConfig, SegmentationConfig
from emotivoice.app.serve import batch_finalizer
from emotivoice.storage.db import StorageError
from emotivoice.storage.files import UnsafePath
from emotivoice.storage.server import StoreServer
from tests.conftest import DEMO, DEMO_TRUTH

RATE = 8000


@pytest.fixture(scope="module")
def demo_legs() -> dict[str, np.ndarray]:
    """The demo call's two channels as 8 kHz int16 legs, as a SIP connector delivers them."""
    audio = load_audio(DEMO, 2)
    return {role: to_8k_pcm16(audio[i]) for i, role in enumerate(DEMO_TRUTH["channels"])}


@pytest.fixture
def umask_022():
    """The usual umask of whoever starts the service: what it writes must be owner-only regardless."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def speech_core(clip: np.ndarray) -> np.ndarray:
    """A clip of the endpointer's cut to its voiced part: from its first chunk at or above the VAD's
    threshold to its last at or above the release threshold.

    Each clip ends with the soft ending the endpointer kept (about 0.4 s of it since the VAD judges
    in fresh windows), so clips joined as they are hold real pauses over the 0.4 s endpoint and are
    rightly cut there; joined cores are one stretch of speech with 0.15 s breaths.
    """
    vad = SegmentationConfig()
    p = windowed_probabilities(clip.astype(np.float32) / 32768.0, RATE, vad.vad_window_s, vad.vad_warmup_s)
    chunk = CHUNK[RATE]
    first = int(np.flatnonzero(p >= vad.vad_threshold)[0])
    last = int(np.flatnonzero(p >= vad.vad_neg_threshold)[-1]) + 1
    return clip[first * chunk:last * chunk]


def cut_turns(leg: np.ndarray) -> list:
    """The leg's finished utterances as an endpointer with a 0.2 s pre-roll cuts them: the clips
    speech_core's fresh-window VAD was fitted to (with the live default's 0.3 s it finds a
    pause inside one of the demo's cores, and the joined "long turn" is no longer one)."""
    endpointer = Endpointer(RATE, pre_roll_s=0.2)
    return [s for s in endpointer.feed(leg) + endpointer.flush() if s.final]


def long_turn(clips: list[np.ndarray]) -> np.ndarray:
    """Several turns' speech said as one: their cores with 0.15 s pauses between them."""
    gap = np.zeros(int(0.15 * RATE), np.int16)
    return np.concatenate([np.concatenate([speech_core(c), gap]) for c in clips])


def live_settings(settings, tmp_path, **live):
    return replace(settings, db_path=tmp_path / "live.duckdb",
                   live=replace(settings.live, audio_dir=tmp_path / "calls", **live))


@pytest.mark.slow
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
    for speech, turn in zip(finals, turns):  # inside the turn (CREMA-D clips carry some silence), with the pre-roll
        assert turn["start"] - LiveConfig.pre_roll_s <= speech.start < speech.end <= turn["end"] + 0.3
    # a long stretch of speech (four turns' speech with short pauses) gets rolling updates before its end
    long_speech = long_turn([s.clip for s in cut_turns(customer)[:4]])
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
        self._maybe_fail()
        super().save_call(record)

    def save_deltas(self, deltas):  # the live writer's saves
        self._maybe_fail()
        super().save_deltas(deltas)

    def _maybe_fail(self):
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("could not store call: No space left on device")


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


@pytest.mark.slow
def test_calls_without_sound_are_not_stored_and_a_foreign_call_id_gets_no_recording(settings, tmp_path, demo_legs,
                                                                                   umask_022):
    """No media: nothing stored (no row, no WAV, no partial), counted. A call id that is not ours
    (here one that climbs out of the data dir) is analysed and stored without a recording."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "victim.json").write_text("keep me")
    s = live_settings(settings, tmp_path, finalize="none", transcribe=False)
    store = StoreServer(s.db_path).start()
    engine = LiveEngine(s, store).start()
    roles = {"agent": "agent", "customer": "customer"}
    speech = {k: v[: 4 * RATE] for k, v in demo_legs.items()}
    replay(engine.inbox, "empty", {"agent": np.zeros(0, np.int16), "customer": np.zeros(0, np.int16)}, RATE,
           roles=roles)
    replay(engine.inbox, "silent", {k: np.zeros(2 * RATE, np.int16) for k in roles}, RATE, roles=roles, speed=0)
    replay(engine.inbox, "../../victim/victim", speech, RATE, roles=roles, speed=0)
    replay(engine.inbox, "good-1", speech, RATE, roles=roles, speed=0)
    engine.stop(wait_s=60)
    rows = dict(store.con.execute("SELECT call_id, status FROM calls").fetchall())
    warnings = store.con.execute("SELECT warnings FROM calls WHERE call_id = '../../victim/victim'").fetchone()
    store.close()
    assert rows == {"../../victim/victim": "complete", "good-1": "complete"}  # the silent two left no row
    assert engine.counters["calls_without_media"] == 2
    assert any("not one this service made" in w for w in warnings[0])
    assert sorted(p.name for p in victim.iterdir()) == ["victim.json"]
    assert (victim / "victim.json").read_text() == "keep me"
    kept = sorted((tmp_path / "calls").rglob("*"))
    names = [p.name for p in kept if p.is_file()]
    assert sorted(names) == ["good-1.json", "good-1.wav"], names  # nothing for the silent calls, no partials left
    for path in kept:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    assert (tmp_path / "calls").stat().st_mode & 0o777 == 0o700


def test_recorder_refuses_a_foreign_call_id_and_never_follows_a_planted_symlink(tmp_path):
    audio_dir, victim = tmp_path / "calls", tmp_path / "victim"
    victim.mkdir()
    for bad in ("../victim/x", "/tmp/x", "a/b", "", "..", "-rf", "x" * 65, "ca\u0000ll"):
        with pytest.raises(UnsafePath):
            CallRecorder(audio_dir, bad, ["agent"], RATE)
    assert list(victim.iterdir()) == []
    # a local user plants a symlink where the next call's leg and WAV would go: not followed
    target = victim / "target"
    target.write_bytes(b"precious")
    (audio_dir / ".partial").mkdir(parents=True)
    (audio_dir / ".partial" / "call-1.0.raw").symlink_to(target)
    recorder = CallRecorder(audio_dir, "call-1", ["agent"], RATE)
    assert recorder.error and recorder.finish({}) is None
    assert target.read_bytes() == b"precious"
    recorder = CallRecorder(audio_dir, "call-2", ["agent"], RATE)
    recorder.write("agent", b"\x01\x00" * 160)
    day = audio_dir / recorder.day
    day.mkdir(mode=0o700)
    (day / "call-2.wav").symlink_to(target)
    assert recorder.finish({}) is None and recorder.error
    assert target.read_bytes() == b"precious"


def test_retention_deletes_kept_audio_and_stale_partials_older_than_its_days(tmp_path):
    old_day, new_day, partial = tmp_path / "2026-01-01", tmp_path / "2026-11-25", tmp_path / ".partial"
    for day in (old_day, new_day):
        day.mkdir()
        (day / "c.wav").write_bytes(b"RIFF")
        (day / "c.json").write_text("{}")
    partial.mkdir()
    (partial / "crashed.0.raw").write_bytes(b"\x00\x00")  # a leg left by a crash a month ago
    (partial / "running.0.raw").write_bytes(b"\x00\x00")  # a call in progress
    outside = tmp_path.parent / f"{tmp_path.name}-outside"  # a symlinked "day" that points elsewhere
    outside.mkdir()
    (outside / "x.wav").write_bytes(b"RIFF")
    (tmp_path / "2026-01-02").symlink_to(outside)
    month_ago = time.time() - 31 * 86400
    for f in [*old_day.iterdir(), partial / "crashed.0.raw", outside / "x.wav"]:
        os.utime(f, (month_ago, month_ago))
    assert apply_retention(tmp_path, days=30) == 3
    assert not old_day.exists() and (new_day / "c.wav").exists()
    assert sorted(p.name for p in partial.iterdir()) == ["running.0.raw"]
    assert (outside / "x.wav").exists()  # never followed out of the audio dir
    assert apply_retention(tmp_path, days=0) == 0  # 0 keeps everything


@pytest.mark.slow
def test_long_speech_is_stored_as_rolling_updates_then_replaced_by_the_finished_utterance(settings, tmp_path,
                                                                                        demo_legs):
    customer = demo_legs["customer"]
    speech = [s.clip for s in cut_turns(customer)][:5]
    legs = {"customer": np.concatenate([np.zeros(RATE, np.int16), long_turn(speech), np.zeros(2 * RATE, np.int16)])}
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
