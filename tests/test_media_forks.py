"""The media-fork receivers, driven by clients written from each protocol's documents.

Each client sends the two channels of the stereo demo call (agent and customer take turns, so
their loudness envelopes differ) as two legs, faster than real time. The live sink must get each
leg's audio back under the right role, start and end exactly once, and survive bad input.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from emotivoice.analysis.audio import load_audio, to_8k_pcm16
from emotivoice.analysis.live.inbox import FrameInbox
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame
from emotivoice.connector.audiosocket import KIND_HANGUP, KIND_UUID, AudioSocketServer, encode_frame
from emotivoice.connector.mulaw import pcm16_to_mulaw
from emotivoice.connector.websocket import ForkWebSocketServer
from emotivoice.config import ConnectorConfig
from emotivoice.storage.files import check_call_id
from tests.audio_match import envelope_correlation
from tests.conftest import DEMO, DEMO_TRUTH

RATE = 8000
SECONDS = 8.0
API_KEY = "s3cret-key"


@pytest.fixture(scope="module")
def demo_legs() -> dict[str, np.ndarray]:
    """The demo call's first seconds at 8 kHz int16, by role."""
    stereo = load_audio(DEMO, channels=2)[:, : int(SECONDS * 16000)]
    return {role: to_8k_pcm16(stereo[index]) for index, role in enumerate(DEMO_TRUTH["channels"])}


@dataclass
class Received:
    starts: list[CallStarted] = field(default_factory=list)
    ends: list[CallEnded] = field(default_factory=list)
    frames: dict[tuple[str, str], list[Frame]] = field(default_factory=dict)

    def audio(self, call_id: str, leg: str) -> np.ndarray:
        frames = sorted(self.frames.get((call_id, leg), []), key=lambda f: f.seq)
        return np.frombuffer(b"".join(f.pcm for f in frames), dtype="<i2")


def ours(call_id: str, source: str) -> bool:
    """An id this service made for a call from `source`, not one the peer chose."""
    return call_id.startswith(f"{source}-") and check_call_id(call_id) == call_id


def collect(inbox: FrameInbox, calls: int, timeout: float = 10.0, linger: float = 0.3) -> Received:
    """Messages until `calls` calls have ended, plus `linger` seconds to catch any duplicate end."""
    got = Received()
    deadline = time.monotonic() + timeout
    stop_at = None
    while time.monotonic() < (stop_at or deadline):
        msg = inbox.get(timeout=0.05)
        if isinstance(msg, CallStarted):
            got.starts.append(msg)
        elif isinstance(msg, CallEnded):
            got.ends.append(msg)
            if len(got.ends) >= calls and stop_at is None:
                stop_at = time.monotonic() + linger
        elif isinstance(msg, Frame):
            got.frames.setdefault((msg.call_id, msg.leg), []).append(msg)
    return got


def assert_legs_match(got: Received, call_id: str, leg_by_role: dict[str, str], demo_legs) -> None:
    for role, leg in leg_by_role.items():
        other = next(r for r in leg_by_role if r != role)
        audio = got.audio(call_id, leg)
        assert len(audio) >= 0.95 * len(demo_legs[role]), f"{leg}: {len(audio)} samples"
        own = envelope_correlation(audio, demo_legs[role], RATE)
        cross = envelope_correlation(audio, demo_legs[other], RATE)
        assert own >= 0.9 and cross < 0.5, f"{leg} ({role}): own {own:.2f}, other {cross:.2f}"


@pytest.fixture
def inbox() -> FrameInbox:
    return FrameInbox(max_frames=100_000)


@pytest.fixture
def cfg() -> ConnectorConfig:
    return ConnectorConfig(audiosocket_port=0, websocket_port=0, audiohook_api_key=API_KEY,
                           audiosocket_pair_wait_s=0.3)


@pytest.fixture
def audiosocket(cfg, inbox):
    server = AudioSocketServer(cfg, inbox)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def websocket(cfg, inbox):
    server = ForkWebSocketServer(cfg, inbox)
    server.start()
    yield server
    server.stop()


