"""The inbox analysis service: picks up finished recordings once, survives bad ones, and owns
the database while other processes read and write through it."""

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from emotivoice.analysis.pipeline import CallAnalyzer
from emotivoice.analysis.service import InboxWatcher
from conftest import DEMO, ROOT, run_cli
from emotivoice.dashboard.auth import hash_password
from emotivoice.storage.store import FileStore, announcement

pytestmark = pytest.mark.slow


def test_new_recordings_are_stored_once_and_bad_ones_skipped(settings, tmp_path):
    from dataclasses import replace

    inbox, db = tmp_path / "inbox", tmp_path / "calls.duckdb"
    inbox.mkdir()
    analyzer = CallAnalyzer(replace(settings, transcription=replace(settings.transcription, model="tiny.en")))
    watcher = InboxWatcher(analyzer, inbox, FileStore(db), poll_s=0)
    (inbox / "broken.wav").write_bytes(b"RIFF....garbage")
    (inbox / "notes.txt").write_text("not audio")
    shutil.copy(DEMO, inbox / "call-1.opus")
    assert watcher.poll_once() == []  # first look: sizes noted, nothing is known to be finished
    stored = watcher.poll_once()
    assert len(stored) == 1 and stored[0].startswith("call-1-")
    assert watcher.poll_once() == []  # handled files are not analysed again
    assert list(FileStore(db).read("list_calls").call_id) == stored


def test_service_owns_the_file_while_cli_and_dashboard_use_it(tmp_path, monkeypatch):
    """Writer and readers at once: `watch` holds the DuckDB file; `analyze` in another process
    stores through it, the dashboard reads live data through it, and nobody sees a lock error."""
    import duckdb
    from streamlit.testing.v1 import AppTest

    inbox, db = tmp_path / "inbox", tmp_path / "live.duckdb"
    # the store resolves the dashboard's user (sam) from its own settings, so the service knows sam too
    env = {"EMOTIVOICE_TRANSCRIPTION_MODEL": "tiny.en", "EMOTIVOICE_DB_PATH": str(db),
           "EMOTIVOICE_DASHBOARD_USERS": f"sam:{hash_password('pw-for-the-test')}"}
    import os
    service = subprocess.Popen([sys.executable, "-m", "emotivoice.app", "watch", str(inbox), "--db", str(db),
                                "--poll", "0.5"], cwd=ROOT, env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not announcement(db).is_file():
            assert service.poll() is None and time.monotonic() < deadline, service.stdout.read()
            time.sleep(0.2)
        with pytest.raises(duckdb.IOException):  # the file really is held by the service
            duckdb.connect(str(db), read_only=True)
        # every file of the store owner-only; the WAL exists only between checkpoints (the service's
        # start-up retention pass may have just checkpointed it away)
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("live.duckdb*")}
        assert {"live.duckdb", "live.duckdb.server.json"} <= set(modes) <= {
            "live.duckdb", "live.duckdb.wal", "live.duckdb.server.json"} and set(modes.values()) == {0o600}, modes
        info = json.loads(announcement(db).read_text())  # a token holder smuggling SQL in a column name
        smuggled = {"call": {"call_id": "x", "source) VALUES (1, 2); CREATE TABLE pwn(x INT); --": 1}}
        request = urllib.request.Request(info["url"] + "/calls", data=json.dumps(smuggled).encode(),
                                         headers={"X-Store-Token": info["token"]})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and b"duckdb" not in refused.value.read().lower()
        proc = run_cli("analyze", str(DEMO), "--db", str(db), "--quiet", env=env)
        assert proc.returncode == 0, proc.stderr
        shutil.copy(DEMO, inbox / "dropped.opus")
        monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(db))
        monkeypatch.setenv("EMOTIVOICE_DASHBOARD_USERS", env["EMOTIVOICE_DASHBOARD_USERS"])
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
        from emotivoice.dashboard.sessions import REGISTRY

        at.session_state["user"] = "sam"  # the live floor, signed in with a live server-side session
        at.session_state["session_token"] = REGISTRY.open("sam", 600)
        while True:  # the dropped call shows up without restarting anything
            at.run()
            assert not at.exception, at.exception
            ids = list(at.dataframe[0].value.call_id) if at.dataframe else []
            if len(ids) == 2:
                break
            assert time.monotonic() < deadline, ids
            time.sleep(1)
        assert any(i.startswith("demo_call-") for i in ids) and any(i.startswith("dropped-") for i in ids)
    finally:
        service.terminate()
        service.wait(timeout=30)
    assert not announcement(db).is_file()  # a clean stop withdraws the announcement
    con = duckdb.connect(str(db), read_only=True)  # and releases the file
    assert con.execute("SELECT count(*) FROM calls").fetchone()[0] == 2
    assert not con.execute("SELECT * FROM information_schema.tables WHERE table_name = 'pwn'").fetchall()
    con.close()
