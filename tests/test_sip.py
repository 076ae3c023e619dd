"""The SIP connector against real calls: sipp places them over loopback, pjsua2 answers.

Skipped when sipp or pjsua2 is missing, except under CI (env CI set), where that is a failure.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emotivoice.connector.access import DigestAuth, is_allowed, parse_allow
from emotivoice.connector.siprec import summarize_invite
from emotivoice.connector.sipp import have_sipp, place_calls
from tests.audio_match import CollectingSink, rms_envelope
from tests.conftest import words
from emotivoice.config import ConnectorConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo" / "demo_call.opus"
DEMO_TURNS = json.loads((ROOT / "assets" / "demo" / "demo_call.json").read_text())["turns"]

try:
    import pjsua2  # noqa: F401
    HAVE_PJSUA2 = True
except ImportError:
    HAVE_PJSUA2 = False

_missing = [name for name, ok in (("sipp", have_sipp()), ("pjsua2", HAVE_PJSUA2)) if not ok]
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"CI needs {', '.join(_missing)} for tests/test_sip.py")
needs_stack = pytest.mark.skipif(bool(_missing), reason=f"missing {', '.join(_missing)}")


def aligned_corr(sent: np.ndarray, got: np.ndarray, lag: int) -> float:
    got = got[lag: lag + len(sent)]
    n = min(len(sent), len(got))
    return float(np.corrcoef(sent[:n], got[:n])[0, 1])


def best_lag(sent: np.ndarray, got: np.ndarray, max_lag: int = 30) -> int:
    return max(range(min(max_lag, max(len(got) - len(sent) // 2, 1))), key=lambda k: aligned_corr(sent, got, k))


@pytest.fixture(scope="module")
def demo_legs():
    from emotivoice.analysis.audio import load_audio, to_8k_pcm16
    stereo = load_audio(DEMO, channels=2)[:, : 16000 * 12]  # agent, customer; 12 s
    return [to_8k_pcm16(ch) for ch in stereo]


def connector(sink, **overrides):
    from emotivoice.connector.sip import SipConnector
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
    assert [(leg.leg, leg.role, leg.name, leg.clock_rates) for leg in summary.legs] == [
        ("in", "customer", "Carol", (16000, 8000)), ("out", "agent", "sip:agent7@cc", (8000,))]
    assert summary.metadata["agent_id"] == "agent7" and summary.metadata["customer_id"] == "+1555"
    assert all(leg.role is None for leg in summarize_invite(SIPREC_INVITE).legs)  # no rule, no roles


def test_allowlist_and_digest():
    nets = parse_allow("10.0.0.0/8, ::1")
    assert is_allowed("10.1.2.3:5060", nets) and is_allowed("[::1]:5060", nets)
    assert not is_allowed("127.0.0.1:5060", nets) and not is_allowed("garbage", nets)
    auth = DigestAuth("u", "pw", "r")
    nonce = auth.new_nonce()
    import hashlib
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    resp = md5(f"{md5('u:r:pw')}:{nonce}:00000001:c:auth:{md5('INVITE:sip:x')}")
    header = (f'Digest username="u", realm="r", nonce="{nonce}", uri="sip:x", response="{resp}", '
              'qop=auth, nc=00000001, cnonce="c"')
    assert auth.verify("INVITE", header)
    assert not auth.verify("INVITE", header)  # replayed
    assert not auth.verify("INVITE", header.replace(resp, "0" * 32))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_limiter_gives_a_burst_then_the_rate_and_stays_small():
    from emotivoice.connector.access import RateLimiter
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=5, max_sources=100, clock=clock)
    assert [limiter.allow("10.0.0.1") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("10.0.0.2")  # each source has its own bucket
    assert limiter.retry_after_s("10.0.0.1") == 1
    clock.now += 1.0  # two tokens back
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    for i in range(10_000):  # a spray of sources: the table stays bounded, nobody is refused for it
        assert limiter.allow(f"10.1.{i // 256}.{i % 256}")
    assert len(limiter) <= 100
    clock.now += 10.0  # every bucket refilled: the same as no bucket
    limiter.allow("10.0.0.9")
    assert len(limiter) <= 100
    assert all(RateLimiter(0, 1).allow("x") for _ in range(100))  # rate 0: off


def test_refusal_log_writes_the_first_line_and_then_counts():
    from emotivoice.connector.access import RefusalLog
    clock = FakeClock()
    records = []

    class Sink(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("test.refusals")
    logger.addHandler(Sink())
    refusals = RefusalLog(logger, interval_s=10.0, clock=clock)
    for _ in range(500):
        refusals.note("rate_limited", "refused", "10.0.0.1", {"method": "INVITE"})
    refusals.note("rate_limited", "refused", "10.0.0.2")
    assert [r.remote for r in records] == ["10.0.0.1", "10.0.0.2"] and refusals.counts == {"rate_limited": 501}
    refusals.flush()
    assert len(records) == 2  # within the interval: still held back
    clock.now += 11
    refusals.flush()
    assert len(records) == 3 and records[-1].suppressed == 499 and records[-1].remote == "10.0.0.1"


def test_request_policy_checks_every_method_source_and_new_invites():
    from emotivoice.connector.access import RateLimiter, RefusalLog
    from emotivoice.connector.sipguard import DROP, PASS, Request, RequestPolicy
    policy = RequestPolicy(parse_allow("10.0.0.0/8"), RateLimiter(1.0, 2, clock=FakeClock()),
                           RefusalLog(logging.getLogger("test.policy")))

    def req(method, source="10.0.0.1", new=True, maddr=False):
        return Request(source, 5060, method, new, maddr)

    for method in ("SUBSCRIBE", "OPTIONS", "MESSAGE", "REGISTER", "INVITE", "BYE", "x-junk"):
        assert policy.screen(req(method, "192.0.2.1")).code == 403  # outside the allowlist: any method
    assert policy.screen(req("ACK", "192.0.2.1")) == DROP  # never answer an ACK
    assert policy.screen(req("OPTIONS", "192.0.2.1", maddr=True)) == DROP  # never answer elsewhere
    assert policy.screen(req("", "192.0.2.1")) == DROP  # a response from outside
    assert policy.screen(req("OPTIONS")) == PASS and policy.screen(req("")) == PASS
    refused = policy.limit(req("SUBSCRIBE"))
    assert refused.code == 405 and dict(refused.headers)["Allow"].startswith("INVITE")
    assert policy.limit(req("OPTIONS")) == PASS
    assert [policy.limit(req("INVITE")).code for _ in range(3)] == [0, 0, 503]
    assert policy.limit(req("INVITE", new=False)) == PASS  # a re-INVITE inside a call is not counted
    assert dict(policy.limit(req("INVITE")).headers)["Retry-After"] == "1"
    assert set(policy.checked) <= {"SUBSCRIBE", "OPTIONS", "MESSAGE", "REGISTER", "INVITE", "BYE", "ACK", "other"}


def test_siprec_labels_and_names_from_the_wire_are_bounded_data():
    hostile = SIPREC_INVITE.replace("a=label:in", "a=label:../../x/victim").replace(
        "<name>Carol</name>", f"<name>{'C' * 5000}\x1b[31m</name>")
    summary = summarize_invite(hostile, agent_match="agent")
    assert [leg.leg for leg in summary.legs] == ["audio0", "out"]
    assert all(len(leg.name or "") <= 256 for leg in summary.legs)
    assert all(len(v) <= 256 for v in summary.metadata.values() if isinstance(v, str))


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
    sent = {"agent": rms_envelope(demo_legs[0], 8000), "customer": rms_envelope(demo_legs[1], 8000)}
    for role, other in (("agent", "customer"), ("customer", "agent")):
        leg = roles[role]
        got = rms_envelope(sink.pcm(call.call_id, leg.leg), leg.sample_rate)
        lag = best_lag(sent[role], got)
        assert aligned_corr(sent[role], got, lag) >= 0.9
        assert aligned_corr(sent[other], got, lag) < 0.5
    # the connector reports audio that never arrived; on loopback it is at most a few ticks at the edges
    missing = sink.ended[0].missing_frames
    assert set(missing) == {leg.leg for leg in call.legs}
    assert all(0 <= n < 0.05 * len(demo_legs[0]) / 160 for n in missing.values()), missing


def tone(seconds: float, hz: float = 300.0) -> np.ndarray:
    return (6000 * np.sin(2 * np.pi * hz * np.arange(int(8000 * seconds)) / 8000)).astype(np.int16)


def send_raw_invite(port: int, headers: list[str], body: str = "", timeout_s: float = 2.0) -> list[str]:
    """Send one hand-made INVITE over UDP; the status lines answered to it (until a final one or timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.bind(("127.0.0.1", 0))
        via = f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};rport;branch=z9hG4bK{time.time_ns()}"
        head = [f"INVITE sip:srs@127.0.0.1:{port} SIP/2.0", via, *headers, f"Content-Length: {len(body.encode())}"]
        s.sendto(("\r\n".join(head) + "\r\n\r\n" + body).encode(), ("127.0.0.1", port))
        statuses = []
        try:
            while not statuses or statuses[-1].split()[1].startswith("1"):
                statuses.append(s.recv(65536).decode(errors="replace").split("\r\n", 1)[0])
        except TimeoutError:
            pass
        return statuses


