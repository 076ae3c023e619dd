"""The SIP connector against real calls: sipp places them over loopback, pjsua2 answers.

Skipped when sipp or pjsua2 is missing, except under CI (env CI set), where that is a failure.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from connector.access import DigestAuth, is_allowed, parse_allow
from connector.siprec import summarize_invite
from connector.sipp import have_sipp, place_calls
from emotivoice.config import ConnectorConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo" / "demo_call.opus"

try:
    import pjsua2  # noqa: F401
    HAVE_PJSUA2 = True
except ImportError:
    HAVE_PJSUA2 = False

_missing = [name for name, ok in (("sipp", have_sipp()), ("pjsua2", HAVE_PJSUA2)) if not ok]
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"CI needs {', '.join(_missing)} for tests/test_sip.py")
needs_stack = pytest.mark.skipif(bool(_missing), reason=f"missing {', '.join(_missing)}")


class CollectingSink:
    def __init__(self):
        self.started, self.ended = [], []
        self.frames = collections.defaultdict(list)
        self.lock = threading.Lock()

    def start(self, call):
        self.started.append(call)

    def push(self, frame):
        with self.lock:
            self.frames[(frame.call_id, frame.leg)].append(frame)
        return True

    def end(self, call):
        self.ended.append(call)

    def pcm(self, call_id, leg):
        frames = self.frames[(call_id, leg)]
        assert [f.seq for f in frames] == list(range(len(frames))), "frame sequence has gaps"
        return np.frombuffer(b"".join(f.pcm for f in frames), dtype=np.int16)


def envelope(pcm: np.ndarray, rate: int) -> np.ndarray:
    win = rate // 10
    n = len(pcm) // win
    return np.sqrt(np.mean(pcm[: n * win].astype(np.float64).reshape(n, win) ** 2, axis=1))


def aligned_corr(sent: np.ndarray, got: np.ndarray, lag: int) -> float:
    got = got[lag: lag + len(sent)]
    n = min(len(sent), len(got))
    return float(np.corrcoef(sent[:n], got[:n])[0, 1])


def best_lag(sent: np.ndarray, got: np.ndarray, max_lag: int = 30) -> int:
    return max(range(min(max_lag, max(len(got) - len(sent) // 2, 1))), key=lambda k: aligned_corr(sent, got, k))


@pytest.fixture(scope="module")
def demo_legs():
    from analysis.audio import load_audio
    from scipy.signal import resample_poly
    stereo = load_audio(DEMO, channels=2)[:, : 16000 * 12]  # agent, customer; 12 s
    return [np.clip(resample_poly(ch, 1, 2) * 32767, -32768, 32767).astype(np.int16) for ch in stereo]


def connector(sink, **overrides):
    from connector.sip import SipConnector
    cfg = ConnectorConfig(sip_host="127.0.0.1", sip_port=0, rtp_port=0, siprec_agent_match=r"agent", **overrides)
    conn = SipConnector(cfg, sink)
    conn.start()
    return conn


def wait_for(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cond():
        time.sleep(0.05)
    return cond()


# -- pure parts ----------------------------------------------------------------------------------

SIPREC_INVITE = """INVITE sip:srs@10.0.0.2 SIP/2.0\r
Call-ID: abc@1\r
From: <sip:src@10.0.0.1>;tag=1\r
To: <sip:srs@10.0.0.2>\r
Require: siprec\r
Content-Type: multipart/mixed;boundary=XX\r
\r
--XX\r
Content-Type: application/sdp\r
\r
v=0\r
c=IN IP4 10.0.0.1\r
m=audio 4000 RTP/AVP 9 0\r
a=rtpmap:9 G722/8000\r
a=label:in\r
a=sendonly\r
m=audio 4002 RTP/AVP 0\r
a=label:out\r
a=sendonly\r
--XX\r
Content-Type: application/rs-metadata+xml\r
\r
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<session session_id="S1"/>
<participant participant_id="P1"><nameID aor="sip:+1555@pstn"><name>Carol</name></nameID></participant>
<participant participant_id="P2"><nameID aor="sip:agent7@cc"/></participant>
<stream stream_id="A" session_id="S1"><label>in</label></stream>
<stream stream_id="B" session_id="S1"><label>out</label></stream>
<participantstreamassoc participant_id="P1"><send>A</send></participantstreamassoc>
<participantstreamassoc participant_id="P2"><send>B</send></participantstreamassoc>
</recording>\r
--XX--\r
"""


def test_siprec_invite_is_read_into_labelled_legs_with_roles():
    summary = summarize_invite(SIPREC_INVITE, agent_match="agent")
    assert summary.siprec
    assert [(l.leg, l.role, l.name, l.clock_rates) for l in summary.legs] == [
        ("in", "customer", "Carol", (16000, 8000)), ("out", "agent", "sip:agent7@cc", (8000,))]
    assert summary.metadata["agent_id"] == "agent7" and summary.metadata["customer_id"] == "+1555"
    assert all(l.role is None for l in summarize_invite(SIPREC_INVITE).legs)  # no rule, no roles


def test_allowlist_and_digest():
    nets = parse_allow("10.0.0.0/8, ::1")
    assert is_allowed("10.1.2.3:5060", nets) and is_allowed("[::1]:5060", nets)
    assert not is_allowed("127.0.0.1:5060", nets) and not is_allowed("garbage", nets)
    auth = DigestAuth("u", "pw", "r")
    nonce = auth.new_nonce()
    import hashlib
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    resp = md5(f"{md5('u:r:pw')}:{nonce}:00000001:c:auth:{md5('INVITE:sip:x')}")
    header = f'Digest username="u", realm="r", nonce="{nonce}", uri="sip:x", response="{resp}", qop=auth, nc=00000001, cnonce="c"'
    assert auth.verify("INVITE", header)
    assert not auth.verify("INVITE", header)  # replayed
    assert not auth.verify("INVITE", header.replace(resp, "0" * 32))


# -- real calls ----------------------------------------------------------------------------------

@needs_stack
@pytest.mark.slow
def test_siprec_call_delivers_each_leg_to_its_own_role(demo_legs):
    sink = CollectingSink()
    conn = connector(sink)
    try:
        result = place_calls("127.0.0.1", conn.port, demo_legs, siprec=True)
        assert result.returncode == 0, result.output
        assert result.invite_responses == [200]
        assert wait_for(lambda: len(sink.ended) == 1)
    finally:
        conn.stop()
    assert len(sink.started) == 1 and len(sink.ended) == 1
    call = sink.started[0]
    assert call.source == "siprec" and sink.ended[0].call_id == call.call_id
    roles = {leg.role: leg for leg in call.legs}
    assert set(roles) == {"agent", "customer"} and roles["agent"].name == "Agent Alice"
    sent = {"agent": envelope(demo_legs[0], 8000), "customer": envelope(demo_legs[1], 8000)}
    for role, other in (("agent", "customer"), ("customer", "agent")):
        leg = roles[role]
        got = envelope(sink.pcm(call.call_id, leg.leg), leg.sample_rate)
        lag = best_lag(sent[role], got)
        assert aligned_corr(sent[role], got, lag) >= 0.9
        assert aligned_corr(sent[other], got, lag) < 0.5


@needs_stack
@pytest.mark.slow
def test_plain_call_malformed_invite_and_allowlist():
    sink = CollectingSink()
    conn = connector(sink)
    try:
        # a broken INVITE gets an error response and the connector keeps serving
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.bind(("127.0.0.1", 0))
            via = f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};rport;branch=z9hG4bKbad\r\n".encode()
            s.sendto(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\n" + via +
                     b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"  # no Call-ID
                     b"Content-Length: 0\r\n\r\n", ("127.0.0.1", conn.port))
            reply = s.recv(4096).decode(errors="replace")
        assert reply.startswith("SIP/2.0 4"), reply
        tone = (6000 * np.sin(2 * np.pi * 300 * np.arange(8000 * 2) / 8000)).astype(np.int16)
        result = place_calls("127.0.0.1", conn.port, [tone], siprec=False)
        assert result.invite_responses == [200], result.output
        assert wait_for(lambda: len(sink.ended) == 1)
    finally:
        conn.stop()
    call = sink.started[0]
    assert call.source == "sip" and [(l.leg, l.role) for l in call.legs] == [("inbound", None)]
    got = sink.pcm(call.call_id, "inbound")
    assert len(got) >= 0.9 * 2 * call.legs[0].sample_rate and np.abs(got).max() > 3000

    refused = CollectingSink()
    conn = connector(refused, allow="10.0.0.0/8")
    try:
        result = place_calls("127.0.0.1", conn.port, [tone[:1600]], siprec=False)
        assert result.invite_responses == [403]
    finally:
        conn.stop()
    assert refused.started == [] and refused.ended == []


@needs_stack
@pytest.mark.slow
def test_digest_auth_refuses_wrong_password_and_answers_right_one():
    sink = CollectingSink()
    conn = connector(sink, auth_user="rec", auth_password="s3cret")
    tone = (6000 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)).astype(np.int16)
    try:
        wrong = place_calls("127.0.0.1", conn.port, [tone], siprec=False, auth_user="rec", auth_password="nope")
        assert wrong.invite_responses == [401, 401], wrong.output
        right = place_calls("127.0.0.1", conn.port, [tone], siprec=False, auth_user="rec", auth_password="s3cret")
        assert right.invite_responses == [401, 200], right.output
        assert wait_for(lambda: len(sink.ended) == 1)
    finally:
        conn.stop()
    assert len(sink.started) == 1
