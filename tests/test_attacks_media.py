"""Attacks on the media-fork listeners (issue 10, findings 1, 4 and 6), as a hostile peer on
loopback would make them: the real WebSocket (Twilio, AudioHook) and AudioSocket listeners,
wired to the real live engine, its real models and a real DuckDB file.

- ids that climb out of the data dir (`../`, absolute paths) touch nothing outside it, and the
  stored call has an id of ours, the peer's id kept as data in its metadata;
- recordings and the legs of running calls are 0600 under 0700 directories with umask 022;
- sessions that fail their handshake store nothing, and the listeners keep serving;
- a seeded, bounded fuzz run of random and mutated messages, after which a good call is stored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from emotivoice.analysis.audio import load_audio, to_8k_pcm16
from emotivoice.analysis.live.engine import LiveEngine
from emotivoice.connector.audiosocket import KIND_HANGUP, KIND_UUID, AudioSocketServer, encode_frame
from emotivoice.connector.mulaw import pcm16_to_mulaw
from emotivoice.connector.websocket import ForkWebSocketServer
from emotivoice.config import ConnectorConfig
from emotivoice.storage.server import StoreServer
from tests.conftest import DEMO, DEMO_TRUTH

RATE = 8000
API_KEY = "attack-test-key"
OUR_ID = re.compile(r"^(twilio|audiohook|audiosocket)-\d{8}T\d{6}-[0-9a-f]{12}$")
FUZZ_MESSAGES, FUZZ_CAP_S = 2500, 120.0  # a bound on count and on time, whichever comes first

pytestmark = pytest.mark.slow


class Service:
    """The live service as `emotivoice serve` wires it, in a data dir beside a planted victim."""

    def __init__(self, settings, root: Path):
        self.root, self.data, self.victim = root, root / "data", root / "victim"
        self.data.mkdir(mode=0o700)
        self.victim.mkdir()
        for name in ("victim.json", "victim.inbound.raw", "victim.0.raw", "victim.wav"):
            (self.victim / name).write_bytes(b"precious " + name.encode())
        self.victim_before = snapshot(self.victim)
        self.audio_dir = self.data / "calls"
        s = replace(settings, db_path=self.data / "calls.duckdb",
                    live=replace(settings.live, audio_dir=self.audio_dir, finalize="none", transcribe=False,
                                 keep_audio=True, max_queued_frames=100_000))  # clients send faster than real time
        self.store = StoreServer(s.db_path).start()
        self.engine = LiveEngine(s, self.store).start()
        cfg = ConnectorConfig(websocket_port=0, audiosocket_port=0, audiohook_api_key=API_KEY,
                              audiosocket_pair_wait_s=0.3)
        self.websocket, self.audiosocket = ForkWebSocketServer(cfg, self.engine.inbox), \
            AudioSocketServer(cfg, self.engine.inbox)
        self.websocket.start()
        self.audiosocket.start()

    def close(self) -> None:
        self.websocket.stop()
        self.audiosocket.stop()
        self.engine.stop()
        self.store.close()

    def rows(self) -> dict[str, tuple[str, str | None]]:
        """call_id -> (status, agent_id) of every stored call."""
        calls = self.store.read("list_calls", limit=100_000).set_index("call_id")
        agents = self.store.read("find_calls", limit=100_000).set_index("call_id").agent_id
        return {cid: (calls.status[cid], agents.get(cid)) for cid in calls.index}

    def wait_for(self, agent_ids: set[str], timeout_s: float = 180.0) -> dict[str, str]:
        """agent_id -> call_id once a complete call is stored for each, and the engine is idle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = {agent: cid for cid, (status, agent) in self.rows().items()
                    if status == "complete" and agent in agent_ids}
            if set(done) == agent_ids and not self.engine.calls and not self.engine.inbox.pending():
                return done
            time.sleep(0.2)
        raise AssertionError(f"calls for {agent_ids} not stored; stored: {self.rows()}")

    def wait_idle(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.engine.calls and not self.engine.inbox.pending():
                return
            time.sleep(0.2)
        raise AssertionError(f"engine still busy: {self.engine.stats()}")

    def sidecar(self, call_id: str) -> dict:
        return json.loads(next(self.audio_dir.glob(f"*/{call_id}.json")).read_text())

    def assert_nothing_outside(self) -> None:
        assert snapshot(self.victim) == self.victim_before, "a file outside the data dir was touched"
        assert sorted(p.name for p in self.root.iterdir()) == ["data", "victim"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """The demo call's first 7 s (an agent turn, then a customer turn) as 8 kHz int16 legs."""
    stereo = load_audio(DEMO, channels=2)[:, : 7 * 16000]
    return {role: to_8k_pcm16(stereo[index]) for index, role in enumerate(DEMO_TRUTH["channels"])}


@pytest.fixture(scope="module")
def service(settings, tmp_path_factory):
    old = os.umask(0o022)  # the usual umask: what the service writes must be owner-only regardless
    svc = Service(settings, tmp_path_factory.mktemp("attack"))
    try:
        yield svc
    finally:
        svc.close()
        os.umask(old)


# --- clients ---------------------------------------------------------------------------------------

def twilio_start(call_id: str | None, agent_id: str, stream_sid: str = "MZ" + "1" * 32,
                 call_sid: str = "CA" + "2" * 32, **fmt) -> dict:
    params = {"agent_id": agent_id, "customer_id": "cust-1"} | ({"call_id": call_id} if call_id else {})
    return {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"streamSid": stream_sid, "accountSid": "AC" + "0" * 32, "callSid": call_sid,
                      "tracks": ["inbound", "outbound"], "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1} | fmt}}


def twilio_media(legs: dict[str, np.ndarray], first: int = 0, last: int | None = None):
    """Media messages for both tracks, 20 ms each, from sample `first` to `last`."""
    last = len(legs["agent"]) if last is None else last
    for chunk, start in enumerate(range(first, last, 160), start=first // 160 + 1):
        for track, role in (("inbound", "customer"), ("outbound", "agent")):
            payload = base64.b64encode(pcm16_to_mulaw(legs[role][start:start + 160])).decode()
            yield json.dumps({"event": "media", "media": {"track": track, "chunk": str(chunk), "payload": payload}})


def twilio_call(port: int, start: dict, legs: dict[str, np.ndarray]) -> None:
    with connect(f"ws://127.0.0.1:{port}/twilio") as ws:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(json.dumps(start))
        for message in twilio_media(legs):
            ws.send(message)
        ws.send(json.dumps({"event": "stop"}))


def audiohook_headers(session_id: str, api_key: str = API_KEY) -> dict:
    return {"Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05", "Audiohook-Session-Id": session_id,
            "Audiohook-Correlation-Id": "../../../victim/victim", "X-API-KEY": api_key}


def audiohook_message(session_id: str, seq: int, kind: str, parameters: dict, serverseq: int = 0) -> str:
    return json.dumps({"version": "2", "id": session_id, "type": kind, "seq": seq, "serverseq": serverseq,
                       "position": "PT0S", "parameters": parameters})


def audiohook_open(conversation_id, media: object = None, agent_id: str = "x") -> dict:
    return {"organizationId": "d7934305-0972-4844-938e-9060eef73d05", "conversationId": conversation_id,
            "participant": {"ani": "+13175550123", "aniName": "../../../victim/victim"},
            "customConfig": {"agent_id": agent_id},
            "media": media if media is not None else [{"type": "audio", "format": "PCMU",
                                                       "channels": ["external", "internal"], "rate": 8000}]}


def audiohook_call(port: int, session_id: str, conversation_id: str, agent_id: str, legs) -> None:
    with connect(f"ws://127.0.0.1:{port}/audiohook", additional_headers=audiohook_headers(session_id)) as ws:
        ws.send(audiohook_message(session_id, 1, "open", audiohook_open(conversation_id, agent_id=agent_id)))
        assert json.loads(ws.recv(timeout=10))["type"] == "opened"
        stereo = np.stack([legs["customer"], legs["agent"]], axis=1)
        for start in range(0, len(stereo), 800):
            ws.send(pcm16_to_mulaw(stereo[start:start + 800].reshape(-1)))
        ws.send(audiohook_message(session_id, 2, "close", {"reason": "end"}, serverseq=1))
        assert json.loads(ws.recv(timeout=10))["type"] == "closed"


def audiosocket_call(port: int, call_uuid: uuid.UUID, legs) -> None:
    customer, agent = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
    for sock in (customer, agent):
        sock.sendall(encode_frame(KIND_UUID, call_uuid.bytes))
    for start in range(0, len(legs["agent"]), 160):
        customer.sendall(encode_frame(0x10, legs["customer"][start:start + 160].astype("<i2").tobytes()))
        agent.sendall(encode_frame(0x10, legs["agent"][start:start + 160].astype("<i2").tobytes()))
    for sock in (customer, agent):
        sock.sendall(encode_frame(KIND_HANGUP))
        sock.close()


def closed_with(ws) -> tuple[int | None, str]:
    """Wait for the server to close the connection; its close code and reason."""
    try:
        while True:
            ws.recv(timeout=10)
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


# --- finding 1: names from the wire ---------------------------------------------------------------

def test_hostile_ids_touch_nothing_outside_the_data_dir_and_calls_get_our_ids(service, speech):
    climb = "../../../victim/victim"  # from data/calls/.partial and data/calls/DAY up to the victim
    absolute = str(service.victim / "victim")
    twilio_call(service.websocket.port, twilio_start(climb, "ag-climb", stream_sid=climb, call_sid=absolute), speech)
    twilio_call(service.websocket.port, twilio_start(absolute, "ag-absolute", stream_sid=absolute + "/"), speech)
    twilio_call(service.websocket.port, twilio_start(None, "ag-sid", stream_sid=climb, call_sid=climb), speech)
    audiohook_call(service.websocket.port, climb, climb, "ag-audiohook", speech)
    audiohook_call(service.websocket.port, str(uuid.uuid4()), absolute, "ag-audiohook-abs", speech)
    call_uuid = uuid.uuid4()
    audiosocket_call(service.audiosocket.port, call_uuid, speech)

    wanted = {"ag-climb", "ag-absolute", "ag-sid", "ag-audiohook", "ag-audiohook-abs"}
    stored = service.wait_for(wanted)
    service.wait_idle()
    service.assert_nothing_outside()
    rows = service.rows()
    assert all(OUR_ID.match(cid) for cid in rows), sorted(rows)
    assert stored["ag-climb"].startswith("twilio-") and stored["ag-audiohook"].startswith("audiohook-")
    # the peer's ids are kept, as data, in the call's metadata (its sidecar beside the recording)
    external = {agent: service.sidecar(cid)["external"] for agent, cid in stored.items()}
    assert external["ag-climb"] == {"stream_sid": climb, "call_sid": absolute, "account_sid": "AC" + "0" * 32,
                                    "custom_call_id": climb}
    assert external["ag-absolute"]["custom_call_id"] == absolute
    assert external["ag-sid"]["call_sid"] == climb and "custom_call_id" not in external["ag-sid"]
    assert external["ag-audiohook"]["conversation_id"] == climb
    assert external["ag-audiohook"]["audiohook_session_id"] == climb
    assert external["ag-audiohook-abs"]["conversation_id"] == absolute
    # AudioSocket: the two connections with one UUID are one call with two legs, under our id
    by_uuid = [cid for cid in rows if cid.startswith("audiosocket-")
               and service.sidecar(cid)["external"] == {"audiosocket_uuid": str(call_uuid)}]
    assert len(by_uuid) == 1
    speakers = service.store.read("call_speakers", call_id=by_uuid[0])
    assert sorted(speakers.role) == ["agent", "customer"]
    # every file the service wrote is ours, under the data dir
    for path in service.audio_dir.rglob("*"):
        if path.is_file():
            assert OUR_ID.match(path.stem) and path.suffix in (".wav", ".json"), path


# --- finding 4: recordings are owner-only ---------------------------------------------------------

def test_recordings_and_running_legs_are_owner_only_under_umask_022(service, speech):
    partial = service.audio_dir / ".partial"
    with connect(f"ws://127.0.0.1:{service.websocket.port}/twilio") as ws:
        ws.send(json.dumps(twilio_start(None, "ag-modes")))
        for message in twilio_media(speech, 0, RATE):
            ws.send(message)
        deadline = time.monotonic() + 60
        while len(list(partial.glob("twilio-*.raw"))) < 2 and time.monotonic() < deadline:  # both legs open
            time.sleep(0.05)
        legs = list(partial.glob("twilio-*.raw"))
        assert len(legs) == 2, "the running call's legs are not on disk"
        modes = {p.name: p.stat().st_mode & 0o777 for p in legs}
        for message in twilio_media(speech, RATE):
            ws.send(message)
        ws.send(json.dumps({"event": "stop"}))
    assert set(modes.values()) == {0o600}, modes
    call_id = service.wait_for({"ag-modes"})["ag-modes"]
    wav, = service.audio_dir.glob(f"*/{call_id}.wav")
    for path in (wav, wav.with_suffix(".json")):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for folder in (service.audio_dir, partial, wav.parent):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    assert not list(partial.glob(f"{call_id}.*"))  # the legs are gone once the WAV is written


# --- finding 6: sessions that fail their handshake store nothing ----------------------------------

BAD_TWILIO = {  # first messages of a stream -> the close code the server must answer with
    "not json": (["{not json"], 1007),
    "deeply nested json": (["[" * 100_000], 1007),
    "a JSON list": (["[1, 2]"], 1007),
    "binary": ([b"\x00\x01"], 1003),
    "media before start": ([json.dumps({"event": "media", "media": {"track": "inbound", "payload": ""}})], 1008),
    "start without a start object": ([json.dumps({"event": "start", "start": "x"})], 1008),
    "sampleRate not an integer": ([json.dumps(twilio_start(None, "bad", sampleRate="8k"))], 1003),
    "sampleRate a float": ([json.dumps(twilio_start(None, "bad", sampleRate=8000.5))], 1003),
    "sampleRate a string number": ([json.dumps(twilio_start(None, "bad", sampleRate="8000"))], 1003),
    "sampleRate unsupported": ([json.dumps(twilio_start(None, "bad", sampleRate=16000))], 1003),
    "channels not an integer": ([json.dumps(twilio_start(None, "bad", channels=[1]))], 1003),
    "wrong encoding": ([json.dumps(twilio_start(None, "bad", encoding="audio/l16"))], 1003),
}


def bad_start(**start) -> str:
    message = twilio_start(None, "bad")
    message["start"].update(start)
    return json.dumps(message)


BAD_TWILIO |= {
    "mediaFormat not an object": ([bad_start(mediaFormat="audio/x-mulaw")], 1003),
    "tracks a string": ([bad_start(tracks="inbound")], 1008),
    "tracks unknown": ([bad_start(tracks=[["inbound"], "sideways"])], 1008),
    "customParameters a list": ([bad_start(customParameters=["agent_id", "x"])], 1008),
    "start, then media for a track it did not name": (
        [bad_start(tracks=["inbound"]), json.dumps({"event": "media", "media": {"track": ["outbound"]}})], 1008),
}


def test_sessions_that_fail_their_handshake_store_nothing_and_the_listeners_keep_serving(service, speech, caplog):
    caplog.set_level(logging.INFO)
    service.wait_idle()
    before = set(service.rows())
    port = service.websocket.port
    for name, (messages, code) in BAD_TWILIO.items():
        with connect(f"ws://127.0.0.1:{port}/twilio", max_size=None) as ws:
            for message in messages:
                ws.send(message)
            got, reason = closed_with(ws)
        assert (got, bool(reason)) == (code, True), f"{name}: closed with {got} {reason!r}"
    # a valid start, then silence or nothing: a call without media is not stored
    with connect(f"ws://127.0.0.1:{port}/twilio") as ws:
        ws.send(json.dumps(twilio_start(None, "ag-no-media")))
    with connect(f"ws://127.0.0.1:{port}/twilio") as ws:
        ws.send(json.dumps(twilio_start(None, "ag-silence")))
        for message in twilio_media({k: np.zeros(2 * RATE, np.int16) for k in speech}):
            ws.send(message)
        ws.send(json.dumps({"event": "stop"}))
    # AudioHook: a wrong or missing key, no session id (refused before the WebSocket opens)...
    for headers, status in ((audiohook_headers("s1", "wrong"), 401), (audiohook_headers("s1", ""), 401),
                            ({"X-API-KEY": API_KEY}, 400)):
        with pytest.raises(InvalidStatus) as refused, connect(f"ws://127.0.0.1:{port}/audiohook",
                                                              additional_headers=headers):
            pass
        assert refused.value.response.status_code == status
    # ...or a bad open: no usable media, no conversation id, audio first, a wrong session id
    sid = str(uuid.uuid4())
    for first in (audiohook_message(sid, 1, "open", audiohook_open(str(uuid.uuid4()), media=[{"format": "L16"}])),
                  audiohook_message(sid, 1, "open", audiohook_open(None)),
                  audiohook_message(sid, 1, "open", audiohook_open(["list"])),
                  b"\xff" * 160,
                  audiohook_message("someone-else", 1, "open", audiohook_open(str(uuid.uuid4()))),
                  "{not json"):
        with connect(f"ws://127.0.0.1:{port}/audiohook", additional_headers=audiohook_headers(sid)) as ws:
            ws.send(first)
            answer = json.loads(ws.recv(timeout=10))
            assert (answer["type"], answer["parameters"]["reason"]) == ("disconnect", "error"), answer
    # AudioSocket: audio before the UUID, a short UUID, a UUID then hangup without any audio
    for frames in (encode_frame(0x10, b"\x01\x00" * 160), encode_frame(KIND_UUID, b"\x01" * 15),
                   encode_frame(KIND_UUID, uuid.uuid4().bytes) + encode_frame(KIND_HANGUP), b"\x01\x00"):
        with socket.create_connection(("127.0.0.1", service.audiosocket.port)) as sock:
            sock.sendall(frames)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            assert sock.recv(10) == b""  # closed by the server, nothing sent back
    # the listeners still serve: a good call placed after all that is stored
    twilio_call(port, twilio_start(None, "ag-after-junk"), speech)
    service.wait_for({"ag-after-junk"})
    service.wait_idle()
    new = {cid: row for cid, row in service.rows().items() if cid not in before}
    assert [agent for _, agent in new.values()] == ["ag-after-junk"], new
    assert service.engine.counters["calls_without_media"] >= 2
    assert not list((service.audio_dir / ".partial").iterdir())
    service.assert_nothing_outside()
    # every refusal left a log line, and none reached a handler's last-resort catch or failed the engine
    logged = [r.getMessage() for r in caplog.records]
    assert sum("twilio protocol error" in m for m in logged) >= len(BAD_TWILIO)
    assert sum("audiohook refused" in m for m in logged) >= 3
    assert sum("audiohook protocol error" in m for m in logged) >= 6
    assert sum(m.startswith("audiosocket") and r.levelno == logging.WARNING
               for m, r in zip(logged, caplog.records)) >= 4
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]


# --- a bounded fuzz run --------------------------------------------------------------------------------

def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 8000, 2 ** 63, -2 ** 70, rng.randrange(-10 ** 6, 10 ** 6)])
    if kind == 3:
        return rng.choice([1.5, -0.0, 1e308, 8000.0])
    if kind in (4, 5):
        return rng.choice(["", "inbound", "outbound", "../../../victim/victim", "/etc/passwd", "\x00", "é" * 50,
                           "x" * rng.randrange(1, 3000), "start", "media", "stop", "PCMU", "audio/x-mulaw"])
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["event", "start", "media", "track", "payload", "chunk", "x", "../k"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def mutate(rng: random.Random, message: dict) -> dict:
    """The message with one to three fields deleted or replaced by random JSON, at any depth."""
    message = json.loads(json.dumps(message))
    for _ in range(rng.randrange(1, 4)):
        node = message
        while isinstance(node, dict) and node and rng.random() < 0.6:
            key = rng.choice(list(node))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if rng.random() < 0.3:
                del node[key]
            else:
                node[key] = random_json(rng)
    return message


def fuzz_message(rng: random.Random, route: str, session_id: str, seq: int) -> str | bytes:
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randrange(0, 700))
    if roll < 0.2:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 200)))
    if roll < 0.3:
        return json.dumps(random_json(rng))
    if route == "/twilio":
        valid = rng.choice([twilio_start(rng.choice([None, "../../../victim/victim"]), "fuzz"),
                            {"event": "media", "media": {"track": "inbound", "chunk": str(seq),
                                                         "payload": base64.b64encode(rng.randbytes(160)).decode()}},
                            {"event": "stop"}, {"event": "mark", "mark": {"name": "m"}}])
    else:
        valid = json.loads(audiohook_message(session_id, seq, rng.choice(["open", "ping", "close", "paused"]),
                                             audiohook_open(rng.choice([str(uuid.uuid4()), "../x"]))))
    text = json.dumps(mutate(rng, valid) if roll < 0.8 else valid)
    return text[: rng.randrange(len(text))] if roll > 0.95 else text  # sometimes cut short


