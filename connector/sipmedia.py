"""A SIP call's legs, from its media being ready to its ports retired (on the event thread).

The SipConnector (connector/sip.py) mixes this in. A call is announced (CallStarted) only once
RTP arrives; one that sends none is never announced and is hung up after `no_media_timeout_s`
(logged "no media").

How a leg's audio leaves pjmedia is `connector.media_path`. "native" (the default): each leg's
stream feeds a pjmedia WAV writer of its own in the bridge and one tailer thread hands what the
files grow by to the sink as numbered 20 ms frames (connector/nativeleg.py), so the media clock
never needs the GIL; the call is announced by the event thread when its RTP is first counted.
"python": a LegPort per leg, called by the clock thread every 20 ms. Each such leg's frames are
numbered by the media clock's wall time (connector/sipcall.py), so ticks
the clock thread skipped while it waited for the GIL become seq gaps the recording fills with
silence: a kept leg's timeline stays true. (Lowering Python's switch interval from 5 ms to 1 ms
went with 7,608 skipped ticks at 24 calls against 20,159 before, but in that run analysis fell
so far behind that the calls had not drained 120 s after hanging up: not kept without a cleaner A/B.)
"""

from __future__ import annotations

import logging
import time

import pjsua2 as pj

from emotivoice.analysis.live.messages import CallEnded, CallStarted, LegInfo
from emotivoice.connector.access import host_of
from emotivoice.connector.nativeleg import NativeLeg, open_leg, release_leg
from emotivoice.connector.sipcall import CallState, Leg, LegPort, SipCall
from emotivoice.storage.files import UnsafePath

log = logging.getLogger("emotivoice.connector.sip")

BRIDGE_RATE = 16000  # endpoint_config's clock rate: what native legs' WAVs are written at


