"""Crash recovery of `emotivoice serve` (issue 12, item 4), with real components throughout: the
real recorder's legs and manifest on disk, a real DuckDB file behind the real store service, and
end to end `emotivoice serve` in its own process taking a SIPREC call from Debian's sipp, killed
with SIGKILL mid-call and during the batch pass, then started again on the same data dir."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest

from emotivoice.analysis.live.recorder import FLUSH_S, CallRecorder, Manifest
from emotivoice.analysis.live.recovery import Recovery, clear_stale_announcement
from emotivoice.storage.db import CallRecord
from emotivoice.storage.files import new_call_id
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import FileStore, announcement, open_store

RATE = 8000


def tone(seconds: float, hz: float = 220.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def live_row(call_id: str, duration_s: float = 3.0) -> CallRecord:
    """A call as the live writer stores it while the call runs."""
    call = {"call_id": call_id, "source": "sip:127.0.0.1", "mode": "live", "status": "live",
            "duration_s": duration_s, "channels": 2, "warnings": []}
    speakers = [{"call_id": call_id, "speaker": role, "role": role, "leg": i}
                for i, role in enumerate(("agent", "customer"))]
    return CallRecord(call, speakers)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- the pieces, in process -----------------------------------------------------------------

def test_a_recording_leaves_flushed_legs_and_a_private_manifest_a_later_process_can_assemble(tmp_path):
    audio_dir = tmp_path / "calls"
    recorder = CallRecorder(audio_dir, "call-1", ["agent", "customer"], RATE)
    recorder.write_manifest(["agent", "customer"], {"agent_id": "a-1", "started_at": "2026-12-02 06:40:00",
                                                    "mode": "live"})
    partial = audio_dir / ".partial"
    manifest = Manifest.parse((partial / "call-1.json").read_text())
    assert manifest.legs == ("agent", "customer") and manifest.roles == ("agent", "customer")
    assert manifest.rate == RATE and manifest.metadata["agent_id"] == "a-1"
    assert (partial / "call-1.json").stat().st_mode & 0o777 == 0o600
    recorder.write("agent", tone(0.1))
    time.sleep(FLUSH_S)
    recorder.write("customer", tone(0.1))  # the flush is due: every leg reaches the OS, still open
    sizes = {p.name: p.stat().st_size for p in partial.glob("*.raw")}
    assert sizes == {"call-1.0.raw": 1600, "call-1.1.raw": 1600}, sizes
    # the process "dies" here; another one puts the legs together exactly as a hang-up would
    wav = CallRecorder.left_by_crash(audio_dir, manifest).finish({**manifest.metadata, "ended_at": "x"})
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, RATE, 800)
    assert json.loads(wav.with_suffix(".json").read_text())["agent_id"] == "a-1"
    assert list(partial.iterdir()) == []
    for bad in ('{"call_id": "../x", "day": "2026-12-02", "rate": 8000, "legs": ["a"], "roles": ["agent"]}',
                '{"call_id": "c", "day": "../..", "rate": 8000, "legs": ["a"], "roles": ["agent"]}',
                '{"call_id": "c", "day": "2026-12-02", "rate": "8000", "legs": ["a"], "roles": ["agent"]}', "[]"):
        with pytest.raises(ValueError):
            Manifest.parse(bad)


def test_a_kept_wav_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """finish() writes the WAV under a hidden temp name and renames it once whole: a reader never
    meets a half-written file (benchmarks/live.py once read a 45 s call's WAV 2 s in), and a write
    that fails leaves no WAV, no temp, and the legs to assemble it from later."""
    audio_dir = tmp_path / "calls"
    recorder = CallRecorder(audio_dir, "call-2", ["agent"], RATE)
    recorder.write_manifest(["agent"], {"mode": "live"})
    recorder.write("agent", tone(0.5))

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(wave.Wave_write, "writeframes", disk_full)
        assert recorder.finish({}) is None
    day = audio_dir / recorder.day
    assert not list(day.iterdir()), list(day.iterdir())  # neither the WAV nor its temp
    assert sorted(p.name for p in (audio_dir / ".partial").iterdir()) == ["call-2.0.raw", "call-2.json"]
    manifest = Manifest.parse((audio_dir / ".partial" / "call-2.json").read_text())
    wav = CallRecorder.left_by_crash(audio_dir, manifest).finish({})
    with wave.open(str(wav)) as w:
        assert w.getnframes() == RATE // 2
    assert sorted(p.name for p in day.iterdir()) == ["call-2.json", "call-2.wav"]
    assert wav.stat().st_mode & 0o777 == 0o600


def test_only_a_dead_services_announcement_is_removed(tmp_path):
    db = tmp_path / "x.duckdb"
    note = announcement(db)
    for pid, removed in ((dead_pid(), True), (os.getpid(), True), (os.getppid(), False)):
        note.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": pid, "token": "t"}))
        assert clear_stale_announcement(db) is removed
        assert note.exists() is not removed
    note.write_text("not json")
    assert clear_stale_announcement(db) and not note.exists()
    assert not clear_stale_announcement(db)


def test_survey_marks_what_a_dead_service_left_and_recovery_finishes_each_as_its_audio_allows(tmp_path, settings):
    """Without a batch pass (live.finalize = "none"): legs assembled and the live results kept."""
    audio_dir = tmp_path / "calls"
    cfg = replace(settings.live, audio_dir=audio_dir, finalize="none")
    partial = audio_dir / ".partial"
    cut, silent, no_audio, stray = (new_call_id("sip") for _ in range(4))
    recorder = CallRecorder(audio_dir, cut, ["agent", "customer"], RATE)  # died 2 s into its call
    recorder.write_manifest(["agent", "customer"], {"agent_id": "a-7", "mode": "live"})
    for _ in range(4):
        recorder.write("agent", tone(0.5))
        recorder.write("customer", tone(0.5, 330))
        time.sleep(FLUSH_S)
    recorder.write("agent", b"")  # the last flush
    quiet = CallRecorder(audio_dir, silent, ["agent"], RATE)  # never had sound, so never stored
    quiet.write_manifest(["agent"], {"mode": "live"})
    quiet.write("agent", bytes(16000))
    time.sleep(FLUSH_S)
    quiet.write("agent", b"")
    (partial / f"{stray}.0.raw").write_bytes(tone(1.0))  # no manifest: cannot be put together
    (partial / f".{stray}.json.1a2b3c4d.tmp").write_bytes(b"{")  # a manifest write cut short
    (partial / "notes.txt").write_text("not ours")
    day = audio_dir / recorder.day
    day.mkdir(parents=True, exist_ok=True)
    (day / f".{cut}.wav.0a1b2c3d.tmp").write_bytes(b"RIFF")  # its kept WAV, half-written at the kill
    (day / f".{no_audio}.wav.0a1b2c3d.tmp").write_bytes(b"RIFF")  # no legs to say so: left alone
    target = tmp_path / "precious"
    target.write_text("keep")
    (partial / "link.0.raw").symlink_to(target)
    db = tmp_path / "x.duckdb"
    for call_id in (cut, no_audio):
        FileStore(db).save_call(live_row(call_id))
    with StoreServer(db) as server:
        recovery = Recovery(cfg, server, finalizer=None)
        pending = recovery.survey()
        assert [i.call_id for i in pending] == [cut, silent]
        status = dict(server.con.execute("SELECT call_id, status FROM calls").fetchall())
        assert status == {cut: "interrupted", no_audio: "interrupted"}
        assert not (partial / f"{stray}.0.raw").exists() and not list(partial.glob(".*.tmp"))
        assert [p.name for p in day.glob(".*.tmp")] == [f".{no_audio}.wav.0a1b2c3d.tmp"]
        recovery.start().join(60)
        rows = {r[0]: r[1:] for r in server.con.execute(
            "SELECT call_id, status, warnings, source, ended_at FROM calls").fetchall()}
    state, warnings, source, ended_at = rows[cut]
    assert state == "complete" and ended_at is not None
    assert len(warnings) == 1 and warnings[0].startswith("interrupted: the service stopped 2.0 s into the call at ")
    assert warnings[0].endswith("; audio up to then kept")
    with wave.open(source) as w:
        assert w.getnchannels() == 2 and w.getnframes() == 2 * RATE
    assert json.loads(Path(source).with_suffix(".json").read_text())["agent_id"] == "a-7"
    state, warnings, source, _ = rows[no_audio]
    assert state == "interrupted" and "no call audio was kept" in warnings[0] and source == "sip:127.0.0.1"
    assert sorted(p.name for p in partial.iterdir()) == ["link.0.raw", "notes.txt"]  # not ours: left alone
    assert target.read_text() == "keep"
    assert len(list(audio_dir.glob("*/*.wav"))) == 1  # the silent legs made no WAV


# ---- end to end: emotivoice serve killed with SIGKILL ------------------------------------------

sipp = pytest.importorskip("emotivoice.connector.sipp")
needs_sipp = pytest.mark.skipif(not sipp.have_sipp() and not os.environ.get("CI"), reason="sipp not installed")


class Service:
    """`emotivoice serve` in its own process; its output is read as it comes (and kept)."""

    def __init__(self, port: int, env: dict):
        self.proc = subprocess.Popen([sys.executable, "-m", "emotivoice.app", "serve", "--sip-port", str(port),
                                      "--no-inbox"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for_line("live service:", 240)
        assert any(f"SIP listening on port {port}" in line for line in self.lines), self.output()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, start: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                found = [line for line in self.lines if line.startswith(start)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"no {start!r} line:\n{self.output()}"
                self._new.wait(min(left, 1.0))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, EMOTIVOICE_DATA_DIR=str(tmp_path / "data"), EMOTIVOICE_DASHBOARD_USERS="",
                EMOTIVOICE_CONFIG=str(tmp_path / "none.toml"), EMOTIVOICE_TRANSCRIPTION_MODEL="tiny.en")


def place_call(excerpt: Path, port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emotivoice.app", "place-call", str(excerpt),
                             "--to", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, text=True)


def calls_in(db: Path) -> dict:
    """The stored calls, read from the file itself (no service holds it)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0]: {"status": r[1], "warnings": r[2]} for r in
                con.execute("SELECT call_id, status, warnings FROM calls").fetchall()}
    finally:
        con.close()


