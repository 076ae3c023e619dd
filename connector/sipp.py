"""Place real SIP or SIPREC calls with Debian's sipp (`apt-get install sip-tester`).

sipp sends the INVITE (for SIPREC: multipart SDP with one labelled send-only m-line per leg, plus
RFC 7865 rs-metadata naming the participants), answers a 401 digest challenge when given
credentials, and once answered reads the RTP address and ports of every stream from our 200 OK and
<exec>s connector/rtpsend.py, which sends each leg as G.711 u-law RTP paced at 20 ms. That covers
the second (and any further) stream, which sipp's own play_pcap_audio cannot address, and needs no
root. sipp then waits for the audio to finish and sends BYE. Used by tests, launch.py's demo call and
the N-simultaneous-calls benchmark (calls=N starts them all at once).
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotivoice.connector.mulaw import pcm16_to_mulaw
from emotivoice.connector.siprec import parse_sip

RTPSEND = Path(__file__).resolve().parent / "rtpsend.py"
DEFAULT_PARTICIPANTS = (("Agent Alice", "sip:agent-1001@contact.example"),
                        ("Customer Bob", "sip:+15550100@pstn.example"))


@dataclass(frozen=True)
class CallPlan:
    """What to send: one 8 kHz int16 array (or audio file path) per leg."""

    legs: list
    siprec: bool = True
    calls: int = 1
    participants: tuple[tuple[str, str], ...] = DEFAULT_PARTICIPANTS  # (name, AOR) per leg
    auth_user: str = ""
    auth_password: str = ""
    transport: str = "u1"  # sipp -t: u1 (UDP), t1 (TCP)
    tail_s: float = 0.5  # kept open after the audio before BYE


@dataclass
class PlaceResult:
    returncode: int
    invite_responses: list[int]  # final status codes answered to INVITEs, in order
    elapsed_s: float
    output: str = ""
    messages: str = field(default="", repr=False)

    @property
    def answered(self) -> int:
        return self.invite_responses.count(200)


def have_sipp() -> bool:
    return shutil.which("sipp") is not None


def _leg_pcm(leg) -> np.ndarray:
    if isinstance(leg, np.ndarray):
        return leg.astype(np.int16)
    from emotivoice.analysis.audio import load_audio, to_8k_pcm16

    return to_8k_pcm16(load_audio(leg, channels=1)[0])


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# sipp binds four media ports from -mp (audio RTP and RTCP, video RTP and RTCP; a SIPREC call's
# second leg is offered on the third). A free ephemeral port said nothing of the three above it,
# which the RTP senders' sockets, other sipp processes and the service's RTP ports (from 40000)
# also take: at 40 calls one sipp died with "Unable to bind video RTP socket". Blocks of four are
# handed out in turn from below the ephemeral range, each checked whole.
MEDIA_PORTS = range(20000, 32000, 4)
_media_lock = threading.Lock()
_media_next = [random.randrange(len(MEDIA_PORTS))]


def _free_media_ports() -> int:
    """The first of four consecutive UDP ports free now, not handed to another sipp of this process lately."""
    with _media_lock:
        for _ in range(len(MEDIA_PORTS)):
            base = MEDIA_PORTS[_media_next[0] % len(MEDIA_PORTS)]
            _media_next[0] += 1
            if all(_udp_free(base + k) for k in range(4)):
                return base
    return _free_udp_port()


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sdp(n_legs: int, siprec: bool) -> str:
    lines = ["v=0", "o=- 1 1 IN IP[local_ip_type] [local_ip]", "s=-", "c=IN IP[media_ip_type] [media_ip]", "t=0 0"]
    for i in range(n_legs):
        lines += [f"m=audio [media_port+{2 * i}] RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "a=ptime:20"]
        lines += [f"a=label:{i + 1}", "a=sendonly"] if siprec else ["a=sendrecv"]
    return "\n".join(lines)


def _metadata(participants: tuple[tuple[str, str], ...]) -> str:
    n = len(participants)
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<recording xmlns="urn:ietf:params:xml:ns:recording:1">',
           "<datamode>complete</datamode>", '<session session_id="c2lwcC1zZXNzaW9u"></session>']
    for i, (name, aor) in enumerate(participants):
        out.append(f'<participant participant_id="cD{i}"><nameID aor="{aor}"><name>{name}</name></nameID>'
                   '</participant>')
    for i in range(n):
        out.append(f'<stream stream_id="c3{i}" session_id="c2lwcC1zZXNzaW9u"><label>{i + 1}</label></stream>')
    for i in range(n):
        recv = "".join(f"<recv>c3{j}</recv>" for j in range(n) if j != i)
        out.append(f'<participantstreamassoc participant_id="cD{i}"><send>c3{i}</send>{recv}</participantstreamassoc>')
    out.append("</recording>")
    return "\n".join(out)


def _invite(plan: CallPlan, cseq: int, auth: bool) -> str:
    n = len(plan.legs)
    head = ["INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            '"SRC" <sip:src@[local_ip]:[local_port]>;tag=[pid]T[call_number]'.join(["From: ", ""]),
            "To: <sip:srs@[remote_ip]:[remote_port]>", "Call-ID: [call_id]", f"CSeq: {cseq} INVITE",
            "Contact: <sip:src@[local_ip]:[local_port];transport=[transport]>" + (";+sip.src" if plan.siprec else ""),
            "Max-Forwards: 70", "User-Agent: emotivoice-sipp"]
    if auth:
        head.append("[authentication]")
    if plan.siprec:
        head += ["Require: siprec", "Content-Type: multipart/mixed;boundary=ev-boundary", "Content-Length: [len]", ""]
        body = ["--ev-boundary", "Content-Type: application/sdp", "", _sdp(n, True), "--ev-boundary",
                "Content-Type: application/rs-metadata+xml", "Content-Disposition: recording-session", "",
                _metadata(plan.participants[:n]), "--ev-boundary--"]
    else:
        head += ["Content-Type: application/sdp", "Content-Length: [len]", ""]
        body = [_sdp(n, False)]
    return "\n".join(head + body) + "\n"


def _ack(cseq: int, txn: str) -> str:
    return f"""<send ack_txn="{txn}"><![CDATA[
ACK sip:srs@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>"""


def _finals(refused_label: str, txn: str, challenged_label: str = "") -> str:
    """Optional receives for provisional and refusing responses; a 401 may instead be answered."""
    lines = []
    for c in (100, 180, 183, 401, 403, 404, 407, 415, 420, 480, 486, 488, 500, 503, 603):
        attrs = f'response="{c}" optional="true" response_txn="{txn}"'
        if c == 401 and challenged_label:
            attrs += f' auth="true" next="{challenged_label}"'
        elif c >= 200:
            attrs += f' next="{refused_label}"'
        lines.append(f"<recv {attrs}/>")
    return "\n".join(lines)


def _answered(n_legs: int, ulaw: list[Path], duration_s: float, tail_s: float, txn: str) -> str:
    ports = "(.|[[:space:]])*".join(["m=audio ([0-9]+)"] * n_legs)
    # whole match and the gaps between m-lines are groups too; sipp wants every variable used twice
    names = ",".join(["junk"] + [f"p{i},junk" for i in range(n_legs)]).rsplit(",", 1)[0]
    targets = " ".join(f"[$p{i}]:{path}" for i, path in enumerate(ulaw))
    return f"""<recv response="200" rrs="true" response_txn="{txn}">
<action>
<ereg regexp="{ports}" search_in="body" check_it="true" assign_to="{names}"/>
<ereg regexp="c=IN IP[46] ([0-9a-fA-F.:]+)" search_in="body" check_it="true" assign_to="junk,rtp_host"/>
<ereg regexp="([0-9]+) INVITE" search_in="hdr" header="CSeq:" check_it="true" assign_to="junk,cseq"/>
</action>
</recv>
<send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: [$cseq] ACK
Max-Forwards: 70
Content-Length: 0

]]>
<action><exec command="{sys.executable} {RTPSEND} --exec-at $(date +%s.%N) [$rtp_host] {targets}"/></action>
</send>
<pause milliseconds="{int((duration_s + tail_s) * 1000)}"/>
<send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 100 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200" crlf="true" next="done"/>"""


