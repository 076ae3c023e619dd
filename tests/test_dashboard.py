"""The dashboard through Streamlit's AppTest: login first, then every page on a really analysed
call; the sign-in throttle, sessions, playback links and kept-recording checks on their own; plus
the real server with port fallback. (tests/test_attacks_dashboard.py attacks the running server.)"""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth
from dashboard.auth import hash_password, verify_password
from dashboard.sessions import REGISTRY

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PASSWORD = "correct horse battery"


@pytest.fixture
def dashboard_env(demo_analysis, tmp_path, monkeypatch):
    """A copy of the analysed demo call with an agent and team, and one supervisor login."""
    db = tmp_path / "d.duckdb"
    shutil.copy(demo_analysis[0], db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE calls SET agent_id = 'agent-7', customer_id = 'cust-1', team = 'blue'")
    con.close()
    monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(db))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMOTIVOICE_DASHBOARD_USERS", f"sam:{hash_password(PASSWORD)}")
    return db


@pytest.fixture(autouse=True)
def fresh_throttle():
    """AppTest runs the app in this process: each test starts with no sign-in failures counted."""
    auth._THROTTLES.clear()
    yield
    auth._THROTTLES.clear()


def logged_in() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["session_token"] = REGISTRY.open("sam", 600)  # as a sign-in leaves it
    at.session_state["user"] = "sam"  # AppTest runs a page switched to without app.py, which sets this
    return at


def test_passwords_are_hashed_and_checked():
    encoded = hash_password("s3cret-pass")
    assert "s3cret-pass" not in encoded and encoded.startswith("pbkdf2_sha256$")
    assert verify_password("s3cret-pass", encoded) and not verify_password("wrong", encoded)


def test_no_page_without_logging_in(dashboard_env):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert not at.dataframe  # nothing from the store before login
    at.text_input[0].input("sam")
    at.text_input[1].input("wrong password")
    at.button[0].click().run()
    assert "Wrong username or password." in [e.value for e in at.error]
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert at.session_state["user"] == "sam"
    assert at.title[0].value == "Live floor"
    token = at.session_state["session_token"]
    assert REGISTRY.user(token) == "sam"  # a server-side session the cookie will carry
    # (log-out is a sidebar button, which AppTest 1.67 does not click: the browser test does)


def test_live_floor_shows_the_call_and_acknowledges_its_alert(dashboard_env):
    at = logged_in().run()
    assert not at.exception, at.exception
    assert "1 open alert" in at.error[0].value
    calls = at.dataframe[0].value
    assert calls.call_id.iloc[0].startswith("demo_call-") and calls.agent_id.iloc[0] == "agent-7"
    assert len(calls.risk_trend.iloc[0]) == 6  # one risk score per customer utterance
    ack = next(b for b in at.button if b.label == "Acknowledge")
    ack.click().run()
    assert not at.exception, at.exception
    assert any("No open alerts" in s.value for s in at.success)
    who, when = duckdb.connect(str(dashboard_env), read_only=True).execute(
        "SELECT acknowledged_by, acknowledged_at FROM alerts").fetchone()
    assert who == "sam" and when is not None


def test_call_review_tags_the_transcript_and_stores_feedback(dashboard_env):
    at = logged_in()
    at.switch_page("pages/review.py").run()
    assert not at.exception, at.exception
    transcript = at.dataframe[2].value
    assert list(transcript.speaker[:2]) == ["agent", "customer"]
    assert {"emotion", "granular", "complex", "sarcasm", "risk"} <= set(transcript.columns)
    assert transcript.text.str.contains("eleven|11").any()
    compare = at.dataframe[1].value
    assert list(compare.scope) == ["this call", "agent average", "team average"]
    assert any("Alerts: customer at 28 s" in c.value for c in at.caption)
    at.radio[0].set_value("sarcasm")
    at.text_area[0].input("Said it with a smile, not sarcastic.")
    next(b for b in at.button if b.label == "Save feedback").click().run()
    assert not at.exception, at.exception
    row = duckdb.connect(str(dashboard_env), read_only=True).execute(
        "SELECT kind, note, author FROM feedback").fetchone()
    assert row == ("sarcasm", "Said it with a smile, not sarcastic.", "sam")


def test_agents_and_churn_pages_rank_and_export(dashboard_env):
    at = logged_in()
    at.switch_page("pages/agents.py").run()
    assert not at.exception, at.exception
    ranked = at.dataframe[0].value
    assert list(ranked.agent_id) == ["agent-7"] and ranked.escalation_share.iloc[0] == 1.0
    at.switch_page("pages/churn.py").run()
    assert not at.exception, at.exception
    risky = at.dataframe[0].value
    assert risky.call_id.iloc[0].startswith("demo_call-") and risky.churn_score.iloc[0] >= 0.3
    assert {"Export CSV", "Export Parquet"} <= {b.label for b in at.get("download_button")}


def test_empty_store_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(tmp_path / "none.duckdb"))
    at = logged_in().run()
    assert not at.exception
    assert "No calls yet" in at.info[0].value


def test_busy_port_falls_back_and_prints_the_url(dashboard_env, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "emotivoice.cli", "dashboard", "--db", str(dashboard_env),
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
        proc.wait(15)  # it stops its Streamlit server before exiting
        busy.close()
    chosen = url.rsplit(":", 1)[1]
    left = [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
            if "streamlit run" in line and f"--server.port {chosen} " in line]
    assert not left, left  # stopping the dashboard stops its Streamlit server too
