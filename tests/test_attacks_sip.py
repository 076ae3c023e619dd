"""Attacks on the SIP connector, replayed against the real thing over loopback (issue 10, findings 1 and 6).

Real sipp and hand-made SIP packets against a real SipConnector (pjsua2); the hostile Call-ID goes
on through the real LiveEngine and recorder into a real DuckDB file. Everything is sent to
127.0.0.x only, bounded in count; nothing asserts on time.

Skipped when sipp or pjsua2 is missing, except under CI (env CI set), where that is a failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emotivoice.connector.access import LOG_INTERVAL_S
from emotivoice.connector.sipp import flood_invites, place_calls
from emotivoice.storage.files import check_call_id
from tests.audio_match import CollectingSink
from tests.test_sip import SIPREC_INVITE, TeeSink, connector, needs_stack, tone, wait_for

pytestmark = [pytest.mark.slow, needs_stack]


# -- hand-made requests ------------------------------------------------------------------------

def sip_request(method: str, port: int, src: tuple[str, int], transport: str = "UDP", in_dialog: bool = False,
                extra: tuple[str, ...] = (), body: str = "") -> bytes:
    host, src_port = src
    tag = ";tag=ours1" if in_dialog else ""
    lines = [f"{method} sip:emotivoice@127.0.0.1:{port} SIP/2.0",
             f"Via: SIP/2.0/{transport} {host}:{src_port};rport;branch=z9hG4bK{random.getrandbits(48):x}",
             f"From: <sip:x@{host}>;tag=theirs1", f"To: <sip:emotivoice@127.0.0.1>{tag}",
             f"Call-ID: attack-{random.getrandbits(48):x}", f"CSeq: 1 {method}", f"Contact: <sip:x@{host}:{src_port}>",
             "Max-Forwards: 70", *extra, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


def start_lines(data: bytes) -> list[str]:
    """The first line of every SIP message in `data` (one datagram, or a TCP stream's worth)."""
    text = data.decode(errors="replace")
    return [line for line in text.split("\r\n") if line.startswith("SIP/2.0 ") or line.endswith(" SIP/2.0")]


def _final(lines: list[str]) -> bool:
    return any(line.startswith("SIP/2.0 ") and not line.startswith("SIP/2.0 1") for line in lines)


def udp_exchange(port: int, src_ip: str, build, linger_s: float = 0.4) -> list[str]:
    """Send build((src_ip, our_port)) over UDP; what comes back until a final response and `linger_s`
    more (so a NOTIFY sent after it would be seen), or 3 s without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src_ip, 0))
        s.sendto(build(s.getsockname()), ("127.0.0.1", port))
        got: list[str] = []
        s.settimeout(3.0)
        try:
            while True:
                got += start_lines(s.recv(65536))
                if _final(got):
                    s.settimeout(linger_s)
        except TimeoutError:
            return got


def tcp_exchange(port: int, src_ip: str, build, linger_s: float = 0.4) -> list[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((src_ip, 0))
        s.settimeout(3.0)
        s.connect(("127.0.0.1", port))
        s.sendall(build(s.getsockname()))
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if _final(start_lines(data)):
                    s.settimeout(linger_s)
        except TimeoutError:
            pass
        return start_lines(data)


OFFERS = {"SUBSCRIBE": ("Event: presence", "Expires: 60", "Accept: application/pidf+xml"),
          "OPTIONS": (), "MESSAGE": ("Content-Type: text/plain",), "REGISTER": ("Expires: 60",),
          "PUBLISH": ("Event: presence", "Expires: 60"), "REFER": ("Refer-To: <sip:victim@127.0.0.9>",),
          "NOTIFY": ("Event: message-summary", "Subscription-State: active")}


# -- finding 1: the Call-ID names nothing ------------------------------------------------------

def tree(root: Path, skip: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root` outside `skip`, with its mtime and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


def test_hostile_call_id_writes_nothing_outside_the_data_dir_and_is_kept_as_data(tmp_path):
    """sipp -> SipConnector -> LiveEngine (recorder on) -> StoreServer on a DuckDB file."""
    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.connector.sip import SipConnector
    from emotivoice.config import load_settings
    from emotivoice.storage.server import StoreServer

    data, victims = tmp_path / "data", tmp_path / "x"
    victims.mkdir()
    for name in ("victim.json", "victim.wav", "victim.inbound.raw", "victim.0.raw", "victim"):
        (victims / name).write_bytes(f"precious {name}\n".encode())
    hostile = ["../../../x/victim", str(victims / "victim"), "..%2F..%2F..%2Fx%2Fvictim"]
    before = tree(tmp_path, data)

    base = load_settings(env={})
    settings = replace(base, db_path=data / "live.duckdb",
                       live=replace(base.live, audio_dir=data / "calls", finalize="none", transcribe=False))
    server = StoreServer(settings.db_path).start()
    engine = LiveEngine(settings, server).start()
    tee = TeeSink(engine.inbox)
    conn = SipConnector(replace(settings.connector, sip_host="127.0.0.1", sip_port=0, rtp_port=0), tee)
    conn.start()
    try:
        for n, call_id in enumerate(hostile, 1):
            result = place_calls("127.0.0.1", conn.port, [tone(1.5)], siprec=n == 1, call_id=call_id)
            assert result.invite_responses == [200], result.output
            assert f"Call-ID: {call_id}" in result.messages  # sipp really sent the hostile value
            assert wait_for(lambda: len(tee.record.ended) == n, 10)
        engine.stop(wait_s=60)
        calls = server.read("list_calls")
    finally:
        conn.stop()
        engine.stop(wait_s=1)
        server.close()

    assert tree(tmp_path, data) == before, "a file outside the data dir was touched"
    ours = [call.call_id for call in tee.record.started]
    assert sorted(calls.call_id) == sorted(ours) and len(ours) == len(hostile)
    for call, call_id in zip(tee.record.started, hostile):
        assert check_call_id(call.call_id) and call.call_id.startswith(("sip-", "siprec-"))
        assert call.metadata["external"]["sip_call_id"] == call_id
    sidecars = {p.stem: json.loads(p.read_text()) for p in (data / "calls").rglob("*.json")}
    assert set(sidecars) == set(ours)  # the recordings are named by our ids, and only those
    assert sorted(s["external"]["sip_call_id"] for s in sidecars.values()) == sorted(hostile)


# -- finding 6: the allowlist applies to every request ------------------------------------------

def test_every_request_from_outside_the_allowlist_is_refused_and_creates_nothing(caplog):
    caplog.set_level(logging.WARNING, logger="emotivoice.connector.sip")
    sink = CollectingSink()
    conn = connector(sink, allow="127.0.0.2/32")  # 127.0.0.1 is outside
    try:
        for method, extra in OFFERS.items():
            body = "hello" if method == "MESSAGE" else ""
            for in_dialog in (False, True):
                got = udp_exchange(conn.port, "127.0.0.1",
                                   lambda src: sip_request(method, conn.port, src, "UDP", in_dialog, extra, body))
                assert got == ["SIP/2.0 403 Forbidden"], (method, in_dialog, got)  # and no NOTIFY follows
            got = tcp_exchange(conn.port, "127.0.0.1", lambda src: sip_request(method, conn.port, src, "TCP",
                                                                                False, extra, body))
            assert got == ["SIP/2.0 403 Forbidden"], (method, "tcp", got)
        refused = place_calls("127.0.0.1", conn.port, [tone(0.3)], siprec=False)
        assert refused.invite_responses == [403], refused.output
        # a request pretending to be inside a call (BYE with tags) is refused the same way
        assert udp_exchange(conn.port, "127.0.0.1", lambda src: sip_request("BYE", conn.port, src, in_dialog=True)) \
            == ["SIP/2.0 403 Forbidden"]

        # the allowed address: OPTIONS answered, the rest are methods we do not serve, no NOTIFY
        got = udp_exchange(conn.port, "127.0.0.2", lambda src: sip_request("OPTIONS", conn.port, src))
        assert got == ["SIP/2.0 200 OK"]
        for method in ("SUBSCRIBE", "MESSAGE", "REGISTER", "REFER", "PUBLISH", "NOTIFY"):
            got = udp_exchange(conn.port, "127.0.0.2",
                               lambda src: sip_request(method, conn.port, src, extra=OFFERS[method]))
            assert got == ["SIP/2.0 405 Method Not Allowed"], (method, got)

        # a burst of refusals is counted, not logged line by line
        logged, counted = len(caplog.records), conn.stats()["refused"]["not_allowed"]
        burst_started = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for _ in range(200):
                s.sendto(sip_request("OPTIONS", conn.port, s.getsockname()), ("127.0.0.1", conn.port))
                time.sleep(0.001)  # paced, so the kernel's socket buffer keeps most of them
        # (UDP: the kernel may drop some of a burst before pjsip reads them)
        assert wait_for(lambda: conn.stats()["refused"]["not_allowed"] >= counted + 100)
        burst_s = time.monotonic() - burst_started
        burst_lines = [r for r in caplog.records[logged:] if r.getMessage().startswith("SIP request refused")]
        stats = conn.stats()
    finally:
        conn.stop()
    assert sink.started == [] and sink.ended == [] and not sink.frames
    assert stats["guard"] and stats["layout_errors"] == 0
    assert stats["refused"]["method"] >= 6
    lines = [r for r in caplog.records if r.getMessage().startswith("SIP request refused: source not allowed")]
    assert lines and all(r.remote == "127.0.0.1" for r in lines)
    assert len(burst_lines) <= 1 + burst_s / LOG_INTERVAL_S, "one log line per refusal"


# -- finding 6: floods are cut off, a good call still gets through --------------------------------

def test_invite_flood_gets_503_beyond_the_burst_and_a_good_call_from_elsewhere_is_answered(caplog, tmp_path):
    """sipp flood + a good call -> SipConnector -> LiveEngine -> StoreServer: only the good call is stored."""
    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.config import load_settings
    from emotivoice.storage.server import StoreServer

    caplog.set_level(logging.WARNING, logger="emotivoice.connector.sip")
    rate, burst, invites = 2.0, 10, 150
    base = load_settings(env={})
    settings = replace(base, db_path=tmp_path / "live.duckdb",
                       live=replace(base.live, audio_dir=tmp_path / "calls", finalize="none", transcribe=False))
    server = StoreServer(settings.db_path).start()
    engine = LiveEngine(settings, server).start()
    tee = TeeSink(engine.inbox)
    sink = tee.record
    conn = connector(tee, allow="127.0.0.0/8", invite_rate_per_s=rate, invite_burst=burst, no_media_timeout_s=3)
    flood: list = []
    flooder = threading.Thread(target=lambda: flood.append(
        flood_invites("127.0.0.1", conn.port, invites, 50, hold_s=15)), daemon=True)
    try:
        flooder.start()
        assert wait_for(lambda: conn.stats()["refused"].get("rate_limited", 0) > 0, 30), "the flood never started"
        good = place_calls("127.0.0.1", conn.port, [tone(2)], siprec=False, local_ip="127.0.0.2")
        assert good.invite_responses == [200], good.output
        assert wait_for(lambda: len(sink.ended) == 1, 10)
        flooder.join(60)
        assert flood, "sipp flood did not finish"
        # answered flood calls sent no media: we hang them up, they never reach the sink
        assert wait_for(lambda: conn.active_calls == 0, 15)
        stats = conn.stats()
        engine.stop(wait_s=60)
        stored = server.read("list_calls")
    finally:
        conn.stop()
        engine.stop(wait_s=1)
        server.close()
    assert list(stored.call_id) == [sink.started[0].call_id]  # the good call is stored, the flood is not
    result = flood[0]
    answered, limited = result.invite_responses.count(200), result.invite_responses.count(503)
    assert answered + limited == invites, result.invite_responses
    assert burst <= answered <= burst + rate * result.elapsed_s + 1
    assert "Retry-After:" in result.messages
    assert stats["refused"]["rate_limited"] >= limited
    assert stats["calls_without_media"] == answered
    assert len(sink.started) == 1 and sink.started[0].remote.startswith("127.0.0.2")
    assert np.abs(sink.pcm(sink.started[0].call_id, "inbound")).max() > 3000
    lines = [r for r in caplog.records if r.getMessage().startswith("SIP call refused: INVITE rate limit")]
    assert 1 <= len(lines) <= 2 and all(r.remote == "127.0.0.1" for r in lines)


# -- a bounded fuzz run ------------------------------------------------------------------------

def _templates(port: int) -> list[str]:
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 40000 RTP/AVP 0 9\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
    src = ("127.0.0.1", 5999)
    out = [sip_request(m, port, src, extra=OFFERS.get(m, ())).decode() for m in
           ("OPTIONS", "BYE", "ACK", "CANCEL", "REGISTER", "SUBSCRIBE", "INFO", "UPDATE", "PRACK")]
    out.append(sip_request("INVITE", port, src, extra=("Content-Type: application/sdp",), body=sdp).decode())
    head, _, body = SIPREC_INVITE.partition("\r\n\r\n")
    out.append(head.replace("sip:srs@10.0.0.2", f"sip:srs@127.0.0.1:{port}") +
               f"\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKsr\r\nCSeq: 1 INVITE\r\nContent-Length: "
               f"{len(body.encode())}\r\n\r\n{body}")
    out.append("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
               "To: <sip:c@d>;tag=2\r\nCall-ID: r1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n")
    return out


_IDS = re.compile(r"(branch=z9hG4bK|Call-ID: |;tag=)[0-9a-zA-Z.-]+")


def mutate(rng: random.Random, message: str) -> bytes:
    """One hostile variant of `message` (or plain junk), with fresh branch, Call-ID and tags so each
    is a new transaction and dialog rather than a retransmission of the last."""
    message = _IDS.sub(lambda m: m.group(1) + f"{rng.getrandbits(40):x}", message)
    kind = rng.randrange(10)
    data = message.encode()
    lines = message.split("\r\n")
    if kind == 0:  # flipped bytes
        buf = bytearray(data)
        for _ in range(rng.randint(1, 12)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf)
    if kind == 1:  # cut short
        return data[: rng.randrange(len(data))]
    if kind == 2:  # a line repeated or dropped
        i = rng.randrange(len(lines))
        lines = lines[:i] + lines[i:i + 1] * rng.choice((0, 2, 30)) + lines[i + 1:]
    elif kind == 3:  # a header value replaced with junk: long, control characters, non-ASCII, quotes
        i = rng.randrange(1, max(2, len(lines) - 2))
        name = lines[i].split(":", 1)[0] if ":" in lines[i] else "X-Junk"
        junk = rng.choice(["A" * rng.choice((300, 3000, 9000)), "\x00\x01\x7f", "ünï©ødé", '"<>;;==,,@@', "%s%n%x",
                           "../../etc/passwd", "-1", "99999999999999999999", " ", "sip:" + "@" * 200])
        lines[i] = f"{name}: {junk}"
    elif kind == 4:  # another method, or a broken start line
        method = rng.choice(["INVITE", "FOO", "", "invite", "I" * 200, "BYE BYE", "SIP/2.0", "\x00"])
        lines[0] = rng.choice([f"{method} sip:x@127.0.0.1 SIP/2.0", f"{method} SIP/3.0", method])
    elif kind == 5:  # Content-Length lies
        lines = [ln for ln in lines if not ln.lower().startswith(("content-length", "l:"))]
        lines.insert(1, f"Content-Length: {rng.choice(['-5', '0', '100000', 'x', '4294967297', ''])}")
    elif kind == 6:  # compact and folded headers
        lines = [("i:" + ln[8:] if ln.startswith("Call-ID:") else ln) for ln in lines]
        lines.insert(rng.randrange(1, len(lines)), " folded continuation")
    elif kind == 7:
        return rng.randbytes(rng.randrange(1, 1500))
    elif kind == 8:
        return rng.choice([b"\r\n\r\n", b"\r\n", b"", b"SIP/2.0", b"\x00" * 64])
    else:  # a SIPREC body scrambled
        body = message.partition("\r\n\r\n")[2]
        return (message.partition("\r\n\r\n")[0] + "\r\n\r\n").encode() + bytes(rng.sample(body.encode(),
                                                                                          len(body.encode())))
    return "\r\n".join(lines).encode()


def test_bounded_sip_fuzz_leaves_the_connector_answering_a_good_call():
    rng = random.Random(20261202)
    sink = CollectingSink()
    conn = connector(sink, allow="127.0.0.1/32,127.0.0.2/32", no_media_timeout_s=2)
    templates = _templates(conn.port)
    sent = {"udp": 0, "tcp": 0}
    deadline = time.monotonic() + 60  # a bound, not an assertion
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as allowed, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outsider:
            allowed.bind(("127.0.0.1", 0))
            outsider.bind(("127.0.0.5", 0))
            for i in range(2400):
                if time.monotonic() > deadline:
                    break
                sock = outsider if i % 5 == 4 else allowed
                sock.sendto(mutate(rng, rng.choice(templates))[:65000], ("127.0.0.1", conn.port))
                sent["udp"] += 1
                if i % 25 == 0:
                    time.sleep(0.005)  # let pjsip read; the socket buffer would drop the rest
        for _ in range(30):
            if time.monotonic() > deadline:
                break
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((rng.choice(["127.0.0.1", "127.0.0.5"]), 0))
                s.settimeout(5.0)
                s.connect(("127.0.0.1", conn.port))
                s.setblocking(False)
                for _ in range(20):
                    try:
                        s.sendall(mutate(rng, rng.choice(templates)).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
                        sent["tcp"] += 1
                        s.recv(65536)
                    except (BlockingIOError, ConnectionError, OSError):
                        pass
        assert sent["udp"] + sent["tcp"] >= 2000
        assert conn._thread is not None and conn._thread.is_alive()
        good = place_calls("127.0.0.1", conn.port, [tone(1.5)], siprec=False, local_ip="127.0.0.2")
        assert good.invite_responses == [200], good.output
        assert wait_for(lambda: len(sink.ended) >= 1, 10)
        stats = conn.stats()
    finally:
        conn.stop()
    assert stats["layout_errors"] == 0
    answered = [c for c in sink.started if c.remote.startswith("127.0.0.2")]
    assert len(answered) == 1 and np.abs(sink.pcm(answered[0].call_id, "inbound")).max() > 3000
    assert len(sink.started) == 1, "a fuzzed INVITE without media reached the sink"