def invite_headers(call_id: str | None = None, cseq: str = "1 INVITE", extra: tuple[str, ...] = ()) -> list[str]:
    headers = ["From: <sip:src@127.0.0.1>;tag=raw1", "To: <sip:srs@127.0.0.1>",
               f"Call-ID: {call_id or f'raw-{time.time_ns()}@127.0.0.1'}", f"CSeq: {cseq}",
               "Contact: <sip:src@127.0.0.1>", "Max-Forwards: 70", *extra]
    return [h for h in headers if not h.endswith(": -")]


@needs_stack
@pytest.mark.slow
def test_plain_call_is_answered_as_one_inbound_leg(tmp_path, monkeypatch):
    sink = CollectingSink()
    conn = connector(sink)
    sender_log = tmp_path / "rtpsend.jsonl"
    monkeypatch.setenv("EMOTIVOICE_RTPSEND_LOG", str(sender_log))
    try:
        result = place_calls("127.0.0.1", conn.port, [tone(2)], siprec=False)
        assert result.invite_responses == [200], result.output
        assert wait_for(lambda: len(sink.ended) == 1)
    finally:
        conn.stop()
    (sent,) = [json.loads(line) for line in sender_log.read_text().splitlines()]
    assert 0 <= sent["start_delay_s"] < 5, sent  # sipp's shell expanded the exec time it passed
    call = sink.started[0]
    assert call.source == "sip" and [(leg.leg, leg.role) for leg in call.legs] == [("inbound", None)]
    got = sink.pcm(call.call_id, "inbound")
    assert len(got) >= 0.9 * 2 * call.legs[0].sample_rate and np.abs(got).max() > 3000


