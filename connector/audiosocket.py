"""Asterisk AudioSocket receiver: call audio forked over plain TCP, one connection per stream.

The protocol (docs.asterisk.org, Channel-Drivers/AudioSocket) frames everything as a 1-byte
kind, a 2-byte big-endian payload length and the payload. The first frame is the stream's
UUID (0x01, 16 bytes); then audio (0x10: signed linear 16-bit little-endian, 8 kHz mono,
normally 320 bytes = 20 ms; 0x11-0x18 carry the same at higher rates), DTMF digits (0x03),
hangup (0x00, or simply closing the socket) and errors (0xff, an application error code).

The protocol says nothing about calls with two parties, so this receiver decides:

* A connection with a UUID of no call yet is a new call: while recording cannot keep up
  (analysis/live/recording.py) it is refused, closed without a word (the protocol has no
  refusal), logged and counted (`refused`).
* Connections that send the same UUID are the legs of one call (Asterisk's dialplan gives
  both forks of a call the same `AudioSocket(${uuid},host:port)` argument). The UUID pairs
  them in memory and is kept as data in the call's metadata ("external": audiosocket_uuid);
  the call id is our own (storage.files.new_call_id("audiosocket")) and names its recording.
* Legs take their names and roles from `audiosocket_leg_roles` in the order they connect
  ("customer,agent": the first connection is the customer). An empty setting gives legs
  "leg1", "leg2" with no role.
* The handshake is the UUID frame, which must come first (kind 0x01, 16 bytes, within
  `uuid_timeout_s`), then a first audio frame. A connection whose first frame is anything
  else is closed and logged (nothing is sent back: see below) and stores nothing; so does a
  call none of whose legs sent audio before hanging up.
* The call starts (CallStarted) once every expected leg has connected and sent its first
  audio frame (which fixes its sample rate), or at the first audio frame after
  `audiosocket_pair_wait_s` from the first connection, or once a leg has 5 s of audio held,
  whichever comes first; frames that arrive before then are held and handed on in order. A
  connection for a call that has already started is refused (closed, logged): CallStarted
  lists a call's legs once.
* The call ends (CallEnded, exactly once) when every leg has hung up, errored or dropped.
  Its reason is "hangup" when every leg ended cleanly (hangup frame, or socket closed at a
  frame boundary, which the protocol allows), else the first other reason: "error" (0xff
  frame), "dropped" (connection lost mid-frame or reset), "protocol_error", "shutdown".

Nothing is ever sent back to Asterisk: a receiver that sent a hangup frame would end the call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo, LiveSink, call_metadata, refusal
from emotivoice.connector.loop_thread import LoopThread
from emotivoice.config import ConnectorConfig
from emotivoice.storage.files import new_call_id

log = logging.getLogger(__name__)

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_ERROR = 0xFF
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
               0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
ASTERISK_ERRORS = {0x01: "hangup of calling party", 0x02: "frame forwarding error", 0x04: "memory error"}


@dataclass(frozen=True)
class AudioSocketOptions:
    """How connections are grouped into calls; see the module docstring."""

    leg_roles: tuple[str, ...] = ("customer", "agent")  # empty: unnamed legs "leg1", "leg2" without roles
    pair_wait_s: float = 1.0
    uuid_timeout_s: float = 10.0  # a connection that sends no UUID frame within this is closed
    max_held_frames: int = 250  # a leg holding this many frames (5 s of 20 ms) starts its call without waiting more

    @classmethod
    def from_config(cls, cfg: ConnectorConfig) -> AudioSocketOptions:
        roles = tuple(r.strip() for r in cfg.audiosocket_leg_roles.split(",") if r.strip())
        return cls(leg_roles=roles, pair_wait_s=cfg.audiosocket_pair_wait_s)

    @property
    def legs_per_call(self) -> int:
        return len(self.leg_roles) or 2


class ProtocolError(Exception):
    """The peer broke the AudioSocket framing rules; its connection is closed."""


@dataclass
class _Leg:
    call: _Call
    name: str
    role: str | None
    sample_rate: int | None = None
    seq: int = 0
    held: list[Frame] = field(default_factory=list)
    ended: str | None = None  # the reason, once the connection is gone
    rate_warned: bool = False


@dataclass
class _Call:
    uuid: str  # the peer's: pairs the legs, kept as data
    call_id: str  # ours: names the call and its recording
    remote: str
    legs: list[_Leg] = field(default_factory=list)
    started: bool = False
    waited: bool = False  # the pairing wait is over: the first audio starts the call
    timer: asyncio.TimerHandle | None = None


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (kind, payload) frame; IncompleteReadError when the stream ends (partial says mid-frame)."""
    header = await reader.readexactly(3)
    length = int.from_bytes(header[1:3], "big")
    payload = await reader.readexactly(length) if length else b""
    return header[0], payload


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """The wire form of one frame (for clients and tests)."""
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


