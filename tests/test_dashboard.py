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

from emotivoice.dashboard import auth
from emotivoice.dashboard.auth import hash_password, verify_password
from emotivoice.dashboard.sessions import REGISTRY

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_call_review_tags_the_transcript_and_stores_feedback(dashboard_env):
    at = logged_in()
    at.switch_page("views/review.py").run()
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


@pytest.mark.slow
def test_agents_and_churn_pages_rank_and_export(dashboard_env):
    at = logged_in()
    at.switch_page("views/agents.py").run()
    assert not at.exception, at.exception
    ranked = at.dataframe[0].value
    assert list(ranked.agent_id) == ["agent-7"] and ranked.escalation_share.iloc[0] == 1.0
    at.switch_page("views/churn.py").run()
    assert not at.exception, at.exception
    # the page leads with the trend, the reasons and the customers; the calls at risk come last
    risky = next(d.value for d in at.dataframe if "call_id" in d.value.columns)
    assert risky.call_id.iloc[0].startswith("demo_call-") and risky.churn_score.iloc[0] >= 0.3
    assert {"Export CSV", "Export Parquet"} <= {b.label for b in at.get("download_button")}


@pytest.mark.slow
def test_an_agent_sees_only_their_own_calls_and_pages(dashboard_env, tmp_path):
    """An agent login: the review page lists only their call (the store filters it), the live floor
    is not among their pages (not even by its URL), and they cannot save feedback."""
    from emotivoice.dashboard.auth import add_user
    from emotivoice.config import load_settings

    with duckdb.connect(str(dashboard_env)) as con:  # a second call, another agent's
        con.execute("INSERT INTO calls SELECT * REPLACE ('other-call' AS call_id, 'agent-9' AS agent_id) FROM calls")
        con.execute("INSERT INTO utterances SELECT * REPLACE ('other-call' AS call_id) FROM utterances")
    add_user(load_settings(), "ava", PASSWORD, "agent", agent_id="agent-9")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["session_token"] = REGISTRY.open("ava", 600)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Call review"  # an agent's first page; the live floor is not among theirs
    assert list(at.dataframe[0].value.call_id) == ["other-call"]
    assert [b for b in at.button if b.label == "Save feedback"][0].disabled
    with pytest.raises(ValueError, match=r"Known pages: \[.*review\.py', '.*agents\.py'\]"):
        at.switch_page("views/live.py")  # the navigation holds only the agent's pages
    direct = AppTest.from_file(APP, default_timeout=60)  # asked for the live floor's own page
    direct.session_state["session_token"] = REGISTRY.open("ava", 600)
    direct.session_state["user"] = "ava"
    direct.switch_page("views/live.py").run()
    assert not direct.exception, direct.exception
    assert [t.value for t in direct.title] == ["Call review"]  # not theirs: app.py runs their first page
    # (the store refuses the live floor's queries to an agent whatever runs them: tests/test_access.py)


@pytest.mark.slow
def test_empty_store_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTIVOICE_DB_PATH", str(tmp_path / "none.duckdb"))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path))  # sam must exist: a session of a removed user ends
    monkeypatch.setenv("EMOTIVOICE_DASHBOARD_USERS", f"sam:{hash_password(PASSWORD)}")
    at = logged_in().run()
    assert not at.exception
    assert "No calls yet" in at.info[0].value


