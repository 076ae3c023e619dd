"""The dashboard: rendered content through AppTest, and the real server with port fallback."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.db import connect, save_call
from test_storage import record

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture
def db_with_call(tmp_path, monkeypatch):
    db = tmp_path / "d.duckdb"
    con = connect(db)
    save_call(con, record("call-42", n=3, text="my bill is wrong"))
    con.close()
    monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(db))
    return db


def test_shows_calls_timeline_and_tagged_transcript(db_with_call):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    calls = at.dataframe[0].value
    assert list(calls.call_id) == ["call-42"]
    transcript = at.dataframe[1].value
    assert list(transcript.text) == ["my bill is wrong 0", "my bill is wrong 1", "my bill is wrong 2"]
    assert set(transcript.granular) == {"frustration"}
    assert transcript.emotion.iloc[0] == "anger 60%"
    assert at.metric[0].label == "agent (agent)"
    assert any("talk share 100% · 125 words/min" in c.value for c in at.caption)


def test_empty_store_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(tmp_path / "none.duckdb"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "No calls yet" in at.info[0].value


def test_busy_port_falls_back_and_prints_the_url(db_with_call, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "emotivoice.cli", "dashboard", "--db", str(db_with_call),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert f"port {port} is busy" in lines[0]
        url = lines[1].split("dashboard: ")[1].strip()
        assert url != f"http://localhost:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    assert r.read() == b"ok"
                break
            except OSError:
                assert time.time() < deadline, "dashboard did not come up"
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(10)
        busy.close()