def scenario_xml(plan: CallPlan, ulaw: list[Path], duration_s: float) -> str:
    """The sipp scenario for one call of `plan` (sipp repeats it `calls` times)."""
    auth = bool(plan.auth_user)
    n = len(plan.legs)
    parts = ['<?xml version="1.0" encoding="ISO-8859-1" ?>', '<scenario name="emotivoice">',
             f'<send retrans="500" start_txn="invite"><![CDATA[\n{_invite(plan, 1, False)}]]></send>']
    parts += [_finals("refused1", "invite", "challenged" if auth else ""),
              _answered(n, ulaw, duration_s, plan.tail_s, "invite")]
    if auth:
        parts += ['<label id="challenged"/>', _ack(1, "invite"),
                  f'<send retrans="500" start_txn="invite2"><![CDATA[\n{_invite(plan, 2, True)}]]></send>',
                  _finals("refused2", "invite2"), _answered(n, ulaw, duration_s, plan.tail_s, "invite2"),
                  '<label id="refused2"/>', _ack(2, "invite2").replace("<send ", '<send next="done" ', 1)]
    parts += ['<label id="refused1"/>', _ack(1, "invite").replace("<send ", '<send next="done" ', 1),
              '<label id="done"/>', '<nop/>', "</scenario>"]
    return "\n".join(parts)


