"""Twilio Media Streams receiver (the /twilio route of connector.websocket).

Twilio opens one WebSocket per <Stream> and sends JSON text messages (twilio.com/docs/voice/
media-streams/websocket-messages): `connected`, then `start` once (streamSid, callSid, tracks,
mediaFormat, customParameters), then `media` (track "inbound"|"outbound", chunk from 1,
timestamp in ms, base64 8 kHz µ-law payload, normally 20 ms), `dtmf`, `mark`, and `stop` last.

How it maps to the live boundary:

* One stream is one call, with an id of our own (storage.files.new_call_id("twilio")). Twilio's
  ids are data in the call's metadata under "external" (stream_sid, call_sid, account_sid, and
  customParameters["call_id"] as custom_call_id): none of them ever names a file.
* Each track in start.tracks is a leg named after it: "inbound" (what Twilio hears from the
  caller: role "customer") and "outbound" (what Twilio sends to the caller: the agent).
* Frame.seq is the media chunk number minus one, so a gap in Twilio's chunks shows as a gap.
* customParameters agent_id, customer_id and team become the call's fields; other parameters
  are kept as data under "custom" (strings only, bounded: analysis.live.messages.call_metadata).
* The call ends once: "hangup" on `stop`, "disconnect" when the socket closes without one,
  "protocol_error" when the stream breaks the protocol, "shutdown" when the server stops.

What is checked: the `start` message is the handshake. Until it has been fully validated (a
JSON object with a start object, mediaFormat audio/x-mulaw at an integer 8000 Hz, one channel,
tracks a list naming inbound and/or outbound) no call exists; a stream that fails it, or sends
media before it, is closed and stores nothing (CallStarted is sent only after it passes).
Twilio defines no error message towards the server's peer, so a protocol violation is answered
with a WebSocket close and a log line: 1007 for a text message that is not a JSON object or a
payload that is not base64, 1003 for binary data or an unsupported media format, 1008 for
messages out of order or malformed, 1011 for anything unexpected on our side. Unknown events
are logged and ignored (Twilio adds events over time). A call that started but never carried
audio is dropped by the engine (analysis/live/finalize.py).

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

from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo, LiveSink, call_metadata
from emotivoice.connector.mulaw import mulaw_to_pcm16_bytes
from emotivoice.storage.files import new_call_id

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
    call_id: str  # ours (new_call_id), never Twilio's
    tracks: tuple[str, ...]
    next_seq: dict[str, int] = field(default_factory=dict)


class TwilioRoute:
    """Serves one Twilio Media Stream per connection."""

    def __init__(self, sink: LiveSink):
        self.sink = sink
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
                                                      name: str(event.get(name))[:100]})
                else:
                    log.info("twilio event ignored", extra={"event": str(name)[:40], "remote": remote})
        except StreamError as exc:
            reason = "protocol_error"
            log.warning("twilio protocol error", extra={"remote": remote, "error": str(exc),
                                                        "call_id": stream.call_id if stream else None})
            await ws.close(exc.code, str(exc)[:120])
        except ConnectionClosed:
            reason = "disconnect"
        except Exception as exc:  # a bug of ours must not leave a stream half served or kill the listener
            reason = "protocol_error"
            log.exception("twilio stream failed", extra={"remote": remote, "error": repr(exc)[:200],
                                                         "call_id": stream.call_id if stream else None})
            await ws.close(1011, "internal error")
        finally:
            if self._closing and reason == "disconnect":
                reason = "shutdown"
            if stream is not None:
                self.sink.end(CallEnded(stream.call_id, reason=reason))
                log.info("twilio call ended", extra={"call_id": stream.call_id, "reason": reason})

    @staticmethod
    def _parse(message: str | bytes) -> dict:
        if isinstance(message, bytes):
            raise StreamError(1003, "binary message; Media Streams sends JSON text")
        try:
            event = json.loads(message)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than any real message
            raise StreamError(1007, "message is not JSON") from None
        if not isinstance(event, dict):
            raise StreamError(1007, "message is not a JSON object")
        return event

    def _start(self, event: dict, remote: str) -> _Stream:
        """Validate the start message completely, then start the call: nothing before that."""
        start = event.get("start")
        if not isinstance(start, dict):
            raise StreamError(1008, "start message without a start object")
        check_media_format(start.get("mediaFormat"))
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise StreamError(1008, "start.tracks is not a list of track names")
        tracks = tuple(dict.fromkeys(t for t in tracks if t in TRACK_ROLES))
        if not tracks:
            raise StreamError(1008, f"no known track in {str(start.get('tracks'))[:60]}")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise StreamError(1008, "start.customParameters is not an object")
        stream_sid = start.get("streamSid") or event.get("streamSid")
        external = {"stream_sid": stream_sid, "call_sid": start.get("callSid"),
                    "account_sid": start.get("accountSid"), "custom_call_id": params.get("call_id")}
        metadata = call_metadata(params, external, {k: v for k, v in params.items() if k != "call_id"})
        call_id = new_call_id("twilio")
        legs = tuple(LegInfo(track, TRACK_ROLES[track], None, SAMPLE_RATE) for track in tracks)
        self.sink.start(CallStarted(call_id, "twilio", legs, remote=remote, metadata=metadata))
        log.info("twilio call started", extra={"call_id": call_id, "tracks": tracks, "remote": remote,
                                               "external": metadata.get("external")})
        return _Stream(call_id, tracks, {track: 0 for track in tracks})

    def _media(self, stream: _Stream, event: dict) -> None:
        media = event.get("media")
        if not isinstance(media, dict):
            raise StreamError(1008, "media message without a media object")
        track = media.get("track", stream.tracks[0])
        if not isinstance(track, str) or track not in stream.next_seq:
            raise StreamError(1008, f"media for track {str(track)[:40]!r}, not one of {stream.tracks}")
        try:
            payload = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise StreamError(1007, "media payload is not base64") from None
        seq = stream.next_seq[track]
        try:
            seq = max(seq, int(media.get("chunk")) - 1)  # chunks count from 1 per track
        except (TypeError, ValueError, OverflowError):
            pass
        stream.next_seq[track] = seq + 1
        self.sink.push(Frame(stream.call_id, track, seq, mulaw_to_pcm16_bytes(payload)))


def check_media_format(fmt: object) -> None:
    """StreamError unless mediaFormat is 8 kHz mono µ-law, the one format Media Streams sends."""
    if not isinstance(fmt, dict):
        raise StreamError(1003, "start.mediaFormat is not an object")
    rate, channels = fmt.get("sampleRate"), fmt.get("channels", 1)
    if not (isinstance(rate, int) and not isinstance(rate, bool) and isinstance(channels, int)
            and not isinstance(channels, bool)):
        raise StreamError(1003, "mediaFormat sampleRate and channels must be integers")
    if (fmt.get("encoding"), rate, channels) != ("audio/x-mulaw", SAMPLE_RATE, 1):
        raise StreamError(1003, f"unsupported media format {str(fmt)[:80]}; Media Streams sends 8 kHz mono "
                                "audio/x-mulaw")


def _remote(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else ""