@needs_stack
@pytest.mark.slow
def test_caller_outside_the_allowlist_gets_403_and_no_call_reaches_the_sink():
    sink = CollectingSink()
    conn = connector(sink, allow="10.0.0.0/8")
    try:
        result = place_calls("127.0.0.1", conn.port, [tone(0.2)], siprec=False)
        assert result.invite_responses == [403], result.output
        time.sleep(0.3)
    finally:
        conn.stop()
    assert sink.started == [] and sink.ended == [] and not sink.frames


SDP_OK = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


@needs_stack
@pytest.mark.slow
def test_malformed_invites_get_an_error_response_and_the_connector_keeps_serving(caplog):
    """What pjsip can answer gets a 4xx; what it cannot (RFC 3261 lets it discard) is logged.

    pjsip 2.17 drops, without a response, any request with a header syntax error (sip_transport.c:
    "Dropping N bytes packet ... syntax error") and any without Call-ID/From/To/Via/CSeq
    (PJSIP_EMISSINGHDR): there is no transaction to answer on. Both reach our log as warnings.
    """
    caplog.set_level(logging.WARNING, logger="emotivoice.connector.sip")
    sink = CollectingSink()
    conn = connector(sink)
    try:
        sdp = ["Content-Type: application/sdp"]
        # a broken SDP body: pjsip's invite session refuses it before the call exists
        assert send_raw_invite(conn.port, invite_headers(extra=(*sdp,)), "v=0\r\no=\r\ngarbage\r\n")[-1:] == [
            "SIP/2.0 400 Bad SDP"]
        # no SDP: our onIncomingCall path answers 488 (twice: hanging up an offer-less INVITE inside
        # the callback used to abort the process); a SIPREC body offering only video: pjsua's 488
        for _ in range(2):
            assert send_raw_invite(conn.port, invite_headers())[-1:] == ["SIP/2.0 488 Not Acceptable Here"]
        siprec_no_audio = ("--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP_OK.replace("m=audio", "m=video")
                           + "--b1\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording "
                           'xmlns="urn:ietf:params:xml:ns:recording:1"/>\r\n--b1--\r\n')
        assert send_raw_invite(conn.port, invite_headers(extra=("Content-Type: multipart/mixed;boundary=b1",)),
                               siprec_no_audio)[-1:] == ["SIP/2.0 488 Not Acceptable Here"]
        # a garbled header, and a missing mandatory one (Call-ID; then a CSeq without a number): dropped, logged
        assert send_raw_invite(conn.port, invite_headers(extra=("Max-Forwards: seventy", *sdp)), SDP_OK, 1.0) == []
        assert send_raw_invite(conn.port, invite_headers(call_id="-", extra=(*sdp,)), SDP_OK, 1.0) == []
        assert send_raw_invite(conn.port, invite_headers(cseq="one INVITE", extra=(*sdp,)), SDP_OK, 1.0) == []
        assert wait_for(lambda: sum("syntax error" in r.getMessage() for r in caplog.records) >= 2)
        assert any("Missing required header" in r.getMessage() for r in caplog.records)
        assert sum("no audio stream" in r.getMessage() for r in caplog.records) == 2
        assert sink.started == []
        # and a good call right after is answered and delivered
        result = place_calls("127.0.0.1", conn.port, [tone(1)], siprec=False)
        assert result.invite_responses == [200], result.output
        assert wait_for(lambda: len(sink.ended) == 1)
    finally:
        conn.stop()
    assert len(sink.started) == 1 and np.abs(sink.pcm(sink.started[0].call_id, "inbound")).max() > 3000