class CallMedia:
    """SipConnector's calls once answered: their legs opened, announced, ended and reaped."""

    def on_media_ready(self, call: SipCall) -> None:
        state = call.state
        if state is None or state.ended or state.started:
            return  # a stream added by a re-INVITE is not announced; the legs stay fixed
        info = call.getInfo()
        by_index = {leg.index: leg for leg in state.summary.legs}
        specs: list[tuple[int, LegInfo]] = []
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.index in state.legs or media.index not in by_index:
                continue
            if media.status not in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                continue  # send-only (SIPREC) streams report REMOTE_HOLD
            rate = 16000 if call.getStreamInfo(media.index).codecClockRate >= 16000 else 8000
            spec = by_index[media.index]
            leg = "inbound" if not state.summary.siprec and len(by_index) == 1 else spec.leg
            specs.append((media.index, LegInfo(leg, spec.role, spec.name, rate)))
        if not specs:
            return
        if self.native and self._open_native(call, state, specs):
            state.started = True
            return
        new_ports = []
        for index, leg_info in specs:
            port = LegPort(self, state, leg_info.leg, leg_info.sample_rate)
            state.legs[index] = Leg(leg_info, port)
            new_ports.append((call.getAudioMedia(index), port))
        state.started = True  # every leg exists before the first frame can announce the call
        for media, port in new_ports:
            media.startTransmit(port)

    def _open_native(self, call: SipCall, state: CallState, specs: list[tuple[int, LegInfo]]) -> bool:
        """Connect each leg's stream to a pjmedia WAV writer of its own (connector/nativeleg.py);
        False (nothing left behind) when one cannot be made: the call then gets Python ports."""
        reserve = int(max(0.0, self.cfg.media_reserve_s) * BRIDGE_RATE) * 2
        opened: list[NativeLeg] = []
        try:
            for n, (index, leg_info) in enumerate(specs):  # n: the leg's place, as the recording numbers it
                source = call.getAudioMedia(index).getPortId()
                opened.append(open_leg(self._ports, self._leg_dir, state.call_id, n, leg_info.leg,
                                       leg_info.sample_rate, source, BRIDGE_RATE, reserve))
        except (OSError, UnsafePath, pj.Error) as exc:
            log.error("native leg recording not opened: the call's legs go through Python ports",
                      extra={"call_id": state.call_id, "error": exc.info() if isinstance(exc, pj.Error) else str(exc)})
            for native in opened:
                native.discard = True
                self._retire_native(native)
            return False
        for (index, leg_info), native in zip(specs, opened):
            state.legs[index] = Leg(leg_info, None, native)
        state.native = True
        return True

    def _retire_native(self, native: NativeLeg) -> None:
        """Out of the bridge now; destroyed (its file completed) once the bridge has let go of it."""
        self._yard.retire_slot(native.slot, self._ports.remove, lambda: release_leg(self._ports, native))

    def announce(self, state: CallState) -> None:
        """CallStarted, on the media thread under the call's lock, at the first audio of any leg."""
        state.announced = True
        legs = tuple(leg.info for leg in state.legs.values())
        self.sink.start(CallStarted(state.call_id, "siprec" if state.summary.siprec else "sip", legs,
                                    state.remote, state.metadata))
        log.info("SIP call started", extra={"call_id": state.call_id, "remote": state.remote,
                                            "legs": [leg.leg for leg in legs]})

    def _notice_media(self) -> None:
        """Mark calls whose streams have received RTP; their next frame announces them."""
        for call in self._calls.values():
            state = call.state
            if state is None or not state.started or state.media_seen or state.ended:
                continue
            try:
                received = any(call.getStreamStat(index).rtcp.rxStat.pkt > 0 for index in state.legs)
            except pj.Error:
                continue
            if received:
                state.media_seen = True
                if state.native:  # no port to announce it at its first frame: the tailer reads from here on
                    with state.lock:
                        if state.ended or state.announced:
                            continue
                        self.announce(state)
                    self._tailer.add(state.call_id, [leg.native for leg in state.legs.values()])

    def _hang_up_silent_calls(self) -> None:
        """Hang up answered calls that have sent no audio for connector.no_media_timeout_s."""
        limit = self.cfg.no_media_timeout_s
        if limit <= 0:
            return
        now = time.monotonic()
        for call in list(self._calls.values()):
            state = call.state
            if state is None or state.announced or state.ended or now - state.answered_at < limit:
                continue
            self.refusal_log.note("no_media", "SIP call hung up: no media", host_of(state.remote),
                                  {"call_id": state.call_id, "after_s": limit})
            self._finish(call, "no media")
            op = pj.CallOpParam()
            op.statusCode = 408
            try:
                call.hangup(op)
            except pj.Error as exc:
                log.warning("SIP hang-up failed", extra={"call_id": state.call_id, "error": exc.info()})

    def on_stream_destroyed(self, call: SipCall, index: int) -> None:
        """What a leg's jitter buffer did to its timeline, read as its stream goes: frames it played
        as silence because it had none (its prefetch, and each time it ran dry) and frames it
        dropped. Logged per leg and summed in stats(); with connector.jitter_buffer_ms nothing is
        dropped and silence past the prefetch means a sender stalled longer than the buffer."""
        state = call.state
        leg = state.legs.get(index) if state else None
        if leg is None:
            return
        try:
            stat = call.getStreamStat(index)
        except pj.Error:
            return
        jb, rx = stat.jbuf, stat.rtcp.rxStat  # rx.loss: packets never received, by RTP sequence number
        self.jitter["legs"] += 1
        self.jitter["fixed_legs"] += int(0 < jb.minPrefetch == jb.maxPrefetch == jb.prefetch)  # the setting took
        self.jitter["empty_frames"] += jb.empty
        self.jitter["discarded_frames"] += jb.discard
        self.jitter["lost_frames"] += jb.lost
        self.jitter["rtp_lost_packets"] += rx.loss
        self.jitter["max_delay_ms"] = max(self.jitter["max_delay_ms"], jb.maxDelayMsec)
        log.info("SIP leg jitter buffer", extra={
            "call_id": state.call_id, "leg": leg.info.leg, "empty_frames": jb.empty, "discarded_frames": jb.discard,
            "lost_frames": jb.lost, "rtp_packets": rx.pkt, "rtp_lost_packets": rx.loss,
            "prefetch_frames": jb.prefetch, "avg_delay_ms": jb.avgDelayMsec, "max_delay_ms": jb.maxDelayMsec})

    def on_call_ended(self, call: SipCall, reason: str) -> None:
        self._finish(call, reason)
        self._done.append(call)

    def _finish(self, call: SipCall, reason: str) -> None:
        state = call.state
        if state is None:
            return
        with state.lock:
            if state.ended:
                return
            state.ended = True
        if state.announced and state.native:  # CallEnded follows the legs' last samples (the tailer)
            self._tailer.end(state.call_id, reason)
            log.info("SIP call ended", extra={"call_id": state.call_id, "reason": reason})
        elif state.announced:
            self.sink.end(CallEnded(state.call_id, reason, {leg.info.leg: leg.port.missing_frames()
                                                            for leg in state.legs.values() if leg.port}))
            log.info("SIP call ended", extra={"call_id": state.call_id, "reason": reason})
        else:  # the engine never heard of it: nothing to store
            for leg in state.legs.values():
                if leg.native is not None:
                    leg.native.discard = True
            self._calls_without_media += 1
            log.info("SIP call ended before any audio", extra={"call_id": state.call_id, "reason": reason,
                                                                "remote": state.remote})

    def _reap(self) -> None:
        """Drop disconnected calls (outside their own callbacks, on this thread); their ports go to
        the yard, which frees each once the bridge has removed it (connector/portyard.py)."""
        if not self._done:
            return
        done, self._done = self._done, []
        for call in done:
            for index, entry in [(i, c) for i, c in self._calls.items() if c is call]:
                del self._calls[index]
            self._retire_ports(call)
            if call.disconnected and call.isActive() and call not in self._kept_calls:
                # its slot is a new call's already: pjsua2's destructor would unhook and hang up that one
                call.__disown__()
                self._kept_calls.append(call)

    def _retire_ports(self, call: SipCall) -> None:
        if call.state:
            for leg in call.state.legs.values():
                if leg.port is not None:
                    self._yard.retire(leg.port)
                    leg.port = None
                if leg.native is not None and leg.native.port:
                    self._retire_native(leg.native)
                    leg.native = None