@pytest.mark.slow
def test_busy_port_falls_back_and_prints_the_url(dashboard_env, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "emotivoice.app", "dashboard", "--db", str(dashboard_env),
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


class Clock:
    """A clock the test moves by hand, so back-off and expiry are checked without waiting."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_sixth_quick_wrong_password_waits_and_the_wait_doubles():
    from emotivoice.dashboard.throttle import LoginThrottle

    clock = Clock()
    throttle = LoginThrottle(free_failures=5, backoff_s=2.0, backoff_max_s=10.0, clock=clock)
    keys = [("user", "sam"), ("client", "10.0.0.9")]
    assert [throttle.admit(keys) for _ in range(5)] == [0.0] * 5  # five free failures
    assert throttle.admit(keys) == pytest.approx(2.0)  # the sixth waits; nothing was checked
    clock.now += 2.0
    assert throttle.admit(keys) == 0.0  # one more try after the wait...
    assert throttle.admit(keys) == pytest.approx(4.0)  # ...and the wait doubles
    clock.now += 4.0
    throttle.admit(keys)
    clock.now += 8.0
    throttle.admit(keys)
    assert throttle.retry_after(keys) == pytest.approx(10.0)  # capped at backoff_max_s
    clock.now += 10.0 + 10.0 + 1
    assert throttle.failures(("user", "sam")) == 0  # quiet long enough: forgotten


def test_throttle_counts_per_client_and_forgives_only_the_right_password():
    from emotivoice.dashboard.throttle import LoginThrottle

    clock = Clock()
    throttle = LoginThrottle(free_failures=5, backoff_s=2.0, backoff_max_s=60.0, clock=clock)
    for i in range(5):  # one address guessing five different names
        throttle.admit([("user", f"name{i}"), ("client", "10.0.0.9")])
    assert throttle.admit([("user", "someone-else"), ("client", "10.0.0.9")]) > 0
    assert throttle.admit([("user", "someone-else"), ("client", "10.0.0.10")]) == 0.0  # other clients are not
    clock.now += 2.0
    keys = [("user", "sam"), ("client", "10.0.0.9")]
    assert throttle.admit(keys) == 0.0
    throttle.forgive(("user", "sam"), [("client", "10.0.0.9")])  # the password was right
    assert throttle.failures(("user", "sam")) == 0
    assert throttle.failures(("client", "10.0.0.9")) == 5  # a valid login does not wipe a guesser's record
    assert throttle.retry_after(keys) == 0.0


def test_parallel_attempts_cannot_slip_past_the_count():
    """Each attempt counts as a failure when admitted, so guesses in flight at once are bounded."""
    from emotivoice.dashboard.throttle import LoginThrottle

    throttle = LoginThrottle(free_failures=5, backoff_s=2.0, backoff_max_s=60.0, clock=Clock())
    admitted = [throttle.admit([("user", "sam"), ("client", "c")]) == 0.0 for _ in range(50)]
    assert admitted.count(True) == 5


def test_throttle_memory_is_bounded_against_made_up_names():
    from emotivoice.dashboard.throttle import LoginThrottle

    throttle = LoginThrottle(5, 2.0, 60.0, clock=Clock(), max_keys=100)
    for i in range(1000):
        throttle.admit([("user", f"made-up-{i}")])
    assert len(throttle._records) <= 100


@pytest.mark.slow
def test_sign_in_refuses_even_the_right_password_while_backed_off_and_logs_the_lockout(dashboard_env, caplog):
    from emotivoice.dashboard.auth import sign_in
    from emotivoice.dashboard.throttle import LoginThrottle
    from emotivoice.config import load_settings

    settings, clock = load_settings(), Clock()
    throttle = LoginThrottle(5, 2.0, 60.0, clock=clock)
    results = [sign_in(settings, "sam", f"guess {i}", "10.0.0.9", throttle) for i in range(5)]
    assert [r.user for r in results] == [None] * 5 and results[-1].retry_after_s == pytest.approx(2.0)
    lockout = [r for r in caplog.records if getattr(r, "event", None) == "login_lockout"]
    assert lockout and lockout[0].user_name == "sam" and lockout[0].client == "10.0.0.9"
    assert lockout[0].user_failures == 5 and lockout[0].retry_after_s == 2.0
    refused = sign_in(settings, "sam", PASSWORD, "10.0.0.9", throttle)
    assert refused.user is None and refused.throttled and refused.retry_after_s == pytest.approx(2.0)
    clock.now += 2.0
    assert sign_in(settings, "sam", PASSWORD, "10.0.0.9", throttle).user == "sam"


def test_new_users_need_a_long_enough_password_and_a_plain_name(tmp_path, monkeypatch):
    import os

    from emotivoice.dashboard.auth import add_user, load_users
    from emotivoice.config import load_settings

    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    with pytest.raises(ValueError, match="at least 12 characters"):
        add_user(settings, "sam", "short-pass")
    for name in ("", "../sam", "sam:x", "a,b", "x" * 65):
        with pytest.raises(ValueError, match="user name"):
            add_user(settings, name, PASSWORD)
    path = add_user(settings, "sam", PASSWORD)
    assert verify_password(PASSWORD, load_users(settings)["sam"])
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o700


def test_sessions_end_on_logout_or_expiry_and_tickets_work_once():
    from emotivoice.dashboard.sessions import SessionRegistry

    clock = Clock()
    registry = SessionRegistry(clock=clock)
    token = registry.open("sam", ttl_s=100)
    assert registry.user(token) == "sam" and registry.user(token + "x") is None and registry.user(None) is None
    ticket = registry.ticket(token)
    assert registry.redeem(ticket) == token and registry.redeem(ticket) is None  # once
    clock.now += 101
    assert registry.user(token) is None  # expired
    other = registry.open("sam", ttl_s=100)
    late = registry.ticket(other)
    registry.close(other)
    assert registry.user(other) is None and registry.redeem(late) is None  # logged out: its ticket is dead too
    assert token not in str(registry._sessions)  # only hashes are kept


def test_playback_links_are_signed_bound_and_expire(tmp_path, monkeypatch):
    import os

    from emotivoice.dashboard.sessions import BadLink, link_secret, make_link, read_link, session_id
    from emotivoice.config import load_settings

    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path / "data"))
    key = link_secret(load_settings())
    secret_file = tmp_path / "data" / "dashboard_secret.key"
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    link = make_link(key, "call-1", "sam", "the-token", ttl_s=60, now=1000)
    found = read_link(key, link, now=1059)
    assert (found.call_id, found.user, found.session) == ("call-1", "sam", session_id("the-token"))
    with pytest.raises(BadLink, match="expired"):
        read_link(key, link, now=1060)
    payload, sig = link.split(".")
    forged = payload.replace(payload[5], "A" if payload[5] != "A" else "B") + "." + sig
    for bad in (forged, link[:-2], "nonsense", "a.b.c", make_link(b"k" * 32, "call-1", "sam", "t", 60, 1000)):
        with pytest.raises(BadLink):
            read_link(key, bad, now=1001)


def test_only_recordings_inside_the_playable_dirs_count_as_kept(tmp_path, monkeypatch):
    from emotivoice.dashboard.playback import kept_recording
    from emotivoice.config import load_settings

    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    day = settings.live.audio_dir / "2026-01-01"
    day.mkdir(parents=True)
    good = day / "call-1.wav"
    good.write_bytes(b"RIFF")
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF")
    (day / "link-out.wav").symlink_to(outside)
    (day / "notes.txt").write_text("x")
    (day / "dir.wav").mkdir()
    assert kept_recording(settings, str(good)) == good.resolve()
    for source in ("/etc/hostname", str(outside), str(day / "link-out.wav"), str(day / "notes.txt"),
                   str(day / "dir.wav"), str(day / ".." / ".." / ".." / "secret.wav"), str(day / "missing.wav"),
                   "", None, "a\x00b"):
        assert kept_recording(settings, source) is None, source
    elsewhere = tmp_path / "recordings"
    elsewhere.mkdir()
    (elsewhere / "batch.opus").write_bytes(b"OggS")
    assert kept_recording(settings, str(elsewhere / "batch.opus")) is None  # not a playable dir yet
    monkeypatch.setenv("EMOTIVOICE_DASHBOARD_RECORDING_DIRS", str(elsewhere))
    assert kept_recording(load_settings(), str(elsewhere / "batch.opus")) == (elsewhere / "batch.opus").resolve()
