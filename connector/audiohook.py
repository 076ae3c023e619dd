"""Genesys Cloud AudioHook receiver (the /audiohook route of connector.websocket), protocol version 2.

Genesys (the client) opens the WebSocket with Audiohook-Organization-Id, Audiohook-Session-Id,
Audiohook-Correlation-Id and X-API-KEY headers. Text messages are JSON with version "2", id
(the session id), type, seq (each side counts its own messages from 1), parameters, and
serverseq + position from the client or clientseq from the server. The client sends `open`
with media offers; the server answers `opened` with the one it chose; audio then arrives as
binary frames of interleaved PCMU, one byte per channel per sample, channels in the order of
the chosen media ("external" = the customer, "internal" = the agent). Also: ping -> pong,
paused/resumed, update, discarded, error (reports from the client), close -> closed. The
server asks to end with `disconnect` (reason "completed" | "unauthorized" | "error"), after
which the client runs the close transaction.

How it maps to the live boundary:

* One session is one call, with an id of our own (storage.files.new_call_id("audiohook")); the
  conversationId, session id, organization and correlation ids are data in the call's metadata
  under "external", never a file name. Legs are named after the channels,
  "external" (role customer, named after the participant's aniName or ani) and "internal"
  (role agent). Frames are 20 ms; `discarded` advances seq so lost audio shows as a gap.
* An `open` whose conversationId is the null UUID is Genesys's connection probe: it is
  answered `opened` and no call starts. An `open` without a conversationId is an error.
* A wrong or missing X-API-KEY (when audiohook_api_key is set) is refused with HTTP 401 before
  the WebSocket opens; a missing Audiohook-Session-Id with 400.
* Malformed JSON, an unknown message type, a wrong seq or session id, audio before `opened` or
  no acceptable media offer: the server sends `disconnect` (reason "error", with info), answers
  the client's `close` with `closed`, and closes the socket itself if the client does not within
  `close_wait_s`.
* What is checked before any call exists (the handshake): the X-API-KEY and the session-id
  header at the upgrade, then a well-formed `open` in sequence with an acceptable media offer.
  CallStarted is sent only after `opened` has been answered; a session that fails before that
  stores nothing, and one that never carries audio is dropped by the engine. customConfig
  agent_id / customer_id / team are kept when they are strings; every value is bounded
  (analysis.live.messages.call_metadata).
* The call ends once: "hangup" for close reason "end", the close reason otherwise ("error",
  "disconnect", "reconnect"), "protocol_error" after a disconnect the server signalled,
  "disconnect" when the socket drops without a close, "shutdown" when the server stops.

Not implemented: HTTP message signatures (Signature/Signature-Input headers with the client
secret), L16 media, re-connection (continuedSessions), server-initiated pause/resume and events.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo, LiveSink, call_metadata, wire_text
from emotivoice.connector.mulaw import DECODE_TABLE
from emotivoice.config import ConnectorConfig
from emotivoice.storage.files import new_call_id

log = logging.getLogger(__name__)

NULL_UUID = "00000000-0000-0000-0000-000000000000"
CHANNEL_ROLES = {"external": "customer", "internal": "agent"}
SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
MAX_SESSION_ID = 128  # a UUID is 36; anything much longer is not Genesys
CLIENT_MESSAGES = {"open", "close", "ping", "paused", "resumed", "update", "discarded", "error"}
_DURATION = re.compile(r"^PT(\d+(?:\.\d+)?)S$")


class SessionError(Exception):
    """The client broke the protocol; the server signals `disconnect` with reason "error"."""


@dataclass(frozen=True)
class AudioHookOptions:
    close_wait_s: float = 5.0  # after disconnect/closed, how long the client gets to close the socket


@dataclass
class _Session:
    session_id: str
    remote: str
    seq: int = 0  # last server message sent
    clientseq: int = 0  # last client message received
    state: str = "preparing"  # preparing | active | paused | error | closed
    call_id: str | None = None
    channels: tuple[str, ...] = ()
    leg_seq: dict[str, int] = field(default_factory=dict)
    end_reason: str = "disconnect"


def parse_duration(value: object) -> float:
    """AudioHook durations are ISO 8601 seconds, "PT1.25S"."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    return float(match.group(1)) if match else 0.0