def _invite_finals(messages: str) -> list[int]:
    """One final status per INVITE transaction (Call-ID and CSeq), in order. The UAS retransmits
    its 200 until our ACK arrives (RFC 3261 13.3.1.4), which a loaded service may take more than
    T1 (500 ms) to see: CI counted a call answered twice."""
    codes, seen = [], set()
    for block in re.split(r"\n-{20,}.*\n", messages):
        status = re.search(r"^SIP/2\.0 (\d{3})", block, re.MULTILINE)
        if not status or int(status.group(1)) < 200:
            continue
        message = parse_sip(block[status.start():])
        cseq = message.header("cseq").split()
        if len(cseq) != 2 or cseq[1].upper() != "INVITE":
            continue
        transaction = (message.header("call-id"), cseq[0])
        if transaction not in seen:
            seen.add(transaction)
            codes.append(int(status.group(1)))
    return codes


def _local_args(host: str, local_ip: str) -> list[str]:
    """sipp's own address: `local_ip` (bound, so it is also the packets' source) or loopback."""
    if local_ip:
        return ["-i", local_ip, "-bind_local"]
    return ["-i", "127.0.0.1" if host in ("127.0.0.1", "localhost") else host]


def place_calls(host: str, port: int, legs: list, siprec: bool = True, calls: int = 1,
                participants: tuple[tuple[str, str], ...] = DEFAULT_PARTICIPANTS, auth_user: str = "",
                auth_password: str = "", transport: str = "u1", timeout_s: float | None = None,
                local_ip: str = "", call_id: str = "", tail_s: float = 0.5) -> PlaceResult:
    """Place `calls` simultaneous calls sending `legs` (8 kHz int16 arrays or audio files) and wait for them.

    `local_ip` sends from another address (e.g. 127.0.0.2); `call_id` sets the SIP Call-ID
    verbatim (sipp's -cid_str; a test's hostile value), one for every call. `tail_s`: how long
    after the audio's scheduled end the BYE goes (the schedule starts at sipp's exec of the sender).
    """
    plan = CallPlan(legs, siprec, calls, participants, auth_user, auth_password, transport, tail_s)
    pcm = [_leg_pcm(leg) for leg in legs]
    duration_s = max(len(p) for p in pcm) / 8000
    with tempfile.TemporaryDirectory(prefix="emotivoice-sipp-") as tmp:
        work = Path(tmp)
        ulaw = []
        for i, samples in enumerate(pcm):
            ulaw.append(work / f"leg{i}.ulaw")
            ulaw[-1].write_bytes(pcm16_to_mulaw(samples))
        scenario = work / "scenario.xml"
        scenario.write_text(scenario_xml(plan, ulaw, duration_s))
        message_log = work / "messages.log"
        cmd = ["sipp", f"{host}:{port}", "-sf", str(scenario), "-m", str(calls), "-l", str(calls),
               "-r", str(calls), "-rp", "1000", *_local_args(host, local_ip), "-p", str(_free_udp_port()),
               "-mp", str(_free_media_ports()), "-t", transport, "-nostdin",
               "-trace_msg", "-message_file", str(message_log), "-recv_timeout", "15000",
               "-timeout", f"{int(duration_s + 30)}s", "-timeout_error"]
        if auth_user:
            cmd += ["-au", auth_user, "-ap", auth_password]
        if call_id:
            cmd += ["-cid_str", call_id.replace("%", "%%")]
        started = time.monotonic()
        # errors="replace": under load sipp wrote a byte that is not UTF-8, and the decode killed the placer
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              timeout=timeout_s or duration_s + 60)
        messages = message_log.read_text(errors="replace") if message_log.exists() else ""
        return PlaceResult(proc.returncode, _invite_finals(messages), time.monotonic() - started,
                           (proc.stdout[-3000:] + proc.stderr[-3000:]), messages)


