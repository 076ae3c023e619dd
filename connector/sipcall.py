"""One SIP call's pjsua2 objects: its state, the port each leg's audio arrives on, its callbacks.

The connector (connector/sip.py) owns every instance and does the work; these classes only hold a
call's state and forward pjsua2's callbacks to it (`on_incoming`, `on_media_ready`, `on_call_ended`,
`announce`), on the event thread except for `LegPort.onFrameReceived`, which runs on pjmedia's
clock thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pjsua2 as pj

from analysis.live.messages import Frame, LegInfo, call_metadata
from connector.access import host_of
from connector.pjsetup import vector_bytes
from connector.siprec import InviteSummary

if TYPE_CHECKING:
    from connector.sip import SipConnector

log = logging.getLogger("connector.sip")

FRAME_MS = 20


@dataclass
class Leg:
    info: LegInfo
    port: "LegPort | None" = None


@dataclass
class CallState:
    call_id: str  # ours (new_call_id); the SIP Call-ID is only metadata
    remote: str
    summary: InviteSummary
    metadata: dict
    answered_at: float = field(default_factory=time.monotonic)
    legs: dict[int, Leg] = field(default_factory=dict)  # media index -> leg
    started: bool = False  # media set up and the legs fixed
    media_seen: bool = False  # some leg has received RTP (the bridge hands us silence until then)
    announced: bool = False  # CallStarted sent, at the first frame after media_seen
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class LegPort(pj.AudioMediaPort):
    """Receives one leg's audio from the conference bridge, one 20 ms frame per clock tick.

    The bridge ticks every port whether or not RTP arrives (with zeros), so nothing is handed on
    until the event thread has seen RTP counted on some leg of the call (`media_seen`): the
    first frame after that announces the call (CallStarted), so a call that never sends media
    never reaches the engine.

    The clock thread may call a port before its __init__ has finished or after the connector has
    retired it (connector/portyard.py keeps it alive until the bridge lets go): the class-level
    defaults make such a call a no-op, and no exception ever leaves the callback onto the clock
    thread. onFrameRequested is not overridden: the port is never a source, and pjsua2's own
    (C++) answer needs no Python at all.
    """

    _live = False  # set once the port is fully made; cleared by detach()
    _state: CallState | None = None
    first_tick: float | None = None  # monotonic time of the first frame handed on
    empty_frames = 0  # ticks with no audio from the network, once the call is announced
    callback_errors = 0

    def __init__(self, owner: "SipConnector", state: CallState, leg: str, sample_rate: int):
        super().__init__()
        self._owner, self._sink, self._state, self._leg = owner, owner.sink, state, leg
        self._seq = 0
        self._frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self._silence = bytes(self._frame_bytes)
        fmt = pj.MediaFormatAudio()
        fmt.type = pj.PJMEDIA_TYPE_AUDIO
        fmt.clockRate = sample_rate
        fmt.channelCount = 1
        fmt.bitsPerSample = 16
        fmt.frameTimeUsec = FRAME_MS * 1000
        self._live = True  # before createPort: from then on the clock may call it
        self.createPort(f"{state.call_id[-12:]}/{leg}", fmt)

    def detach(self) -> None:
        """Hand nothing more on (the event thread retires the port; the clock may still tick it)."""
        self._live = False

    def missing_frames(self) -> int:
        """Ticks without network audio, plus ticks the media clock never delivered (it fell behind)."""
        if self.first_tick is None:
            return 0
        expected = int((time.monotonic() - self.first_tick) * 1000 / FRAME_MS)
        return self.empty_frames + max(0, expected - self._seq - 1)

    def onFrameReceived(self, frame) -> None:
        if not self._live:
            return
        try:
            self._receive(frame)
        except Exception as exc:  # out of the callback it would go onto pjmedia's clock thread
            self.callback_errors += 1
            if self.callback_errors in (1, 100) or self.callback_errors % 10000 == 0:
                log.error("leg port callback failed", extra={
                    "call_id": getattr(self._state, "call_id", None), "errors": self.callback_errors,
                    "error": repr(exc)[:200]})

    def _receive(self, frame) -> None:
        size = frame.size
        audio = frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and size == self._frame_bytes
        with self._state.lock:
            if self._state.ended:
                return
            if not self._state.announced:
                if not self._state.media_seen:
                    return  # before the call's first RTP: nothing handed on, nothing counted
                self._owner.announce(self._state)
            if self.first_tick is None:
                self.first_tick = time.monotonic()
            if audio:
                pcm = vector_bytes(frame.buf, size)
            else:
                pcm = self._silence  # no audio this tick: keep the leg's timeline continuous
                self.empty_frames += 1
            self._sink.push(Frame(self._state.call_id, self._leg, self._seq, pcm))
        self._seq += 1


class SipCall(pj.Call):
    """One pjsua call. Once DISCONNECTED its pjsua slot may go to a new call at once, so nothing
    may act on it through this object any more (`disconnected`)."""

    def __init__(self, owner: "SipConnector", account: pj.Account, call_index: int):
        super().__init__(account, call_index)
        self.owner = owner
        self.state: CallState | None = None
        self.disconnected = False

    def onCallState(self, prm) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            self.owner.on_call_ended(self, f"{info.lastStatusCode} {info.lastReason}".strip())

    def onCallMediaState(self, prm) -> None:
        self.owner.on_media_ready(self)

    def onCallTransferRequest(self, prm) -> None:
        prm.statusCode = 603  # never place a call because a peer asked (REFER); the guard refuses it first


class SipAccount(pj.Account):
    def __init__(self, owner: "SipConnector"):
        super().__init__()
        self.owner = owner

    def onIncomingCall(self, prm) -> None:
        self.owner.on_incoming(self, prm)

    def onIncomingSubscribe(self, prm) -> None:
        """We serve no presence: refuse (the guard answers SUBSCRIBE with 405 before this runs)."""
        prm.code = 403
        prm.reason = "Forbidden"
        self.owner._refusals.note("method", "SIP request refused: method not served",
                                  host_of(prm.rdata.srcAddress), {"method": "SUBSCRIBE"})


def call_metadata_of(summary: InviteSummary, sip_call_id: str) -> dict:
    """CallStarted.metadata: agent and customer ids from SIPREC, the source's own ids as bounded data."""
    meta = summary.metadata
    external = {"sip_call_id": sip_call_id, "sip_from": meta.get("from"), "sip_to": meta.get("to")}
    if summary.siprec:
        external["siprec_session_id"] = meta.get("siprec_session_id")
        external["siprec_participants"] = "; ".join(p for p in meta.get("participants", ()) if isinstance(p, str))
    return call_metadata(meta, external)
