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

from emotivoice.analysis.live.messages import Frame, LegInfo, call_metadata
from emotivoice.connector.access import host_of
from emotivoice.connector.pjsetup import vector_bytes
from emotivoice.connector.siprec import InviteSummary

if TYPE_CHECKING:
    from emotivoice.connector.nativeleg import NativeLeg
    from emotivoice.connector.sip import SipConnector

log = logging.getLogger("emotivoice.connector.sip")

FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
# a tick more than this many frame slots behind the leg's wall-clock timeline means the media clock
# skipped ticks (pjmedia drops them once it is 500 ms behind): the slots between become a seq gap,
# recorded as silence. Below it is scheduling jitter, never a gap.
LATE_SLOTS = 1.5
# a tick this soon after the previous one is the clock catching up a short backlog in a burst
# (pjmedia delivers every tick while less than 500 ms behind): numbered consecutively, no gap
BURST_S = FRAME_S / 2
# the first tick this long after the previous one waits for the next to say which: a burst (the
# clock delivers what it owes) or not (it skipped those ticks); jumping at once counted a 0.3 s
# stall caught up in a burst twice (simulated)
STALL_S = 3 * FRAME_S


class ClockWatch:
    """Share of leg ticks the media clock skipped over the last `window_s`: the connector's
    admission signal. Written by the clock thread without a lock (plain int updates under the
    GIL; a lost increment only blurs a share), read by the event thread."""

    def __init__(self, window_s: float = 5.0, buckets: int = 5):
        self.window_s = window_s
        self._width = window_s / buckets
        self._n = buckets
        self._stamp = [-1] * buckets
        self._ticks = [0] * buckets  # slots, delivered or skipped
        self._skipped = [0] * buckets
        self.total_skipped = 0

    def note(self, now: float, skipped: int) -> None:
        i = int(now / self._width)
        b = i % self._n
        if self._stamp[b] != i:
            self._stamp[b], self._ticks[b], self._skipped[b] = i, 0, 0
        self._ticks[b] += 1 + skipped
        if skipped:
            self._skipped[b] += skipped
            self.total_skipped += skipped

    def _recent(self, now: float | None) -> list[tuple[int, int]]:
        """(slots, skipped) of each bucket in the window."""
        i = int((time.monotonic() if now is None else now) / self._width)
        return [(self._ticks[b], self._skipped[b]) for b in range(self._n) if i - self._n < self._stamp[b] <= i]

    def share(self, now: float | None = None) -> float:
        """Skipped slots over all slots in the window (0.0 with no calls)."""
        recent = self._recent(now)
        ticks = sum(t for t, _ in recent)
        return sum(k for _, k in recent) / ticks if ticks else 0.0

    def behind(self, limit: float, now: float | None = None) -> str | None:
        """Why the clock counts as behind (more than `limit` of slots skipped in most buckets of
        the window), or None. Most buckets, not the window's total: one stall (the first call
        warming the models up stalled the clock ~0.4 s once: 44 slots) is recorded as silence
        but must not refuse every call for the next 5 s (it refused 18 of 24 in the benchmark)."""
        if limit <= 0:
            return None
        recent = self._recent(now)
        lagging = sum(1 for t, k in recent if t and k / t > limit)
        if lagging * 2 <= self._n:
            return None
        return (f"media clock behind: {self.share(now):.0%} of leg ticks skipped over the last "
                f"{self.window_s:.0f} s ({lagging} of {self._n} buckets over {limit:.0%})")


@dataclass
class Leg:
    info: LegInfo
    port: "LegPort | None" = None
    native: "NativeLeg | None" = None  # connector.media_path = "native": pjmedia writes the leg (nativeleg.py)


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
    native: bool = False  # its legs are recorded by pjmedia (connector/nativeleg.py), not Python ports
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
    skipped_frames = 0  # slots the media clock never ticked (seq gaps, recorded as silence)
    _last_tick = 0.0
    _stalled = False  # the last tick came after a stall; the next says whether the clock catches up
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
        return self.empty_frames + self.skipped_frames + max(0, expected - self._seq - 1)

    def _number(self, now: float) -> int:
        """This tick's seq on the leg's wall-clock timeline (20 ms slots since its first tick).

        Strictly increasing (two ticks within one slot never collide). A tick more than
        LATE_SLOTS behind its slot jumps seq to its slot (the clock skipped the ticks between)
        unless the clock is catching up in a burst, or the tick is the first after a stall (the
        next tick tells). Being ahead (a burst after a jump, when the clock stays starved) needs
        no re-anchoring: it absorbs the next lag of the same size before another gap is counted.
        """
        seq = self._seq
        late = (now - self.first_tick) / FRAME_S - seq
        interval = now - self._last_tick
        if interval < BURST_S:  # catching up: every tick it owes comes
            may_jump, self._stalled = False, False
        elif interval > STALL_S and not self._stalled:  # see whether a burst follows
            may_jump, self._stalled = False, True
        else:
            may_jump, self._stalled = True, interval > STALL_S
        if may_jump and late > LATE_SLOTS:
            seq += int(late)
            self.skipped_frames += int(late)
        self._last_tick = now
        self._owner.clock.note(now, seq - self._seq)
        return seq

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
            now = time.monotonic()
            if self.first_tick is None:
                self.first_tick = now
            seq = self._number(now)
            if audio:
                pcm = vector_bytes(frame.buf, size)
            else:
                pcm = self._silence  # no audio this tick: keep the leg's timeline continuous
                self.empty_frames += 1
            self._seq = seq + 1  # before the push: a failing sink must not rewind the timeline
            self._sink.push(Frame(self._state.call_id, self._leg, seq, pcm))


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

    def onStreamDestroyed(self, prm) -> None:
        self.owner.on_stream_destroyed(self, prm.streamIdx)

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