def _flood_xml(hold_ms: int) -> str:
    """One INVITE offering audio; refused: ACK; answered: ACK, send no RTP, wait for our BYE (or send one)."""
    invite = "\n".join(["INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0",
                        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
                        "From: <sip:flood@[local_ip]:[local_port]>;tag=[pid]F[call_number]",
                        "To: <sip:srs@[remote_ip]:[remote_port]>", "Call-ID: [call_id]", "CSeq: 1 INVITE",
                        "Contact: <sip:flood@[local_ip]:[local_port];transport=[transport]>", "Max-Forwards: 70",
                        "Content-Type: application/sdp", "Content-Length: [len]", "", _sdp(1, False)]) + "\n"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="emotivoice-flood">
<send retrans="500" start_txn="invite"><![CDATA[
{invite}]]></send>
{_finals("refused", "invite")}
<recv response="200" rrs="true" response_txn="invite"/>
<send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv request="BYE" timeout="{hold_ms}" ontimeout="hangup"/>
<send next="done"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<label id="hangup"/>
<send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200" next="done"/>
<label id="refused"/>
{_ack(1, "invite").replace("<send ", '<send next="done" ', 1)}
<label id="done"/>
<nop/>
</scenario>"""


def flood_invites(host: str, port: int, invites: int, rate_per_s: float, local_ip: str = "",
                  hold_s: float = 10.0, transport: str = "u1") -> PlaceResult:
    """Send `invites` INVITEs (one new call each) at `rate_per_s`, sending no media.

    A load generator for tests of a service's limits, bounded in count; loopback targets only.
    Answered calls are held until the service hangs up, or `hold_s`, then sipp hangs up.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("flood_invites only targets loopback")
    with tempfile.TemporaryDirectory(prefix="emotivoice-sipp-") as tmp:
        scenario = Path(tmp) / "flood.xml"
        scenario.write_text(_flood_xml(int(hold_s * 1000)))
        message_log = Path(tmp) / "messages.log"
        budget_s = invites / rate_per_s + hold_s + 20
        cmd = ["sipp", f"{host}:{port}", "-sf", str(scenario), "-m", str(invites), "-l", str(invites),
               "-r", str(rate_per_s), "-rp", "1000", *_local_args(host, local_ip), "-p", str(_free_udp_port()),
               "-mp", str(_free_media_ports()), "-t", transport, "-nostdin", "-trace_msg", "-message_file",
               str(message_log), "-recv_timeout", str(int((hold_s + 10) * 1000)), "-timeout", f"{int(budget_s)}s"]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=budget_s + 30)
        messages = message_log.read_text(errors="replace") if message_log.exists() else ""
        return PlaceResult(proc.returncode, _invite_finals(messages), time.monotonic() - started,
                           (proc.stdout[-3000:] + proc.stderr[-3000:]), messages)