@needs_stack
@pytest.mark.slow
def test_digest_auth_refuses_wrong_password_and_answers_right_one():
    sink = CollectingSink()
    conn = connector(sink, auth_user="rec", auth_password="s3cret")
    try:
        wrong = place_calls("127.0.0.1", conn.port, [tone(1)], siprec=False, auth_user="rec", auth_password="nope")
        assert wrong.invite_responses == [401, 401], wrong.output  # challenged, retried, refused: sipp gives up
        assert sink.started == []
        right = place_calls("127.0.0.1", conn.port, [tone(1)], siprec=False, auth_user="rec", auth_password="s3cret")
        assert right.invite_responses == [401, 200], right.output
        assert wait_for(lambda: len(sink.ended) == 1)
    finally:
        conn.stop()
    for result in (wrong, right):
        assert 'WWW-Authenticate: Digest realm="emotivoice"' in result.messages  # the challenge carries its nonce
        assert "CSeq: 2 INVITE" in result.messages and 'Authorization: Digest username="rec"' in result.messages
    assert len(sink.started) == 1 and np.abs(sink.pcm(sink.started[0].call_id, "inbound")).max() > 3000


class TeeSink:
    """Records every frame the connector hands over, then passes everything on to `inner`."""

    def __init__(self, inner):
        self.inner, self.record = inner, CollectingSink()

    def start(self, call):
        self.record.start(call)
        self.inner.start(call)

    def push(self, frame):
        self.record.push(frame)
        return self.inner.push(frame)

    def end(self, call):
        self.record.end(call)
        self.inner.end(call)


