"""Production path end to end: `emotivoice serve` (SIP connector, live engine, store service) in
its own process, a live SIPREC call from Debian's sipp through `emotivoice place-call`, and the
dashboard's Live floor (AppTest) reading the call through the service while it is going on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import wave

import duckdb
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from emotivoice.analysis.audio import load_audio
from emotivoice.connector.sipp import have_sipp
from emotivoice.dashboard.auth import hash_password
from emotivoice.dashboard.sessions import REGISTRY
from emotivoice.storage.store import open_store
from tests.conftest import DEMO
from tests.test_dashboard import APP

ROOT = DEMO.parent.parent.parent

pytestmark = pytest.mark.slow
if not have_sipp() and not os.environ.get("CI"):
    pytest.skip("sipp not installed (python3 launch.py installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_excerpt(path, seconds: float):
    """The demo call's first seconds as a stereo 16 kHz WAV (agent left, customer right)."""
    audio = load_audio(DEMO, 2)[:, : int(seconds * 16000)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((audio.T * 32767).astype("<i2").tobytes())
    return path


def start_service(port: int, env: dict) -> subprocess.Popen:
    service = subprocess.Popen([sys.executable, "-m", "emotivoice.app", "serve", "--sip-port", str(port), "--no-inbox"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in service.stdout:  # wait for the listener
        lines.append(line)
        if line.startswith("live service:"):
            break
    assert any(f"SIP listening on port {port}" in line for line in lines), "".join(lines)
    return service


def test_serve_takes_a_sip_call_live_the_dashboard_shows_it_and_the_batch_pass_finishes_it(tmp_path, monkeypatch):
    excerpt = demo_excerpt(tmp_path / "excerpt.wav", 20)
    port = free_port()
    # the store resolves the dashboard's user from its own settings: sam must be known to the service too
    env = dict(os.environ, EMOTIVOICE_DATA_DIR=str(tmp_path / "data"),
               EMOTIVOICE_DASHBOARD_USERS=f"sam:{hash_password('pw-for-the-test')}",
               EMOTIVOICE_CONFIG=str(tmp_path / "none.toml"))
    service = start_service(port, env)
    try:
        caller = subprocess.Popen([sys.executable, "-m", "emotivoice.app", "place-call", str(excerpt),
                                   "--to", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, text=True)
        db = tmp_path / "data" / "emotivoice.duckdb"
        monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("EMOTIVOICE_CONFIG", str(tmp_path / "none.toml"))
        monkeypatch.setenv("EMOTIVOICE_DASHBOARD_USERS", f"sam:{hash_password('pw-for-the-test')}")
        store = open_store(db)  # through the service: the file is its own
        live = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and live is None:
            calls = store.read("live_calls")
            if len(calls) and calls.status.iloc[0] == "live" and len(store.read("call_utterances",
                                                                                 call_id=calls.call_id.iloc[0])) >= 3:
                live = calls.call_id.iloc[0]
            time.sleep(0.5)
        assert live, "no live call with utterances appeared while sipp was calling"
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["user"] = "sam"
        at.session_state["session_token"] = REGISTRY.open("sam", 600)  # signed in: a live server-side session
        at.run()
        assert not at.exception, at.exception
        floor = at.dataframe[0].value
        assert floor.call_id.iloc[0] == live and floor.status.iloc[0] == "live"
        assert floor.agent_id.iloc[0] == "agent-1001"  # from the SIPREC metadata sipp sent
        assert sum("**agent**" in m.value or "**customer**" in m.value for m in at.markdown) >= 3
        assert "calls answered: 1/1" in caller.communicate(timeout=60)[0]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # hang-up -> the batch pass on the kept audio -> complete
            call = store.read("list_calls").set_index("call_id").loc[live]
            if call["status"] == "complete":
                break
            time.sleep(1)
        assert call["status"] == "complete" and call["mode"] == "live"
        assert call["diarization"].startswith("channel-per-speaker")  # the batch pass's result
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0
    con = duckdb.connect(str(db), read_only=True)  # the service let go of the file
    source, agent = con.execute("SELECT source, agent_id FROM calls").fetchone()
    assert source.endswith(".wav") and os.path.exists(source) and agent == "agent-1001"
    speakers = {r[0] for r in con.execute("SELECT DISTINCT speaker FROM utterances").fetchall()}
    assert speakers == {"agent", "customer"}
    assert np.isfinite(con.execute("SELECT max(score) FROM risk_scores").fetchone()[0])


def test_a_supervisor_watches_a_live_sip_call_and_its_alert_in_the_browser(tmp_path):
    """The Live floor in headless Chromium while sipp's call is going on: the call, its rolling
    transcript and the customer's alert appear without reloading the page (README screenshot)."""
    from browser import (browser_missing, headless_chrome, login, page_text, screenshot, start_dashboard_server,
                         stop_dashboard_server, wait_for_text, wait_until_idle)

    if browser_missing() and not os.environ.get("CI"):
        pytest.skip(browser_missing())
    excerpt = demo_excerpt(tmp_path / "excerpt.wav", 31)  # up to the customer's angry "It's 11 o'clock!"
    port = free_port()
    env = dict(os.environ, EMOTIVOICE_DATA_DIR=str(tmp_path / "data"), EMOTIVOICE_CONFIG=str(tmp_path / "none.toml"),
               EMOTIVOICE_DASHBOARD_USERS=f"sam:{hash_password('pw-for-the-test')}")
    service = start_service(port, env)
    dashboard, driver, caller = None, None, None
    try:
        dashboard, url = start_dashboard_server(tmp_path / "data" / "emotivoice.duckdb", env)
        driver = headless_chrome()
        login(driver, url, "sam", "pw-for-the-test")
        caller = subprocess.Popen([sys.executable, "-m", "emotivoice.app", "place-call", str(excerpt),
                                   "--to", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, text=True)
        wait_for_text(driver, "agent-1001", timeout=60)  # the call is on the floor while it runs
        assert "live" in page_text(driver)
        wait_for_text(driver, "1 open alert", timeout=60)
        wait_until_idle(driver)
        text = page_text(driver)
        assert "negative emotion" in text  # the alert names its top factors
        assert "customer" in text and "Acknowledge" in text
        screenshot(driver, ROOT / "docs" / "screenshots" / "live-call.png")
        assert "calls answered: 1/1" in caller.communicate(timeout=60)[0]
    finally:
        if caller and caller.poll() is None:
            caller.kill()
        if driver:
            driver.quit()
        if dashboard:
            stop_dashboard_server(dashboard)
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
