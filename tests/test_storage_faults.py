"""Storage faults are survived (issue 12, item 3): the live engine on a real DuckDB file, real models.

The disk that fills mid-call is a real one where this runs as root: an 32 MB tmpfs mounted for
the test holds the DuckDB file, filled with a junk file mid-call and freed again by deleting it,
so DuckDB meets ENOSPC exactly as in production. Where no filesystem can be mounted (not root,
or a container without CAP_SYS_ADMIN) the same test runs with the fault injected instead: the
store's DuckDB connection raises duckdb.IOException ("No space left on device") at every COMMIT
while the "disk" is full. Either way: the call's earlier rows stay whole, the fault shows in
engine.stats() and the store's /health, the engine's threads stay alive, and once space returns
the call is stored complete without anyone's help.

A second test throws DuckDB exceptions of other classes (and exceptions the store does not turn
into StorageError) at the live and final saves: the writer and finaliser live on and the call
is stored in the end. No assertion is on time; every wait is bounded.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import wave
from dataclasses import replace

import duckdb
import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio, to_8k_pcm16
from emotivoice.analysis.live.engine import LiveEngine
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo
from emotivoice.storage.server import StoreServer
from tests.conftest import DEMO, DEMO_TRUTH

pytestmark = pytest.mark.slow

RATE = 8000
STEP = RATE // 50  # 20 ms frames


@pytest.fixture(scope="module")
def demo_legs() -> dict[str, np.ndarray]:
    audio = load_audio(DEMO, 2)
    return {role: to_8k_pcm16(audio[i]) for i, role in enumerate(DEMO_TRUTH["channels"])}


def wait_for(cond, timeout_s: float = 60.0, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every_s)
    return cond()


# -- a disk that fills: a real small filesystem, or injected at the connection --------------------

class FaultyConnection:
    """A real DuckDB connection whose COMMIT raises `faults` (exception instances, in turn) or,
    while `full` is set, the IOException a full disk gives."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con, self.full, self.faults = con, False, []

    def execute(self, sql, *args, **kwargs):
        if sql.strip().upper() == "COMMIT":
            if self.faults:
                raise self.faults.pop(0)
            if self.full:
                raise duckdb.IOException('Could not write file "live.duckdb.wal": No space left on device')
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


class InjectedServer(StoreServer):
    """The store service over a FaultyConnection; `raw` exceptions are raised by save_call itself,
    past storage.db's conversion to StorageError (as a bug in the store would)."""

    def __init__(self, path):
        super().__init__(path)
        self.con = FaultyConnection(self.con)
        self.raw: list[BaseException] = []

    def save_call(self, record):
        if self.raw:
            raise self.raw.pop(0)
        super().save_call(record)

    def save_deltas(self, deltas):  # the live writer's saves
        if self.raw:
            raise self.raw.pop(0)
        super().save_deltas(deltas)


class TmpfsDisk:
    """A 32 MB tmpfs for the database; fill() writes a junk file until ENOSPC, free() deletes it."""

    real = True

    def __init__(self, root):
        self.dir = root / "disk"
        self.dir.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(self.dir)],
                       check=True, capture_output=True)
        self.junk = self.dir / "junk"

    def server(self, path) -> StoreServer:
        return StoreServer(path)

    def fill(self) -> None:
        with open(self.junk, "wb", buffering=0) as f:
            block = b"\xa5" * (1 << 16)
            try:
                while True:
                    f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        with open(self.junk, "ab", buffering=0) as f:  # the last partial block too
            try:
                while True:
                    f.write(b"\xa5" * 512)
            except OSError:
                pass
        assert os.statvfs(self.dir).f_bavail == 0

    def free(self) -> None:
        self.junk.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.dir)], capture_output=True)


class InjectedDisk:
    """No filesystem could be mounted: the same fault, raised by the store's connection."""

    real = False

    def __init__(self, root):
        self.dir = root / "disk"
        self.dir.mkdir()
        self._server: InjectedServer | None = None

    def server(self, path) -> StoreServer:
        self._server = InjectedServer(path)
        return self._server

    def fill(self) -> None:
        self._server.con.full = True

    def free(self) -> None:
        self._server.con.full = False

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Retries back off to at most 1 s (10 s in service), so a test's outage ends quickly."""
    import emotivoice.analysis.live.storehealth as storehealth
    monkeypatch.setattr(storehealth, "RETRY_MAX_S", 1.0)