@needs_stack
@pytest.mark.slow
def test_siprec_call_is_analysed_live_into_duckdb(tmp_path, demo_legs):
    """sipp SIPREC call -> SipConnector -> LiveEngine (real models) -> StoreServer on a DuckDB file."""
    from dataclasses import replace

    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.config import load_settings
    from emotivoice.storage.server import StoreServer
    from tests.audio_match import envelope_correlation

    base = load_settings(env={})
    settings = replace(base, db_path=tmp_path / "live.duckdb",
                       connector=replace(base.connector, siprec_agent_match="agent"),
                       live=replace(base.live, audio_dir=tmp_path / "calls", finalize="none"))
    server = StoreServer(settings.db_path).start()
    engine = LiveEngine(settings, server).start()
    tee = TeeSink(engine.inbox)
    from emotivoice.connector.sip import SipConnector
    conn = SipConnector(replace(settings.connector, sip_host="127.0.0.1", sip_port=0, rtp_port=0), tee)
    conn.start()
    statuses: list[str] = []
    placing = threading.Event()

    def watch():
        while placing.is_set():
            calls = server.read("list_calls")
            if len(calls):
                statuses.append(calls.status[0])
            time.sleep(0.2)

    try:
        placing.set()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = place_calls("127.0.0.1", conn.port, demo_legs, siprec=True)
        placing.clear()
        watcher.join(5)
        assert result.invite_responses == [200], result.output
        assert wait_for(lambda: len(tee.record.ended) == 1)
        engine.stop(wait_s=120)
        calls = server.read("list_calls")
        call_id = tee.record.started[0].call_id
        utterances = server.read("call_utterances", call_id=call_id)
    finally:
        conn.stop()
        engine.stop(wait_s=1)
        server.close()

    assert "live" in statuses, "the call never showed as live while it ran"
    assert list(calls.call_id) == [call_id] and calls.status[0] == "complete" and calls["mode"][0] == "live"
    assert set(utterances.speaker) == {"agent", "customer"}
    assert utterances.base_emotion.notna().all() and utterances.text.str.strip().str.len().gt(0).all()
    said = {"agent": " ".join(t["text"] for t in DEMO_TURNS if t["speaker"] == "agent" and t["start"] < 12),
            "customer": " ".join(t["text"] for t in DEMO_TURNS if t["speaker"] == "customer" and t["start"] < 12)}
    for speaker, text in said.items():
        heard = " ".join(utterances.text[utterances.speaker == speaker]).lower()
        assert len(set(words(heard)) & set(words(text))) >= 3, (speaker, heard, text)
    # what the engine analysed is what was sent, leg by leg
    legs = {leg.role: leg for leg in tee.record.started[0].legs}
    for i, role in enumerate(("agent", "customer")):
        got = tee.record.pcm(call_id, legs[role].leg)
        assert envelope_correlation(demo_legs[i], got, 8000) >= 0.9
        assert envelope_correlation(demo_legs[1 - i], got, 8000) < 0.5
    assert engine.stats()["dropped_frames"] == 0