@pytest.mark.slow
@needs_sipp
@pytest.mark.parametrize("media_path", ["native", "python"])
def test_serve_killed_mid_call_recovers_the_call_with_its_audio_up_to_the_kill(tmp_path, env, media_path):
    """Both SIP media paths: pjmedia's own WAV per leg (native: its header never written by the
    killed writer, read by size) and the Python port's raw legs."""
    from tests.test_serve import demo_excerpt, free_port

    env = {**env, "EMOTIVOICE_CONNECTOR_MEDIA_PATH": media_path}

    excerpt = demo_excerpt(tmp_path / "excerpt.wav", 60)  # longer than the test lets it run
    data, port = tmp_path / "data", free_port()
    db, partial = data / "emotivoice.duckdb", data / "calls" / ".partial"
    service, caller = Service(port, env), None
    try:
        caller = place_call(excerpt, port, env)
        store, call_id = open_store(db), None
        deadline = time.monotonic() + 120
        while call_id is None and time.monotonic() < deadline:
            calls = store.read("find_calls")
            if len(calls) and len(store.read("call_utterances", call_id=calls.call_id.iloc[0])) >= 3:
                call_id, started_at = calls.call_id.iloc[0], calls.started_at.iloc[0]
            time.sleep(0.3)
        assert call_id, "no live call with utterances appeared while sipp was calling"
        service.kill()
        killed_at = time.time()
    finally:
        if caller:
            caller.kill()
            caller.wait()
        service.stop()
    ran_s = killed_at - started_at.tz_localize("UTC").timestamp()
    old = json.loads(announcement(db).read_text())
    assert old["pid"] == service.proc.pid  # the kill left it behind
    assert calls_in(db)[call_id]["status"] == "live"
    native = media_path == "native"
    assert sorted(p.suffix for p in partial.iterdir()) == [".json", ".raw", ".raw"] + [".wav", ".wav"] * native
    for leg in partial.glob("*.wav"):  # pjmedia writes a WAV's sizes only when it closes it: here never
        head = leg.read_bytes()[:44]
        assert head[:4] == b"RIFF" and head[40:44] == bytes(4) and leg.stat().st_size > 44 + 16000
        assert leg.stat().st_mode & 0o777 == 0o600
    # what else a crash can leave: a live call with no audio kept, legs nobody can assemble
    no_audio, stray = new_call_id("sip"), new_call_id("sip")
    FileStore(db).save_call(live_row(no_audio))
    (partial / f"{stray}.0.raw").write_bytes(tone(1.0))

    again = Service(free_port(), env)
    try:
        assert f"live: recovering 1 call(s) a stopped service left unfinished: {call_id}" in again.output()
        note = json.loads(announcement(db).read_text())
        assert note["pid"] == again.proc.pid and note["url"] != old["url"]
        store = open_store(db)
        listed = store.read("list_calls").set_index("call_id")
        assert listed.loc[no_audio, "status"] == "interrupted"  # marked before the listeners opened
        assert listed.loc[call_id, "status"] in ("interrupted", "complete")
        assert again.wait_for_line(f"live: recovered {call_id}:", 240).strip().endswith(": complete")
        listed = store.read("list_calls").set_index("call_id")
        assert listed.loc[call_id, "status"] == "complete"
        assert listed.loc[call_id, "diarization"].startswith("channel-per-speaker")  # the batch pass's result
        source = store.read("call_source", call_id=call_id).source.iloc[0]
        assert list(partial.iterdir()) == []  # assembled, and the stray legs removed
    finally:
        again.stop()
    con = duckdb.connect(str(db), read_only=True)
    warnings, status = con.execute("SELECT warnings, status FROM calls WHERE call_id = ?", [call_id]).fetchone()
    utterances = con.execute("SELECT count(*) FROM utterances WHERE call_id = ?", [call_id]).fetchone()[0]
    no_audio_row = con.execute("SELECT status, warnings FROM calls WHERE call_id = ?", [no_audio]).fetchone()
    con.close()
    cut = [w for w in warnings if w.startswith("interrupted:")]
    assert status == "complete" and len(cut) == 1, warnings
    assert " s into the call at " in cut[0] and cut[0].endswith("; audio up to then analysed")
    assert utterances >= 1  # the batch pass segments the kept audio its own way (toward ~10 s)
    with wave.open(source) as w:
        kept_s = w.getnframes() / w.getframerate()
        assert w.getnchannels() == 2
    assert abs(kept_s - ran_s) <= 1.5, (kept_s, ran_s)
    assert float(cut[0].split(" s into")[0].rsplit(" ", 1)[1]) == pytest.approx(kept_s, abs=0.1)
    assert no_audio_row[0] == "interrupted" and "no call audio was kept" in no_audio_row[1][0]