@pytest.fixture
def disk(tmp_path):
    try:
        made = TmpfsDisk(tmp_path)
    except (subprocess.CalledProcessError, OSError):
        made = InjectedDisk(tmp_path)
    yield made
    made.close()


# -- driving a call in two halves -----------------------------------------------------------------

def start_call(engine: LiveEngine, call_id: str, legs: dict) -> None:
    engine.inbox.start(CallStarted(call_id, "replay", tuple(LegInfo(name, name, name, RATE) for name in legs),
                                   "local", {"agent_id": "agent-7"}))


def push(engine: LiveEngine, call_id: str, legs: dict, start_s: float, end_s: float) -> None:
    """Frames [start_s, end_s) of every leg, as fast as the inbox takes them (it never drops here)."""
    for i in range(int(start_s * 50), int(end_s * 50)):
        for name, x in legs.items():
            chunk = x[i * STEP:(i + 1) * STEP]
            while not engine.inbox.push(Frame(call_id, name, i, np.pad(chunk, (0, STEP - len(chunk))).tobytes())):
                time.sleep(0.01)


KEPT = ["utterance_idx", "speaker", "start_s", "end_s", "base_emotion", "base_confidence", "partial"]


def stored(store: StoreServer, call_id: str):
    rows = store.read("call_utterances", call_id=call_id)[KEPT]
    return rows.sort_values(["start_s", "speaker"]).reset_index(drop=True)


def status(store: StoreServer, call_id: str) -> str | None:
    cursor = store.con.cursor()  # its own cursor: the engine's writer may be using the connection
    try:
        row = cursor.execute("SELECT status FROM calls WHERE call_id = ?", [call_id]).fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