class AudioSocketServer:
    """Listens for AudioSocket connections and feeds their audio to `sink`.

    start() binds and returns at once (the server runs on its own daemon thread); `port` is
    the bound port, so port 0 picks a free one (tests). The composition root leaves the server
    unstarted when the configured port is 0. stop() closes every connection and ends every
    open call with reason "shutdown".
    """

    def __init__(self, cfg: ConnectorConfig, sink: LiveSink, options: AudioSocketOptions | None = None):
        self.host = cfg.audiosocket_host
        self.port = cfg.audiosocket_port
        self.sink = sink
        self.options = options or AudioSocketOptions.from_config(cfg)
        self._thread = LoopThread("audiosocket")
        self._server: asyncio.Server | None = None
        self._calls: dict[str, _Call] = {}
        self._connections: set[asyncio.Task] = set()
        self.refused = 0  # new calls refused because recording could not keep up

    def start(self) -> None:
        self._thread.start()
        self._thread.run(self._listen)
        log.info("audiosocket listening", extra={"host": self.host, "port": self.port})

    def stop(self) -> None:
        if self._server is not None:
            self._thread.run(self._shutdown, timeout=15.0)
        self._thread.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if peer else ""
        leg: _Leg | None = None
        reason = "hangup"
        try:
            kind, payload = await asyncio.wait_for(read_frame(reader), self.options.uuid_timeout_s)
            if kind != KIND_UUID or len(payload) != 16:
                raise ProtocolError(f"first frame is kind 0x{kind:02x} with {len(payload)} bytes, not a 16-byte UUID")
            leg = self._join(str(uuid.UUID(bytes=payload)), remote)
            if leg is None:
                return
            reason = await self._read_stream(reader, leg)
        except asyncio.IncompleteReadError as exc:
            reason = "dropped" if exc.partial else "hangup"  # closing the socket is a valid hangup
            if leg is None:
                log.warning("audiosocket connection closed before its UUID frame", extra={"remote": remote})
        except TimeoutError:
            reason = "dropped"
            log.warning("audiosocket connection closed: no UUID frame in time",
                        extra={"remote": remote, "timeout_s": self.options.uuid_timeout_s})
        except (ConnectionError, OSError) as exc:
            reason = "dropped"
            log.warning("audiosocket connection lost", extra={"remote": remote, "error": repr(exc)})
        except ProtocolError as exc:
            reason = "protocol_error"
            log.warning("audiosocket protocol error", extra={"remote": remote, "error": str(exc),
                                                             "call_id": leg.call.call_id if leg else None})
        except asyncio.CancelledError:
            reason = "shutdown"
        except Exception as exc:  # a bug of ours must not kill the listener or leave the call open
            reason = "protocol_error"
            log.exception("audiosocket connection failed", extra={"remote": remote, "error": repr(exc)[:200],
                                                                  "call_id": leg.call.call_id if leg else None})
        finally:
            writer.close()
            if leg is not None:
                self._leave(leg, reason)
            self._connections.discard(task)

    async def _read_stream(self, reader: asyncio.StreamReader, leg: _Leg) -> str:
        """Frames after the UUID, until the leg ends; returns why it ended."""
        while True:
            kind, payload = await read_frame(reader)
            if kind in AUDIO_RATES:
                self._on_audio(leg, AUDIO_RATES[kind], payload)
                await asyncio.sleep(0)  # a burst already buffered must not starve the other connections
            elif kind == KIND_HANGUP:
                return "hangup"
            elif kind == KIND_ERROR:
                code = payload[0] if payload else None
                log.warning("audiosocket peer reported an error",
                            extra={"call_id": leg.call.call_id, "leg": leg.name, "code": code,
                                   "meaning": ASTERISK_ERRORS.get(code or -1, "application-specific")})
                return "error"
            elif kind == KIND_DTMF:
                log.info("audiosocket dtmf", extra={"call_id": leg.call.call_id, "leg": leg.name,
                                                    "digit": payload[:1].decode("ascii", "replace")})
            elif kind == KIND_UUID:
                raise ProtocolError("a second UUID frame on one connection")
            else:
                log.debug("audiosocket frame kind ignored", extra={"kind": kind, "bytes": len(payload)})

    def _join(self, call_uuid: str, remote: str) -> _Leg | None:
        call = self._calls.get(call_uuid)
        if call is None:
            overloaded = refusal(self.sink, "audiosocket")
            if overloaded:  # the protocol has no refusal message: the connection is closed unanswered
                self.refused += 1
                log.warning("audiosocket call refused: recording cannot keep up",
                            extra={"audiosocket_uuid": call_uuid, "remote": remote, "reason": overloaded,
                                   "refused": self.refused})
                return None
            call = self._calls[call_uuid] = _Call(call_uuid, new_call_id("audiosocket"), remote)
            loop = asyncio.get_running_loop()
            call.timer = loop.call_later(self.options.pair_wait_s, self._pair_wait_over, call)
        elif call.started or len(call.legs) >= self.options.legs_per_call:
            log.warning("audiosocket connection refused: its call has already started",
                        extra={"call_id": call.call_id, "audiosocket_uuid": call_uuid, "remote": remote,
                               "legs": [leg.name for leg in call.legs]})
            return None
        call_id = call.call_id
        index = len(call.legs)
        if self.options.leg_roles:
            name, role = self.options.leg_roles[index], self.options.leg_roles[index]
        else:
            name, role = f"leg{index + 1}", None
        leg = _Leg(call, name, role)
        call.legs.append(leg)
        log.info("audiosocket leg joined", extra={"call_id": call_id, "leg": name, "remote": remote})
        self._start_if_ready(call)
        return leg

    def _on_audio(self, leg: _Leg, rate: int, payload: bytes) -> None:
        if len(payload) % 2:
            raise ProtocolError(f"audio payload of {len(payload)} bytes is not whole 16-bit samples")
        if leg.sample_rate is None:
            leg.sample_rate = rate
        elif rate != leg.sample_rate:
            if not leg.rate_warned:
                log.warning("audiosocket sample rate changed mid-call; frames at the new rate are dropped",
                            extra={"call_id": leg.call.call_id, "leg": leg.name, "rate": rate,
                                   "declared_rate": leg.sample_rate})
                leg.rate_warned = True
            leg.seq += 1
            return
        frame = Frame(leg.call.call_id, leg.name, leg.seq, payload)
        leg.seq += 1
        if leg.call.started:
            self.sink.push(frame)
        else:
            leg.held.append(frame)
            if len(leg.held) >= self.options.max_held_frames:
                self._start_call(leg.call)  # waited long enough in audio terms: start rather than drop
            else:
                self._start_if_ready(leg.call)

    def _start_if_ready(self, call: _Call) -> None:
        if call.started:
            return
        heard = [leg.sample_rate is not None for leg in call.legs]
        if (call.waited and any(heard)) or (len(call.legs) >= self.options.legs_per_call and all(heard)):
            self._start_call(call)

    def _pair_wait_over(self, call: _Call) -> None:
        """The other legs had their chance to connect: start at the first audio (now, if some came)."""
        call.waited = True
        self._start_if_ready(call)

    def _start_call(self, call: _Call) -> None:
        if call.started:
            return
        call.started = True
        if call.timer is not None:
            call.timer.cancel()
        for leg in call.legs:
            leg.sample_rate = leg.sample_rate or 8000  # a leg silent so far is declared at the protocol's base rate
        legs = tuple(LegInfo(leg.name, leg.role, None, leg.sample_rate) for leg in call.legs)
        self.sink.start(CallStarted(call.call_id, "audiosocket", legs, remote=call.remote,
                                    metadata=call_metadata({}, {"audiosocket_uuid": call.uuid})))
        log.info("audiosocket call started", extra={"call_id": call.call_id, "audiosocket_uuid": call.uuid,
                                                    "legs": [leg.leg for leg in legs]})
        for leg in call.legs:
            for frame in leg.held:
                self.sink.push(frame)
            leg.held.clear()

    def _leave(self, leg: _Leg, reason: str) -> None:
        leg.ended = reason
        call = leg.call
        log.info("audiosocket leg ended", extra={"call_id": call.call_id, "leg": leg.name, "reason": reason,
                                                 "frames": leg.seq})
        if any(other.ended is None for other in call.legs):
            return
        self._calls.pop(call.uuid, None)
        if call.timer is not None:
            call.timer.cancel()
        if not call.started and not any(other.held for other in call.legs):
            log.warning("audiosocket call ended before any audio; nothing stored",
                        extra={"audiosocket_uuid": call.uuid, "remote": call.remote,
                               "reasons": [other.ended for other in call.legs]})
            return
        self._start_call(call)  # a call whose legs all ended before it started is still reported
        reasons = [other.ended for other in call.legs if other.ended != "hangup"]
        self.sink.end(CallEnded(call.call_id, reason=reasons[0] if reasons else "hangup"))
        log.info("audiosocket call ended",
                 extra={"call_id": call.call_id, "reason": reasons[0] if reasons else "hangup"})