def test_bounded_websocket_fuzz_then_a_good_call_is_stored(service, speech, caplog):
    caplog.set_level(logging.INFO)
    rng = random.Random(20261126)
    port, sent, sessions, refused = service.websocket.port, 0, 0, 0
    t_end = time.monotonic() + FUZZ_CAP_S
    while sent < FUZZ_MESSAGES and time.monotonic() < t_end:
        route = rng.choices(["/twilio", "/audiohook", "/elsewhere"], [0.75, 0.2, 0.05])[0]
        session_id = rng.choice([str(uuid.uuid4()), "../../../victim/victim"])
        headers = audiohook_headers(session_id, rng.choice([API_KEY, API_KEY, "wrong"]))
        sessions += 1
        try:
            with connect(f"ws://127.0.0.1:{port}{route}", additional_headers=headers, open_timeout=10,
                         close_timeout=2) as ws:
                if route == "/twilio" and rng.random() < 0.5:  # often past the handshake, to fuzz what follows
                    ws.send(json.dumps(twilio_start(None, "fuzz")))
                    sent += 1
                for seq in range(1, rng.randrange(2, 40)):
                    ws.send(fuzz_message(rng, route, session_id, seq))
                    sent += 1
        except InvalidStatus:
            refused += 1
        except (ConnectionClosed, WebSocketException, OSError):
            pass  # the server closed a broken session: expected
    assert sent >= 1000 and sessions > 50, (sent, sessions)
    assert refused > 0  # the unknown path and the wrong keys were refused
    closes = [r for r in caplog.records if "protocol error" in r.getMessage()]
    assert len(closes) > 20  # the fuzz reached the protocol checks, not only the HTTP upgrade
    twilio_call(port, twilio_start(None, "ag-after-fuzz"), speech)
    call_id = service.wait_for({"ag-after-fuzz"}, timeout_s=300)["ag-after-fuzz"]
    service.wait_idle()
    assert OUR_ID.match(call_id)
    assert all(OUR_ID.match(cid) for cid in service.rows())
    assert not list((service.audio_dir / ".partial").iterdir())
    service.assert_nothing_outside()
    # every bad message met a check: none reached a handler's last-resort catch or failed the engine
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]