def health(store: StoreServer) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(store.url + "/health", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def threads_alive(engine: LiveEngine) -> dict[str, bool]:
    return {t.name: t.is_alive() for t in engine._threads}


def live_settings(settings, tmp_path, db_dir):
    return replace(settings, db_path=db_dir / "live.duckdb",
                   live=replace(settings.live, audio_dir=tmp_path / "calls", finalize="none", keep_audio=False,
                                transcribe=False))


def test_a_disk_that_fills_mid_call_and_is_freed_loses_nothing(settings, tmp_path, disk, demo_legs):
    s = live_settings(settings, tmp_path, disk.dir)
    store = disk.server(s.db_path).start()
    engine = LiveEngine(s, store).start()
    legs = {k: v[: 24 * RATE] for k, v in demo_legs.items()}
    try:
        start_call(engine, "full-1", legs)
        push(engine, "full-1", legs, 0, 12)
        assert wait_for(lambda: len(stored(store, "full-1")) >= 3)
        disk.fill()  # mid-call: from here on nothing can be written
        assert wait_for(lambda: not engine._saving)  # a save under way when the disk filled is over
        before = stored(store, "full-1")
        push(engine, "full-1", legs, 12, 24)  # the second half's utterances
        assert wait_for(lambda: "store_fault" in engine.stats()), engine.stats()
        fault = engine.stats()["store_fault"]
        assert "live save" in fault and "since" in fault and ("No space left" in fault or "write" in fault), fault
        code, body = health(store)
        assert code == 503 and body["ok"] is False and body["since"] and body["failures"] >= 1, body
        assert all(threads_alive(engine).values()), threads_alive(engine)
        during = stored(store, "full-1")
        assert during.equals(before)  # each failed save rolled back whole: the earlier rows are intact
        assert status(store, "full-1") == "live"

        engine.inbox.end(CallEnded("full-1", "hang-up"))  # the final save must wait for space too
        assert wait_for(lambda: engine.stats().get("finals_waiting") == 1), engine.stats()
        assert all(threads_alive(engine).values()), threads_alive(engine)
        assert status(store, "full-1") == "live" and stored(store, "full-1").equals(before)

        disk.free()  # nobody restarts anything: storing resumes by itself
        assert wait_for(lambda: status(store, "full-1") == "complete"), engine.stats()
        after = stored(store, "full-1")
        assert len(after) > len(before) and after["end_s"].max() > 13.0  # the second half is stored too
        assert "store_fault" not in engine.stats() and engine.stats()["store_faults"] == 1
        assert health(store) == (200, {"ok": True})
        assert all(threads_alive(engine).values())
    finally:
        engine.stop(wait_s=30)
        store.close()
    if not disk.real:
        print("storage fault injected at the connection (no filesystem could be mounted here)")


def test_duckdb_errors_of_any_class_leave_the_writer_and_finaliser_alive(settings, tmp_path, demo_legs):
    s = live_settings(settings, tmp_path, tmp_path)
    store = InjectedServer(s.db_path).start()
    engine = LiveEngine(s, store).start()
    legs = {k: v[: 10 * RATE] for k, v in demo_legs.items()}
    # at COMMIT, through storage.db (which turns each into BadRequest or StorageError) ...
    store.con.faults = [duckdb.InternalException("INTERNAL Error: boom"), duckdb.ConstraintException("dup"),
                        duckdb.TransactionException("conflict"), duckdb.OutOfMemoryException("oom"),
                        OSError(errno.EROFS, "Read-only file system")]
    # ... and straight out of save_call, as no StorageError at all
    store.raw = [duckdb.InternalException("INTERNAL Error: raw"), duckdb.CatalogException("raw"),
                 RuntimeError("not a storage error"), KeyError("call_id")]
    try:
        start_call(engine, "odd-1", legs)
        push(engine, "odd-1", legs, 0, 10)
        engine.inbox.end(CallEnded("odd-1", "hang-up"))
        assert wait_for(lambda: status(store, "odd-1") == "complete"), engine.stats()
        assert not store.con.faults and not store.raw  # every one was met, and the call got through
        assert all(threads_alive(engine).values()), threads_alive(engine)
        stats = engine.stats()
        assert stats["store_failures"] >= 1 and stats["store_faults"] >= 1 and "store_fault" not in stats, stats
        assert len(stored(store, "odd-1")) >= 2
        start_call(engine, "odd-2", legs)  # and the next call is stored as usual
        push(engine, "odd-2", legs, 0, 6)
        engine.inbox.end(CallEnded("odd-2", "hang-up"))
        assert wait_for(lambda: status(store, "odd-2") == "complete"), engine.stats()
    finally:
        engine.stop(wait_s=30)
        store.close()


def test_a_disk_full_at_hang_up_keeps_the_recording_until_there_is_room(settings, tmp_path, disk, demo_legs):
    """The legs were on disk, the kept WAV would not fit: the call waits (still 'live', its legs
    kept) instead of being stored without its recording, and is stored with it once space returns."""
    if not disk.real:
        pytest.skip("needs a real filesystem that fills (tmpfs, as root)")
    s = replace(settings, db_path=disk.dir / "live.duckdb",
                live=replace(settings.live, audio_dir=disk.dir / "calls", finalize="none", keep_audio=True,
                             transcribe=False))
    store = disk.server(s.db_path).start()
    engine = LiveEngine(s, store).start()
    legs = {k: v[: 10 * RATE] for k, v in demo_legs.items()}
    partial = s.live.audio_dir / ".partial"
    try:
        start_call(engine, "room-1", legs)
        push(engine, "room-1", legs, 0, 10)
        assert wait_for(lambda: engine.inbox.stats()["frames_recorded"] >= 2 * 500
                        and engine.inbox.stats()["recording_queued_mb"] == 0), engine.inbox.stats()
        assert wait_for(lambda: len(stored(store, "room-1")) >= 2)
        raw = {p.name: p.stat().st_size for p in partial.glob("room-1.*.raw")}
        assert sorted(raw.values()) == [10 * RATE * 2] * 2, raw  # every sample is on disk already
        disk.fill()
        engine.inbox.end(CallEnded("room-1", "hang-up"))
        assert wait_for(lambda: engine.stats().get("recordings_waiting_for_disk") == 1), engine.stats()
        assert status(store, "room-1") == "live" and all(threads_alive(engine).values())
        assert {p.name: p.stat().st_size for p in partial.glob("room-1.*.raw")} == raw  # the legs wait
        assert not list(s.live.audio_dir.glob("*/room-1.wav")) and not list(s.live.audio_dir.glob("*/.*.tmp"))
        disk.free()
        assert wait_for(lambda: status(store, "room-1") == "complete"), engine.stats()
        # counted once the finaliser's pass is over, a moment after the call is stored
        assert wait_for(lambda: engine.stats().get("recordings_waiting_for_disk") == 0), engine.stats()
        [wav] = list(s.live.audio_dir.glob("*/room-1.wav"))
        with wave.open(str(wav)) as w:
            assert (w.getnchannels(), w.getnframes()) == (2, 10 * RATE)
        assert not list(partial.glob("room-1.*"))
    finally:
        engine.stop(wait_s=30)
        store.close()