# --- Asterisk AudioSocket -------------------------------------------------------------------------

def audiosocket_connection(port: int, call_uuid: uuid.UUID) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode_frame(KIND_UUID, call_uuid.bytes))
    return sock


def test_audiosocket_two_connections_are_the_two_legs_of_a_call(audiosocket, inbox, demo_legs):
    call_uuid = uuid.uuid4()
    customer = audiosocket_connection(audiosocket.port, call_uuid)  # first to connect: the customer
    time.sleep(0.1)
    agent = audiosocket_connection(audiosocket.port, call_uuid)
    for start in range(0, len(demo_legs["agent"]), 160):  # 20 ms, 320 bytes, as Asterisk sends
        customer.sendall(encode_frame(0x10, demo_legs["customer"][start:start + 160].astype("<i2").tobytes()))
        agent.sendall(encode_frame(0x10, demo_legs["agent"][start:start + 160].astype("<i2").tobytes()))
    agent.sendall(encode_frame(0x03, b"5"))
    customer.sendall(encode_frame(KIND_HANGUP))
    agent.close()  # closing the socket is also a hangup
    customer.close()

    got = collect(inbox, calls=1)
    assert len(got.starts) == 1 and len(got.ends) == 1, (got.starts, got.ends)
    call = got.starts[0]
    assert call.source == "audiosocket" and ours(call.call_id, "audiosocket")
    assert call.metadata["external"] == {"audiosocket_uuid": str(call_uuid)}  # the UUID pairs legs, as data
    assert [(leg.leg, leg.role, leg.sample_rate) for leg in call.legs] == [("customer", "customer", 8000),
                                                                             ("agent", "agent", 8000)]
    assert got.ends[0] == CallEnded(call.call_id, "hangup")
    assert_legs_match(got, call.call_id, {"customer": "customer", "agent": "agent"}, demo_legs)


def test_audiosocket_connection_dropped_mid_call_ends_the_call_once(audiosocket, inbox, demo_legs):
    call_uuid = uuid.uuid4()
    sock = audiosocket_connection(audiosocket.port, call_uuid)
    for start in range(0, 50 * 160, 160):
        sock.sendall(encode_frame(0x10, demo_legs["customer"][start:start + 160].tobytes()))
    time.sleep(0.2)  # let the server read them: a reset discards what it has not read yet
    sock.sendall(b"\x10\x01")  # half a header, then the connection is reset
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()

    got = collect(inbox, calls=1)
    assert [s.metadata["external"]["audiosocket_uuid"] for s in got.starts] == [str(call_uuid)]
    call_id = got.starts[0].call_id
    assert got.ends == [CallEnded(call_id, "dropped")]
    assert len(got.frames[(call_id, "customer")]) == 50


def test_audiosocket_audio_before_uuid_is_refused_and_the_server_keeps_serving(audiosocket, inbox):
    bad = socket.create_connection(("127.0.0.1", audiosocket.port))
    bad.sendall(encode_frame(0x10, b"\x00" * 320))
    bad.settimeout(5)
    assert bad.recv(10) == b""  # the server closed it
    bad.close()

    call_uuid = uuid.uuid4()
    good = audiosocket_connection(audiosocket.port, call_uuid)
    good.sendall(encode_frame(0x10, b"\x01\x00" * 160) + encode_frame(0xFF, b"\x01"))
    good.close()
    got = collect(inbox, calls=1)
    assert [s.metadata["external"]["audiosocket_uuid"] for s in got.starts] == [str(call_uuid)]
    assert got.ends == [CallEnded(got.starts[0].call_id, "error")]


# --- Twilio Media Streams ---------------------------------------------------------------------------