class AudioHookRoute:
    """Serves one AudioHook session per connection."""

    def __init__(self, cfg: ConnectorConfig, sink: LiveSink, options: AudioHookOptions | None = None):
        self.api_key = cfg.audiohook_api_key
        self.sink = sink
        self.options = options or AudioHookOptions()
        self._closing = False

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        if self.api_key and not hmac.compare_digest(headers.get("X-API-KEY", "").encode(), self.api_key.encode()):
            log.warning("audiohook refused: wrong API key", extra={"remote": _remote(connection),
                        "organization_id": wire_text(headers.get("Audiohook-Organization-Id"), 64)})
            return connection.respond(401, "Unauthorized\n")
        session_id = headers.get("Audiohook-Session-Id", "")
        if not session_id or len(session_id) > MAX_SESSION_ID or not session_id.isprintable():
            log.warning("audiohook refused: missing or malformed Audiohook-Session-Id",
                        extra={"remote": _remote(connection), "length": len(session_id)})
            return connection.respond(400, "Audiohook-Session-Id header required (a UUID)\n")
        return None

    def shutting_down(self) -> None:
        self._closing = True

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        headers = ws.request.headers
        session = _Session(headers.get("Audiohook-Session-Id", ""), _remote(ws))
        correlation_id = headers.get("Audiohook-Correlation-Id")
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    message = await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:
                    await ws.close(1000 if session.state == "closed" else 1008, "session over")
                    break
                try:
                    if isinstance(message, bytes):
                        self._audio(session, message)
                    else:
                        await self._message(ws, session, message, correlation_id)
                except SessionError as exc:
                    await self._signal_error(ws, session, str(exc))
                if session.state in ("error", "closed") and deadline is None:
                    deadline = loop.time() + self.options.close_wait_s
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug of ours must not leave a session half served or kill the listener
            log.exception("audiohook session failed", extra={"call_id": session.call_id, "remote": session.remote,
                                                            "error": repr(exc)[:200]})
            session.end_reason = "protocol_error"
            await ws.close(1011, "internal error")
        finally:
            self._end_call(session)

    async def _message(self, ws: ServerConnection, session: _Session, text: str, correlation_id: str | None) -> None:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise SessionError("text message is not valid JSON") from None
        if not (isinstance(msg, dict) and msg.get("version") == "2" and isinstance(msg.get("type"), str)
                and isinstance(msg.get("seq"), int) and isinstance(msg.get("serverseq"), int)
                and isinstance(msg.get("id"), str) and isinstance(msg.get("parameters", {}), dict)):
            raise SessionError("not a well-formed AudioHook v2 client message")
        if session.state == "error":  # after a signalled error only the client's close transaction matters
            session.clientseq = max(session.clientseq, msg["seq"])
            if msg["type"] == "close":
                await self._close(ws, session, msg.get("parameters", {}))
            return
        if msg["seq"] != session.clientseq + 1:
            raise SessionError(f"seq {msg['seq']} does not follow {session.clientseq}")
        session.clientseq = msg["seq"]
        if msg["serverseq"] > session.seq:
            raise SessionError(f"serverseq {msg['serverseq']} is ahead of the server's seq {session.seq}")
        if msg["id"] != session.session_id:
            raise SessionError("session id differs from the Audiohook-Session-Id header")
        kind, params = msg["type"], msg.get("parameters", {})
        if kind not in CLIENT_MESSAGES:
            raise SessionError(f"'{kind}' is not a supported client message")
        if kind == "open":
            await self._open(ws, session, params, correlation_id)
        elif kind == "ping":
            await self._send(ws, session, "pong", {})
        elif kind == "close":
            await self._close(ws, session, params)
        elif kind == "paused" and session.state == "active":
            session.state = "paused"
        elif kind == "resumed" and session.state == "paused":
            session.state = "active"
        elif kind == "discarded":
            lost_frames = round(parse_duration(params.get("discarded")) * SAMPLE_RATE / FRAME_SAMPLES)
            for leg in session.leg_seq:
                session.leg_seq[leg] += lost_frames
        elif kind in ("error", "update"):
            log.info(f"audiohook client {kind}", extra={"call_id": session.call_id,
                                                        "parameters": str(params)[:200]})

    async def _close(self, ws: ServerConnection, session: _Session, params: dict) -> None:
        reason = params.get("reason")
        if session.end_reason != "protocol_error":
            session.end_reason = "hangup" if reason == "end" else (wire_text(reason, 40) or "disconnect")
        self._end_call(session)
        await self._send(ws, session, "closed", {})
        session.state = "closed"

    async def _open(self, ws: ServerConnection, session: _Session, params: dict, correlation_id: str | None) -> None:
        if session.state != "preparing":
            raise SessionError(f"open in state {session.state}")
        media = choose_media(params.get("media"))
        if media is None:
            raise SessionError("no offered media is PCMU at 8000 Hz with external/internal channels")
        conversation_id = wire_text(params.get("conversationId"), 128)
        if conversation_id is None:
            raise SessionError("open without a conversationId")
        await self._send(ws, session, "opened", {"media": [media], "startPaused": False})
        session.state = "active"
        session.channels = tuple(media["channels"])
        if conversation_id == NULL_UUID:
            log.info("audiohook connection probe answered", extra={"remote": session.remote})
            return
        call_id = new_call_id("audiohook")
        session.call_id = call_id
        participant = params.get("participant") if isinstance(params.get("participant"), dict) else {}
        custom = params.get("customConfig") if isinstance(params.get("customConfig"), dict) else {}
        customer_name = wire_text(participant.get("aniName")) or wire_text(participant.get("ani"))
        legs = tuple(LegInfo(ch, CHANNEL_ROLES[ch], customer_name if ch == "external" else None, SAMPLE_RATE)
                     for ch in session.channels)
        session.leg_seq = {ch: 0 for ch in session.channels}
        external = {"organization_id": params.get("organizationId"), "conversation_id": conversation_id,
                    "audiohook_session_id": session.session_id, "correlation_id": correlation_id,
                    "ani": participant.get("ani"), "ani_name": participant.get("aniName"),
                    "dnis": participant.get("dnis"), "language": params.get("language")}
        metadata = call_metadata(custom, external)
        self.sink.start(CallStarted(call_id, "audiohook", legs, remote=session.remote, metadata=metadata))
        log.info("audiohook call started", extra={"call_id": call_id, "channels": session.channels,
                                                  "external": metadata.get("external")})

    def _audio(self, session: _Session, data: bytes) -> None:
        if session.state == "error":
            return
        if session.state not in ("active", "paused"):
            raise SessionError(f"audio in state {session.state}")
        if session.call_id is None:
            return  # connection probe
        width = len(session.channels)
        if len(data) % width:
            raise SessionError(f"audio frame of {len(data)} bytes is not whole {width}-channel samples")
        interleaved = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)
        for index, channel in enumerate(session.channels):
            pcm = DECODE_TABLE[interleaved[:, index]].astype("<i2", copy=False)
            for start in range(0, len(pcm), FRAME_SAMPLES):
                seq = session.leg_seq[channel]
                session.leg_seq[channel] = seq + 1
                self.sink.push(Frame(session.call_id, channel, seq, pcm[start:start + FRAME_SAMPLES].tobytes()))

    async def _signal_error(self, ws: ServerConnection, session: _Session, info: str) -> None:
        log.warning("audiohook protocol error", extra={"call_id": session.call_id, "remote": session.remote,
                                                       "error": info, "state": session.state})
        if session.state in ("error", "closed"):
            return
        session.state = "error"
        session.end_reason = "protocol_error"
        await self._send(ws, session, "disconnect", {"reason": "error", "info": info})

    async def _send(self, ws: ServerConnection, session: _Session, kind: str, params: dict) -> None:
        session.seq += 1
        await ws.send(json.dumps({"version": "2", "type": kind, "id": session.session_id, "seq": session.seq,
                                  "clientseq": session.clientseq, "parameters": params}))

    def _end_call(self, session: _Session) -> None:
        if session.call_id is None:
            return
        reason = session.end_reason
        if self._closing and reason == "disconnect" and session.state not in ("closed",):
            reason = "shutdown"
        self.sink.end(CallEnded(session.call_id, reason=reason))
        log.info("audiohook call ended", extra={"call_id": session.call_id, "reason": reason})
        session.call_id = None


def choose_media(offers: object) -> dict | None:
    """The offer to accept: PCMU at 8 kHz with known channels, the most channels first (both parties)."""
    usable = [offer for offer in (offers if isinstance(offers, list) else [])
              if isinstance(offer, dict) and offer.get("type") == "audio" and offer.get("format") == "PCMU"
              and offer.get("rate") == SAMPLE_RATE and isinstance(offer.get("channels"), list)
              and offer["channels"] and all(ch in CHANNEL_ROLES for ch in offer["channels"])
              and len(set(offer["channels"])) == len(offer["channels"])]
    if not usable:
        return None
    best = max(usable, key=lambda offer: len(offer["channels"]))
    return {"type": "audio", "format": "PCMU", "channels": list(best["channels"]), "rate": SAMPLE_RATE}


def _remote(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else ""