def batch_child(parent: int) -> tuple[int, str] | None:
    """The `emotivoice analyze --call-id ID` child of `parent`, if one runs: (pid, call id)."""
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if b"analyze" in argv and b"--call-id" in argv:
            return int(entry.name), argv[argv.index(b"--call-id") + 1].decode()
    return None


@pytest.fixture
def subreaper():
    """Orphans of our children become ours, so how the batch pass ended can be read (waitpid)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        pytest.skip("cannot become a child subreaper")
    yield
    libc.prctl(36, 0, 0, 0, 0)


def exit_of(pid: int, timeout: float = 120.0) -> int:
    """The wait status of our (adopted) child `pid`; it is killed if it outlives `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@pytest.mark.slow
@needs_sipp
def test_serve_killed_during_the_batch_pass_reruns_it_at_the_next_start(tmp_path, env, subreaper):
    from tests.test_serve import demo_excerpt, free_port

    excerpt = demo_excerpt(tmp_path / "excerpt.wav", 8)
    db, port = tmp_path / "data" / "emotivoice.duckdb", free_port()
    service = Service(port, env)
    try:
        caller = place_call(excerpt, port, env)
        assert "calls answered: 1/1" in caller.communicate(timeout=90)[0]
        deadline, child = time.monotonic() + 120, None
        while child is None and time.monotonic() < deadline:  # hang-up -> the kept WAV -> the batch pass
            child = batch_child(service.proc.pid)
            time.sleep(0.05)
        assert child, f"no batch pass started:\n{service.output()}"
        service.kill()
    finally:
        service.stop()
    pid, call_id = child
    status = exit_of(pid)  # it died with the service (SIGKILL), not later on failing to store
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert calls_in(db)[call_id]["status"] == "live"  # the pass never stored it
    wav, = (tmp_path / "data" / "calls").glob(f"*/{call_id}.wav")

    again = Service(free_port(), env)
    try:
        assert again.wait_for_line(f"live: recovered {call_id}:", 240).strip().endswith(": complete")
    finally:
        again.stop()
    con = duckdb.connect(str(db), read_only=True)
    status, diarization, warnings, source = con.execute(
        "SELECT status, diarization, warnings, source FROM calls WHERE call_id = ?", [call_id]).fetchone()
    con.close()
    assert status == "complete" and diarization.startswith("channel-per-speaker")
    cut = [w for w in warnings if w.startswith("interrupted:")]
    assert len(cut) == 1 and "before the final batch pass finished" in cut[0], warnings
    assert cut[0].endswith("; the pass was re-run")
    assert source == str(wav.resolve()) and wav.is_file()