def twilio_start(stream_sid: str, call_sid: str, sequence: int) -> dict:
    return {"event": "start", "sequenceNumber": str(sequence), "streamSid": stream_sid,
            "start": {"streamSid": stream_sid, "accountSid": "AC" + "0" * 32, "callSid": call_sid,
                      "tracks": ["inbound", "outbound"],
                      "customParameters": {"agent_id": "agent-17", "customer_id": "cust-42"},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def test_twilio_inbound_is_the_customer_and_outbound_the_agent(websocket, inbox, demo_legs):
    stream_sid, call_sid = "MZ" + "1" * 32, "CA" + "2" * 32
    with connect(f"ws://127.0.0.1:{websocket.port}/twilio?token=x") as ws:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(json.dumps(twilio_start(stream_sid, call_sid, 1)))
        sequence = 1
        for chunk, start in enumerate(range(0, len(demo_legs["agent"]), 160), start=1):
            for track, role in (("inbound", "customer"), ("outbound", "agent")):
                sequence += 1
                payload = base64.b64encode(pcm16_to_mulaw(demo_legs[role][start:start + 160])).decode()
                ws.send(json.dumps({"event": "media", "sequenceNumber": str(sequence), "streamSid": stream_sid,
                                    "media": {"track": track, "chunk": str(chunk),
                                              "timestamp": str(chunk * 20), "payload": payload}}))
        ws.send(json.dumps({"event": "dtmf", "sequenceNumber": str(sequence + 1), "streamSid": stream_sid,
                            "dtmf": {"track": "inbound_track", "digit": "7"}}))
        ws.send(json.dumps({"event": "mark", "sequenceNumber": str(sequence + 2), "streamSid": stream_sid,
                            "mark": {"name": "greeting"}}))
        ws.send(json.dumps({"event": "stop", "sequenceNumber": str(sequence + 3), "streamSid": stream_sid,
                            "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}}))

    got = collect(inbox, calls=1)
    call = got.starts[0]
    assert len(got.starts) == 1 and got.ends == [CallEnded(call.call_id, "hangup")]
    assert call.source == "twilio" and ours(call.call_id, "twilio")
    assert [(leg.leg, leg.role) for leg in call.legs] == [("inbound", "customer"), ("outbound", "agent")]
    assert call.metadata["agent_id"] == "agent-17" and call.metadata["customer_id"] == "cust-42"
    assert call.metadata["external"]["stream_sid"] == stream_sid
    assert call.metadata["external"]["call_sid"] == call_sid
    assert_legs_match(got, call.call_id, {"customer": "inbound", "agent": "outbound"}, demo_legs)


def test_twilio_malformed_json_closes_the_stream_and_ends_the_call_once(websocket, inbox):
    with connect(f"ws://127.0.0.1:{websocket.port}/twilio") as ws:
        ws.send(json.dumps(twilio_start("MZbad", "CAbad", 1)))
        ws.send(json.dumps({"event": "whatever-comes-next", "sequenceNumber": "2"}))  # unknown: ignored
        ws.send("{not json")
        with pytest.raises(Exception):
            ws.recv(timeout=5)
        assert ws.close_code == 1007
    with connect(f"ws://127.0.0.1:{websocket.port}/twilio") as ws:  # the next stream is served
        ws.send(json.dumps(twilio_start("MZok", "CAok", 1)))
    got = collect(inbox, calls=2)
    assert [s.metadata["external"]["call_sid"] for s in got.starts] == ["CAbad", "CAok"]
    assert got.ends == [CallEnded(got.starts[0].call_id, "protocol_error"),
                        CallEnded(got.starts[1].call_id, "disconnect")]


# --- Genesys AudioHook ------------------------------------------------------------------------------

class AudioHookClient:
    """The Genesys side of a session: counts its own seq and tracks the server's."""

    def __init__(self, port: int, api_key: str = API_KEY):
        self.session_id = str(uuid.uuid4())
        self.seq = 0
        self.serverseq = 0
        self._connect = connect(f"ws://127.0.0.1:{port}/audiohook", additional_headers={
            "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
            "Audiohook-Session-Id": self.session_id,
            "Audiohook-Correlation-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
            "X-API-KEY": api_key})

    def __enter__(self) -> AudioHookClient:
        self.ws = self._connect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._connect.__exit__(*exc)

    def send(self, kind: str, parameters: dict, position_s: float = 0.0) -> None:
        self.seq += 1
        self.ws.send(json.dumps({"version": "2", "id": self.session_id, "type": kind, "seq": self.seq,
                                 "serverseq": self.serverseq, "position": f"PT{position_s:g}S",
                                 "parameters": parameters}))

    def receive(self) -> dict:
        msg = json.loads(self.ws.recv(timeout=5))
        assert msg["seq"] == self.serverseq + 1 and msg["id"] == self.session_id
        self.serverseq = msg["seq"]
        return msg

    def open(self, conversation_id: str) -> dict:
        self.send("open", {"organizationId": "d7934305-0972-4844-938e-9060eef73d05",
                           "conversationId": conversation_id,
                           "participant": {"id": str(uuid.uuid4()), "ani": "+13175550123", "aniName": "Jane Doe",
                                           "dnis": "+13175550100"},
                           "media": [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"],
                                      "rate": 8000},
                                     {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
                                     {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}],
                           "language": "en-US"})
        return self.receive()


def run_audiohook_call(client: AudioHookClient, conversation_id: str, demo_legs) -> None:
    """open, 100 ms stereo frames with a ping midway, paused/resumed, close: a whole session."""
    opened = client.open(conversation_id)
    assert opened["type"] == "opened" and opened["clientseq"] == 1
    assert opened["parameters"]["media"] == [{"type": "audio", "format": "PCMU",
                                              "channels": ["external", "internal"], "rate": 8000}]
    stereo = np.stack([demo_legs["customer"], demo_legs["agent"]], axis=1)  # external, internal
    for start in range(0, len(stereo), 800):  # 100 ms frames of interleaved PCMU
        client.ws.send(pcm16_to_mulaw(stereo[start:start + 800].reshape(-1)))
        if start == 40 * 800:
            client.send("ping", {"rtt": "PT0.01S"}, position_s=start / RATE)
            assert client.receive()["type"] == "pong"
    client.send("paused", {}, position_s=SECONDS)
    client.send("resumed", {"start": f"PT{SECONDS:g}S", "discarded": "PT0S"}, position_s=SECONDS)
    client.send("close", {"reason": "end"}, position_s=SECONDS)
    assert client.receive()["type"] == "closed"


def test_audiohook_external_is_the_customer_and_internal_the_agent(websocket, inbox, demo_legs):
    conversation_id = str(uuid.uuid4())
    with AudioHookClient(websocket.port) as client:
        run_audiohook_call(client, conversation_id, demo_legs)

    got = collect(inbox, calls=1)
    call = got.starts[0]
    assert len(got.starts) == 1 and got.ends == [CallEnded(call.call_id, "hangup")]
    assert call.source == "audiohook" and ours(call.call_id, "audiohook")
    assert [(leg.leg, leg.role, leg.name) for leg in call.legs] == [("external", "customer", "Jane Doe"),
                                                                      ("internal", "agent", None)]
    assert call.metadata["external"]["audiohook_session_id"] == client.session_id
    assert call.metadata["external"]["conversation_id"] == conversation_id
    assert_legs_match(got, call.call_id, {"customer": "external", "agent": "internal"}, demo_legs)


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_audiohook_wrong_api_key_is_refused_with_401(websocket, key):
    with pytest.raises(InvalidStatus) as refused, AudioHookClient(websocket.port, api_key=key):
        pass
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"version": "2", "type": "bogus"})])
def test_audiohook_bad_message_gets_disconnect_then_closed_and_the_next_session_is_served(websocket, inbox, bad,
                                                                                         demo_legs):
    conversation_id = str(uuid.uuid4())
    with AudioHookClient(websocket.port) as client:
        assert client.open(conversation_id)["type"] == "opened"
        client.ws.send(b"\xff\xff" * 160)
        client.ws.send(bad)
        disconnect = client.receive()
        assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
        client.send("close", {"reason": "disconnect"})
        assert client.receive()["type"] == "closed"

    with AudioHookClient(websocket.port) as probe:  # Genesys's connection probe: opened, but no call
        assert probe.open("00000000-0000-0000-0000-000000000000")["type"] == "opened"
        probe.send("close", {"reason": "end"})
        assert probe.receive()["type"] == "closed"

    next_conversation_id = str(uuid.uuid4())
    with AudioHookClient(websocket.port) as client:
        run_audiohook_call(client, next_conversation_id, demo_legs)

    got = collect(inbox, calls=2)
    assert [s.metadata["external"]["conversation_id"] for s in got.starts] == [conversation_id, next_conversation_id]
    first, second = (s.call_id for s in got.starts)
    assert got.ends == [CallEnded(first, "protocol_error"), CallEnded(second, "hangup")]
    assert_legs_match(got, second, {"customer": "external", "agent": "internal"}, demo_legs)


def test_unknown_path_is_404(websocket):
    with pytest.raises(InvalidStatus) as refused, connect(f"ws://127.0.0.1:{websocket.port}/elsewhere"):
        pass
    assert refused.value.response.status_code == 404


def test_stopping_the_servers_ends_open_calls_once(cfg, inbox):
    audiosocket, websocket = AudioSocketServer(cfg, inbox), ForkWebSocketServer(cfg, inbox)
    audiosocket.start()
    websocket.start()
    call_uuid = uuid.uuid4()
    sock = audiosocket_connection(audiosocket.port, call_uuid)
    sock.sendall(encode_frame(0x10, b"\x00\x00" * 160))
    with connect(f"ws://127.0.0.1:{websocket.port}/twilio") as ws, AudioHookClient(websocket.port) as client:
        ws.send(json.dumps(twilio_start("MZopen", "CAopen", 1)))
        client.open("5a0d3b5e-3a4c-4f3e-9a55-0c1d2e3f4a5b")
        time.sleep(0.4)  # past the AudioSocket pairing wait: all three calls have started
        audiosocket.stop()
        websocket.stop()
    sock.close()
    got = collect(inbox, calls=3)
    external = {s.call_id: next(s.metadata["external"][k] for k in ("audiosocket_uuid", "call_sid", "conversation_id")
                                if k in s.metadata["external"]) for s in got.starts}
    assert sorted(external.values()) == sorted([str(call_uuid), "CAopen", "5a0d3b5e-3a4c-4f3e-9a55-0c1d2e3f4a5b"])
    assert sorted((e.call_id, e.reason) for e in got.ends) == sorted((c, "shutdown") for c in external)


@pytest.mark.slow
def test_audiohook_session_is_analysed_per_speaker_into_duckdb(settings, tmp_path, demo_legs):
    """The same engine as SIP calls: a Genesys stereo session ends up as agent and customer rows."""
    from dataclasses import replace

    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.storage.server import StoreServer

    s = replace(settings, db_path=tmp_path / "fork.duckdb",
                live=replace(settings.live, audio_dir=tmp_path / "calls", finalize="none"))
    store = StoreServer(s.db_path).start()
    engine = LiveEngine(s, store).start()
    server = ForkWebSocketServer(ConnectorConfig(websocket_port=0, audiohook_api_key=API_KEY), engine.inbox)
    server.start()
    conversation_id = str(uuid.uuid4())
    try:
        with AudioHookClient(server.port) as client:
            run_audiohook_call(client, conversation_id, demo_legs)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (engine.calls or engine.inbox.pending()):
            time.sleep(0.2)
    finally:
        server.stop()
        engine.stop()
    calls = store.read("list_calls")
    utterances = store.read("call_utterances", call_id=calls.call_id[0])
    store.close()
    assert len(calls) == 1 and ours(calls.call_id[0], "audiohook") and calls.status[0] == "complete"
    assert set(utterances.speaker) == {"agent", "customer"}
    assert utterances.base_emotion.notna().all()
    whole = utterances[utterances.end_s < SECONDS - 0.5]  # the turn cut off at the end may be wordless
    assert len(whole) >= 2 and whole.text.str.strip().str.len().gt(0).all()
