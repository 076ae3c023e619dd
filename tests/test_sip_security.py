"""The SIP connector's TLS signalling and SRTP media against real calls placed by baresip.

Debian's sipp is built without OpenSSL (no `-t l1`) and sends no SRTP, so the caller here is
baresip (`apt-get install baresip`): SIP over TLS, SDES-SRTP (RTP/SAVP with a=crypto, account
param mediaenc=srtp-mand), a WAV played as the microphone (module aufile), headless (no stdio UI),
dialling from its command line. Its SIP trace (-s) shows the transport and both SDPs, which the
tests check. A throwaway self-signed certificate comes from the openssl binary.

Skipped when baresip, openssl or pjsua2 is missing, except under CI (env CI set), where that is a
failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from emotivoice.config import ConnectorConfig
from tests.audio_match import CollectingSink, envelope_correlation

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo" / "demo_call.opus"
BARESIP_MODULES = "/usr/lib/baresip/modules"

try:
    import pjsua2  # noqa: F401
    HAVE_PJSUA2 = True
except ImportError:
    HAVE_PJSUA2 = False

_missing = [name for name, ok in (("baresip", shutil.which("baresip") is not None),
                                  ("openssl", shutil.which("openssl") is not None),
                                  ("pjsua2", HAVE_PJSUA2)) if not ok]
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"CI needs {', '.join(_missing)} for tests/test_sip_security.py")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_missing), reason=f"missing {', '.join(_missing)}")]


@dataclass
class BaresipCall:
    returncode: int
    output: str  # baresip's log with its SIP trace

    def sent(self, transport: str, to_port: int, method: str) -> str:
        """The first `method` request baresip sent over `transport` to our port, or ''."""
        return self._message(rf"{transport} \S+ -> \S+:{to_port}", f"{method} ")

    def answer(self, transport: str, from_port: int, status: str) -> str:
        """The first response with `status` (e.g. '200 OK') sent to baresip from our port, or ''."""
        return self._message(rf"{transport} \S+:{from_port} -> \S+", f"SIP/2.0 {status}")

    def _message(self, route: str, first_line: str) -> str:
        """A SIP message in the trace: '#', then 'TLS a -> b', then the message (and later log lines)."""
        for block in self.output.split("\n#\n"):
            head = block.split("\n", 2)
            if len(head) >= 2 and re.fullmatch(route, head[0].strip()) and head[1].startswith(first_line):
                return block
        return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """A throwaway self-signed certificate and key for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture(scope="module")
def speech():
    """4 s of the demo agent's speech, 8 kHz int16 (what PCMU carries)."""
    from emotivoice.analysis.audio import load_audio, to_8k_pcm16
    return to_8k_pcm16(load_audio(DEMO, channels=2)[0, : 16000 * 4])


def connector(sink, **overrides):
    from emotivoice.connector.sip import SipConnector
    cfg = ConnectorConfig(sip_host="127.0.0.1", sip_port=0, rtp_port=0, **overrides)
    conn = SipConnector(cfg, sink)
    conn.start()
    return conn


