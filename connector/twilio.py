"""Twilio Media Streams receiver (the /twilio route of connector.websocket).

Twilio opens one WebSocket per <Stream> and sends JSON text messages (twilio.com/docs/voice/
media-streams/websocket-messages): `connected`, then `start` once (streamSid, callSid, tracks,
mediaFormat, customParameters), then `media` (track "inbound"|"outbound", chunk from 1,
timestamp in ms, base64 8 kHz µ-law payload, normally 20 ms), `dtmf`, `mark`, and `stop` last.

How it maps to the live boundary:

* One stream is one call. Its id is customParameters["call_id"] when the <Stream> sets one,
  else the callSid; a second stream with an id already open here gets "<id>/<streamSid>".
* Each track in start.tracks is a leg named after it: "inbound" (what Twilio hears from the
  caller: role "customer") and "outbound" (what Twilio sends to the caller: the agent).
* Frame.seq is the media chunk number minus one, so a gap in Twilio's chunks shows as a gap.
* customParameters go into the call's metadata as given (agent_id, customer_id, team...),
  with stream_sid, call_sid and account_sid beside them.
* The call ends once: "hangup" on `stop`, "disconnect" when the socket closes without one,
  "protocol_error" when the stream breaks the protocol, "shutdown" when the server stops.

Twilio defines no error message towards the server's peer, so a protocol violation is answered
with a WebSocket close: 1007 for a text message that is not a JSON object, 1003 for binary data
or an unsupported media format, 1008 for messages out of order. Unknown events are logged and
ignored (Twilio adds events over time).

Not checked: the X-Twilio-Signature header (it needs the account's auth token); put the listener
behind a proxy that checks it, or on a private address.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo, LiveSink
from connector.mulaw import mulaw_to_pcm16_bytes

log = logging.getLogger(__name__)

TRACK_ROLES = {"inbound": "customer", "outbound": "agent"}
SAMPLE_RATE = 8000


class StreamError(Exception):
    """The stream broke the Media Streams protocol; closes the socket with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


@dataclass
class _Stream:
    call_id: str
    stream_sid: str
    tracks: tuple[str, ...]
    next_seq: dict[str, int] = field(default_factory=dict)


class TwilioRoute:
    """Serves one Twilio Media Stream per connection."""

    def __init__(self, sink: LiveSink):
        self.sink = sink
        self._open_calls: set[str] = set()
        self._closing = False

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return None

    def shutting_down(self) -> None:
        self._closing = True

    async def handle(self, ws: ServerConnection) -> None:
        remote = _remote(ws)
        stream: _Stream | None = None
        reason = "disconnect"
        try:
            async for message in ws:
                event = self._parse(message)
                name = event.get("event")
                if name == "start":
                    if stream is not None:
                        raise StreamError(1008, "second start message")
                    stream = self._start(event, remote)
                elif name == "media":
                    if stream is None:
                        raise StreamError(1008, "media before start")
                    self._media(stream, event)
                elif name == "stop":
                    reason = "hangup"
                    break
                elif name == "connected":
                    continue
                elif name in ("dtmf", "mark"):
                    log.info(f"twilio {name}", extra={"call_id": stream.call_id if stream else None,
                                                      name: event.get(name)})
                else:
                    log.info("twilio event ignored", extra={"event": str(name)[:40], "remote": remote})
        except StreamError as exc:
            reason = "protocol_error"
            log.warning("twilio protocol error", extra={"remote": remote, "error": str(exc),
                                                        "call_id": stream.call_id if stream else None})
            await ws.close(exc.code, str(exc)[:120])
        except ConnectionClosed:
            reason = "disconnect"
        finally:
            if self._closing and reason == "disconnect":
                reason = "shutdown"
            if stream is not None:
                self._open_calls.discard(stream.call_id)
                self.sink.end(CallEnded(stream.call_id, reason=reason))
                log.info("twilio call ended", extra={"call_id": stream.call_id, "reason": reason})

    @staticmethod
    def _parse(message: str | bytes) -> dict:
        if isinstance(message, bytes):
            raise StreamError(1003, "binary message; Media Streams sends JSON text")
        try:
            event = json.loads(message)
        except ValueError:
            raise StreamError(1007, "message is not JSON") from None
        if not isinstance(event, dict):
            raise StreamError(1007, "message is not a JSON object")
        return event

    def _start(self, event: dict, remote: str) -> _Stream:
        start = event.get("start")
        if not isinstance(start, dict):
            raise StreamError(1008, "start message without a start object")
        fmt = start.get("mediaFormat") or {}
        if (fmt.get("encoding"), int(fmt.get("sampleRate") or 0), int(fmt.get("channels") or 1)) != \
                ("audio/x-mulaw", SAMPLE_RATE, 1):
            raise StreamError(1003, f"unsupported media format {fmt}")
        tracks = tuple(t for t in (start.get("tracks") or ["inbound"]) if t in TRACK_ROLES)
        if not tracks:
            raise StreamError(1008, f"no known track in {start.get('tracks')}")
        stream_sid = str(start.get("streamSid") or event.get("streamSid") or "")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            params = {}
        call_id = str(params.get("call_id") or start.get("callSid") or stream_sid)
        if not call_id:
            raise StreamError(1008, "start message names no call or stream")
        if call_id in self._open_calls:
            call_id = f"{call_id}/{stream_sid}"
        self._open_calls.add(call_id)
        metadata = {**{str(k): v for k, v in params.items()}, "stream_sid": stream_sid,
                    "call_sid": start.get("callSid"), "account_sid": start.get("accountSid")}
        legs = tuple(LegInfo(track, TRACK_ROLES[track], None, SAMPLE_RATE) for track in tracks)
        self.sink.start(CallStarted(call_id, "twilio", legs, remote=remote, metadata=metadata))
        log.info("twilio call started", extra={"call_id": call_id, "stream_sid": stream_sid, "tracks": tracks})
        return _Stream(call_id, stream_sid, tracks, {track: 0 for track in tracks})

    def _media(self, stream: _Stream, event: dict) -> None:
        media = event.get("media")
        if not isinstance(media, dict):
            raise StreamError(1008, "media message without a media object")
        track = media.get("track", stream.tracks[0])
        if track not in stream.next_seq:
            raise StreamError(1008, f"media for track {track!r}, not one of {stream.tracks}")
        try:
            payload = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError):
            raise StreamError(1007, "media payload is not base64") from None
        seq = stream.next_seq[track]
        try:
            seq = max(seq, int(media.get("chunk")) - 1)  # chunks count from 1 per track
        except (TypeError, ValueError):
            pass
        stream.next_seq[track] = seq + 1
        self.sink.push(Frame(stream.call_id, track, seq, mulaw_to_pcm16_bytes(payload)))


def _remote(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else ""