@needs_stack
@pytest.mark.slow
@pytest.mark.parametrize("media_path", ["native", "python"])
def test_a_kept_leg_holds_what_sipp_sent_on_either_media_path(tmp_path, demo_legs, media_path):
    """connector.media_path: pjmedia's own WAV writer per leg, read by the tailer (native), or a
    Python port per leg on the media clock. Either way the recording front keeps, per leg, what
    sipp sent (within 0.1 s, benchmarks/recording_match.py), the frames reach it as numbered 20 ms
    frames, a running leg's files are owner-only and nothing is left in .partial afterwards."""
    import wave

    from emotivoice.analysis.live.inbox import FrameInbox
    from emotivoice.analysis.live.messages import CallEnded
    from emotivoice.analysis.live.recording import RecordingFront
    from benchmarks.recording_match import match_leg
    from emotivoice.config import LiveConfig
    from tests.audio_match import envelope_correlation

    audio_dir = tmp_path / "calls"
    front = RecordingFront(LiveConfig(audio_dir=audio_dir), FrameInbox(100_000)).begin()
    sink = CollectingSink()

    class Tee:  # the front records; the collector keeps the frames as the front was handed them
        audio_dir = front.audio_dir

        def start(self, call):
            front.start(call)
            sink.start(call)

        def push(self, frame):
            sink.push(frame)
            return front.push(frame)

        def end(self, call):
            front.end(call)
            sink.end(call)

        def recording(self, call_id):
            return front.recording(call_id)

    conn = connector(Tee(), media_path=media_path)
    modes: list[int] = []
    placing = threading.Thread(target=lambda: place_calls("127.0.0.1", conn.port, demo_legs, siprec=True))
    try:
        placing.start()
        assert wait_for(lambda: len(sink.started) == 1, 10)
        assert wait_for(lambda: len(list((audio_dir / ".partial").glob("*"))) >= 3, 10)
        time.sleep(1.0)
        modes = [p.stat().st_mode & 0o777 for p in (audio_dir / ".partial").iterdir()]
        placing.join(60)
        assert wait_for(lambda: len(sink.ended) == 1, 15)
        stats = conn.stats()
    finally:
        conn.stop()
    call = sink.started[0]
    assert stats["media_path"] == media_path
    assert modes and set(modes) == {0o600}, modes
    ended = None
    deadline = time.monotonic() + 10
    while ended is None and time.monotonic() < deadline:  # the front hands the end on once all is on disk
        msg = front.get(timeout=0.2)
        ended = msg if isinstance(msg, CallEnded) else None
    assert ended is not None and ended.call_id == call.call_id
    recorder, _ = front.recording(call.call_id)
    wav = recorder.finish({})
    front.close()
    with wave.open(str(wav)) as w:
        got = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels()).T
    gaps = 0
    for i, sent in enumerate(demo_legs):  # channels in the INVITE's order: agent, customer
        result = match_leg(sent, got[i], 8000)
        assert result.matches(0.1), (media_path, i, result)
        assert envelope_correlation(demo_legs[1 - i], got[i], 8000) < 0.5
        seqs = [f.seq for f in sink.frames[(call.call_id, call.legs[i].leg)]]
        assert seqs[0] == 0 and all(b > a for a, b in zip(seqs, seqs[1:])), seqs[:20]
        gaps += seqs[-1] + 1 - len(seqs)
        assert {len(f.pcm) for f in sink.frames[(call.call_id, call.legs[i].leg)][:-1]} == {320}  # 20 ms, 8 kHz
    # numbered on the leg's timeline: the only gaps are ticks the media clock skipped (python ports;
    # a loaded CI machine starved it once, stop 26), never frames lost on the way; native legs never skip
    assert gaps == stats.get("clock_skipped_frames", 0), (gaps, stats)
    jitter = stats["jitter_buffer"]  # read from each leg's stream as it went
    assert jitter["legs"] == 2 and jitter["rtp_lost_packets"] == 0, jitter  # loopback loses no packet
    if media_path == "native":  # a fixed playout delay (connector.jitter_buffer_ms) that drops nothing
        assert gaps == 0, stats
        assert jitter["fixed_ms"] == 200 and jitter["fixed_legs"] == 2 and jitter["discarded_frames"] == 0, jitter
    else:  # pjmedia's adaptive buffer, which sheds what a starved clock leaves behind
        assert jitter["fixed_ms"] == 0 and jitter["fixed_legs"] == 0, jitter
    assert not list((audio_dir / ".partial").iterdir())
    missing = sink.ended[0].missing_frames
    assert all(0 <= n < 0.05 * len(demo_legs[0]) / 160 for n in missing.values()), missing