def baresip_call(workdir: Path, uri: str, pcm: np.ndarray, *, mediaenc: str = "", cafile: Path | None = None,
                 timeout_s: float = 20.0) -> BaresipCall:
    """Dial `uri` with baresip playing `pcm` (8 kHz) as PCMU; return once the call is over.

    baresip hangs up when the file ends (menu: audio error, end of file) but stays running, so it is
    stopped with SIGTERM once its log shows the call terminated or refused.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    wav = workdir / "source.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.astype("<i2").tobytes())
    params = ";regint=0;audio_codecs=PCMU" + (f";mediaenc={mediaenc}" if mediaenc else "")
    (workdir / "accounts").write_text(f"<sip:caller@127.0.0.1>{params}\n")
    (workdir / "config").write_text("\n".join([
        f"module_path {BARESIP_MODULES}",
        f"sip_listen 127.0.0.1:{free_port()}",
        f"sip_cafile {cafile}" if cafile else "",
        "net_interface 127.0.0.1",  # its SDP names this address, not the host's
        f"audio_source aufile,{wav}",
        "audio_player aubridge,nowhere",  # nothing plays what we receive
        "audio_alert aubridge,nowhere",
        "module g711.so", "module aufile.so", "module aubridge.so", "module srtp.so",
        "module_app account.so", "module_app menu.so", ""]))
    log_path = workdir / "baresip.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(["baresip", "-s", "-f", str(workdir), "-e", f"/dial {uri}", "-t", str(int(timeout_s))],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            done = re.compile(rb"terminated \(duration|session closed|call: could not|ua: stop all")
            while time.monotonic() < deadline and proc.poll() is None and not done.search(log_path.read_bytes()):
                time.sleep(0.1)
            time.sleep(0.3)  # the BYE's 200 OK
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_bytes().decode("utf-8", "replace")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours
    text = "\n".join(line for line in text.splitlines() if "bit/s)" not in line)  # the status line
    return BaresipCall(proc.returncode, text)


def wait_for(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cond():
        time.sleep(0.05)
    return cond()


def only_leg(sink) -> np.ndarray:
    assert len(sink.started) == 1, sink.started
    (leg,) = sink.started[0].legs
    assert leg.leg == "inbound" and leg.sample_rate == 8000
    return sink.pcm(sink.started[0].call_id, "inbound")


def is_srtp_offer_or_answer(block: str) -> bool:
    return bool(re.search(r"^m=audio \d+ RTP/SAVP ", block, re.M)) and "a=crypto:" in block


# -- TLS -----------------------------------------------------------------------------------------

def test_call_over_tls_is_answered_and_its_audio_reaches_the_sink(tmp_path, tls_cert, speech):
    cert, key = tls_cert
    sink = CollectingSink()
    conn = connector(sink, sip_tls_port=free_port(), tls_cert_file=str(cert), tls_key_file=str(key))
    try:
        assert conn.tls_port
        call = baresip_call(tmp_path, f"sip:emotivoice@127.0.0.1:{conn.tls_port};transport=tls", speech,
                            cafile=cert)
        assert wait_for(lambda: sink.ended), call.output[-3000:]
    finally:
        conn.stop()
    invite = call.sent("TLS", conn.tls_port, "INVITE")
    assert invite, f"no INVITE over TLS to port {conn.tls_port}:\n{call.output[-3000:]}"
    assert call.answer("TLS", conn.tls_port, "200 OK"), call.output[-3000:]
    assert call.sent("TLS", conn.tls_port, "BYE")
    assert sink.ended[0].reason.startswith("200")
    got = only_leg(sink)
    assert len(got) >= 0.8 * len(speech)
    assert envelope_correlation(speech, got, 8000) >= 0.9


def test_tls_with_mandatory_srtp_carries_the_keys_inside_tls(tmp_path, tls_cert, speech):
    cert, key = tls_cert
    sink = CollectingSink()
    conn = connector(sink, sip_tls_port=free_port(), tls_cert_file=str(cert), tls_key_file=str(key),
                     srtp="mandatory")
    try:
        call = baresip_call(tmp_path, f"sip:emotivoice@127.0.0.1:{conn.tls_port};transport=tls", speech,
                            mediaenc="srtp-mand", cafile=cert)
        assert wait_for(lambda: sink.ended), call.output[-3000:]
    finally:
        conn.stop()
    assert is_srtp_offer_or_answer(call.sent("TLS", conn.tls_port, "INVITE")), call.output[-3000:]
    assert is_srtp_offer_or_answer(call.answer("TLS", conn.tls_port, "200 OK")), call.output[-3000:]
    assert envelope_correlation(speech, only_leg(sink), 8000) >= 0.9


# -- SRTP ----------------------------------------------------------------------------------------

def test_mandatory_srtp_refuses_a_plain_rtp_caller_with_488(tmp_path, speech):
    sink = CollectingSink()
    conn = connector(sink, srtp="mandatory")
    try:
        call = baresip_call(tmp_path, f"sip:emotivoice@127.0.0.1:{conn.port}", speech[:8000])
        time.sleep(0.2)
    finally:
        conn.stop()
    invite = call.sent("UDP", conn.port, "INVITE")
    assert invite and re.search(r"^m=audio \d+ RTP/AVP ", invite, re.M) and "a=crypto" not in invite
    assert call.answer("UDP", conn.port, "488"), call.output[-3000:]
    assert not call.answer("UDP", conn.port, "200 OK")
    assert sink.started == [] and not sink.frames


def test_mandatory_srtp_answers_an_sdes_caller_and_decrypts_its_audio(tmp_path, speech):
    sink = CollectingSink()
    conn = connector(sink, srtp="mandatory")
    try:
        call = baresip_call(tmp_path, f"sip:emotivoice@127.0.0.1:{conn.port}", speech, mediaenc="srtp-mand")
        assert wait_for(lambda: sink.ended), call.output[-3000:]
    finally:
        conn.stop()
    assert is_srtp_offer_or_answer(call.sent("UDP", conn.port, "INVITE")), call.output[-3000:]
    assert is_srtp_offer_or_answer(call.answer("UDP", conn.port, "200 OK")), call.output[-3000:]
    assert "SRTP is Enabled" in call.output
    got = only_leg(sink)
    assert len(got) >= 0.8 * len(speech)
    assert envelope_correlation(speech, got, 8000) >= 0.9  # noise, had it not been decrypted


# -- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"srtp": "mandtory"}, "connector.srtp must be one of"),
    ({"sip_tls_port": 5061}, "tls_cert_file is not"),
    ({"sip_tls_port": 5061, "tls_cert_file": "/nonexistent/cert.pem", "tls_key_file": "/nonexistent/key.pem"},
     "missing or unreadable"),
])
def test_tls_or_srtp_asked_for_but_unusable_fails_instead_of_running_without(overrides, message):
    from emotivoice.connector.sip import SipConnector
    with pytest.raises(ValueError, match=message):
        SipConnector(ConnectorConfig(sip_host="127.0.0.1", sip_port=0, rtp_port=0, **overrides), CollectingSink())
