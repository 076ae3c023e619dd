"""SIP and SIPREC calls in, 20 ms PCM frames per leg out, through pjsua2.

One thread owns the pjsua2 Endpoint: it creates it, polls `libHandleEvents` (so every SIP callback
runs there) and destroys it. Audio arrives on pjmedia's clock thread (the null sound device drives
the conference bridge): each leg's stream feeds a `LegPort` whose `onFrameReceived` copies the PCM
through ctypes (a few microseconds, against ~100+ for `bytes(frame.buf)`) and hands it to the sink,
which never blocks. A hung-up call's ports are retired through connector/portyard.py, which keeps
each one alive until the bridge has let go of it (pjmedia removes ports on its next clock tick).

A SIPREC INVITE (multipart SDP + rs-metadata) becomes one leg per audio m-line, named by its
a=label and given the role/name of the participant sending it (connector/siprec.py). A plain INVITE
(a PBX conferencing us in as a silent monitor) becomes one leg "inbound" with no role.

What it checks (UDP and TCP on `sip_port`, TLS on `sip_tls_port`), in this order:

1. every request and response, any method, in or out of a dialog: its source address against
   `connector.allow`; outside it a request gets a stateless 403 (ACK: dropped), a response is
   dropped, and nothing of pjsip's sees it (connector/sipguard.py, a pjsip module);
2. the method: only INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK are served; the rest
   (SUBSCRIBE, MESSAGE, REGISTER, REFER, NOTIFY, PUBLISH...) get 405 and create no state;
3. a new INVITE: a token bucket per source address (`invite_rate_per_s`, `invite_burst`); beyond
   it, a stateless 503 with Retry-After;
4. then, in onIncomingCall: digest credentials when `auth_user` is set (401 with a challenge),
   admission (503 with Retry-After while the engine's recording cannot keep up: its queue for the
   disk is over `live.record_max_lag_s` / `record_max_queued_mb`, or the disk faulted;
   analysis/live/recording.py; or while pjmedia's media clock has skipped more than
   `clock_max_skipped_share` of leg ticks in most of the last 5 s, connector/sipcall.py ClockWatch),
   `max_calls` (486), an audio stream in the SDP (488; a body we
   cannot read: 400).

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

Refusals are counted (`stats()`) and logged with the source, one line per source and kind per 10 s
carrying the number held back. The call's id is ours (storage.files.new_call_id); the SIP Call-ID,
From, To and the SIPREC session id and participants are bounded text in CallStarted.metadata
["external"], never a name. A call is announced (CallStarted) only once RTP arrives; one that sends
none is never announced and is hung up after `no_media_timeout_s` (logged "no media").

With the pjsua2-python 2.15 fallback (no PJSUA_HAS_SIPREC) SIPREC INVITEs that carry
`Require: siprec` are refused by pjsip with 420; those without it still work (the multipart SDP is
read by pjsip either way). Calls are capped at 4 there. Should a build not export pjsip's C API,
the guard is not installed (logged as an error): INVITE is still checked for source and rate in
onIncomingCall and SUBSCRIBE refused in onIncomingSubscribe, while OPTIONS and MESSAGE get pjsua's
200 and create no call, dialog or subscription.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pjsua2 as pj

from emotivoice.analysis.live.messages import CallEnded, CallStarted, LegInfo, LiveSink, refusal, wire_text
from emotivoice.connector.access import DigestAuth, RateLimiter, RefusalLog, host_of, is_allowed, parse_allow
from emotivoice.connector.pjsetup import (LogWriter, account_config, check_security, create_transports, endpoint_config,
                                          quiet_stdout)
from emotivoice.connector.nativeleg import LegTailer, NativeLeg, WavPorts, open_leg, release_leg
from emotivoice.connector.portyard import BridgeEndpoint, PortYard
from emotivoice.connector.sipcall import CallState, ClockWatch, Leg, LegPort, SipAccount, SipCall, call_metadata_of
from emotivoice.connector.sipguard import RequestPolicy, SipGuard
from emotivoice.connector.siprec import parse_sip, summarize_invite
from emotivoice.config import ConnectorConfig
from emotivoice.storage.files import UnsafePath, new_call_id

log = logging.getLogger(__name__)

_MAX_CALLS_BUILT = 256 if hasattr(pj, "PJSUA_SIP_SIPREC_OPTIONAL") else 4  # PJSUA_MAX_CALLS of the binding
MEDIA_PATHS = ("native", "python")
BRIDGE_RATE = 16000  # endpoint_config's clock rate: what native legs' WAVs are written at


class SipConnector:
    """Answers SIP/SIPREC calls and feeds their audio to `sink`. start() returns once listening."""

    def __init__(self, cfg: ConnectorConfig, sink: LiveSink):
        check_security(cfg)
        if cfg.media_path not in MEDIA_PATHS:
            raise ValueError(f"connector.media_path must be one of {', '.join(MEDIA_PATHS)}, not {cfg.media_path!r}")
        self.cfg = cfg
        self.native = cfg.media_path == "native"  # may turn False at start when pjmedia's C API is missing
        self._ports: WavPorts | None = None
        self._tailer: LegTailer | None = None
        self._leg_dir: Path | None = None  # where native legs are written: the sink's audio dir
        self._own_leg_dir = False  # ...or a private temporary one (a sink that keeps no recordings)
        self.sink = sink
        self.port = 0  # bound UDP/TCP port, set by start()
        self.tls_port = 0
        self.native_siprec = hasattr(pj, "PJSUA_SIP_SIPREC_OPTIONAL")
        self._bound = "" if cfg.sip_host in ("", "0.0.0.0", "::") else cfg.sip_host  # "": every address
        self._allow = parse_allow(cfg.allow)
        self._auth = DigestAuth(cfg.auth_user, cfg.auth_password, cfg.auth_realm) if cfg.auth_user else None
        self._max_calls = min(cfg.max_calls, _MAX_CALLS_BUILT)
        self._calls: dict[int, SipCall] = {}
        self._done: list[SipCall] = []  # disconnected, deleted by the event thread on its next turn
        self._pending_refusals: list[tuple[SipCall, int, str, tuple]] = []  # answered by the event thread next turn
        self.refusal_log = RefusalLog(log)
        self._limiter = RateLimiter(cfg.invite_rate_per_s, cfg.invite_burst)
        self._policy = RequestPolicy(self._allow, self._limiter, self.refusal_log)
        self._guard: SipGuard | None = None
        self._calls_without_media = 0
        self._next_sweep = 0.0
        self._yard: PortYard | None = None  # retired leg ports, until the bridge lets go of them
        self._kept_calls: list[SipCall] = []  # whose pjsua slot a new call took: never destroyed
        self.clock = ClockWatch()  # the media clock's skipped ticks, fed by every LegPort
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="sip-connector", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("SIP connector did not start in time")
        if self._error:
            raise RuntimeError(f"SIP connector failed to start: {self._error}") from self._error

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def active_calls(self) -> int:
        return sum(1 for call in self._calls.values() if call.state and call.state.started and not call.state.ended)

    def stats(self) -> dict:
        """Requests seen by method, refusals by kind, calls hung up or ended without media."""
        return {"requests": dict(self._policy.checked), "refused": dict(self.refusal_log.counts),
                "calls_without_media": self._calls_without_media, "rate_limited_sources": len(self._limiter),
                "guard": self._guard is not None, "layout_errors": self._guard.layout_errors if self._guard else 0,
                "ports": self._yard.stats() if self._yard else {},
                "clock_skipped_frames": self.clock.total_skipped, "clock_skipped_share": round(self.clock.share(), 3),
                "media_path": "native" if self.native else "python",
                **(self._tailer.stats() if self._tailer else {})}

    def _run(self) -> None:
        try:
            self._setup()
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            self._teardown()
            return
        self._ready.set()
        log.info("SIP connector listening", extra={"host": self.cfg.sip_host, "port": self.port,
                                                   "tls_port": self.tls_port, "srtp": self.cfg.srtp,
                                                   "native_siprec": self.native_siprec})
        while not self._stopping.is_set():
            self._ep.libHandleEvents(20)
            self._send_refusals()
            self._reap()
            self._yard.sweep()
            self._notice_media()
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + 0.5
                self._hang_up_silent_calls()
                self.refusal_log.flush()
        self._shutdown_calls()
        self._teardown()

    def _setup(self) -> None:
        import _pjsua2

        self._yard = PortYard(_pjsua2.__file__)
        self._ep = BridgeEndpoint(self._yard)  # tells the yard when the bridge has removed a port
        with quiet_stdout():  # pjlib prints its start-up chatter before our log config applies
            self._ep.libCreate()
        self._log_writer = LogWriter()
        ep_cfg = endpoint_config(min(self._max_calls + 1, _MAX_CALLS_BUILT), self._log_writer,  # +1: we say 486
                                 log.isEnabledFor(logging.DEBUG))
        self._ep.libInit(ep_cfg)
        self._install_guard()  # before any transport exists, so no request arrives unchecked
        self._ep.audDevManager().setNullDev()
        self._create_transports()
        self._ep.libStart()
        acc_cfg = account_config(self.cfg, self._bound, self.native_siprec)
        self._account = SipAccount(self)
        self._account.create(acc_cfg, True)
        if self.native:
            self._start_native(_pjsua2.__file__)

    def _start_native(self, library_path: str) -> None:
        """pjmedia's C API for native legs and the tailer thread; without them, Python ports."""
        try:
            self._ports = WavPorts(library_path)
        except (OSError, AttributeError) as exc:
            log.error("native media path unavailable: legs go through Python ports", extra={"error": str(exc)})
            self.native = False
            return
        audio_dir = getattr(self.sink, "audio_dir", None)
        if audio_dir is None:  # a sink that keeps no recordings: the legs pass through a private dir
            self._leg_dir, self._own_leg_dir = Path(tempfile.mkdtemp(prefix="emotivoice-legs-")), True
        else:
            self._leg_dir = Path(audio_dir)
        reserve = int(max(0.0, self.cfg.media_reserve_s) * BRIDGE_RATE) * 2
        self._tailer = LegTailer(self.sink, self._ports, reserve).start()

    def _install_guard(self) -> None:
        """Check every request's source, method and INVITE rate in pjsip (connector/sipguard.py).

        Without it (a pjsua2 build whose library does not export pjsip's C API) only INVITE and
        SUBSCRIBE are checked, in onIncomingCall and onIncomingSubscribe; pjsua then answers
        OPTIONS and MESSAGE from anyone with 200, creating no call, dialog or subscription.
        """
        import _pjsua2

        try:
            self._guard = SipGuard(_pjsua2.__file__, self._policy)
        except (OSError, AttributeError, RuntimeError) as exc:
            log.error("SIP request guard not installed: only INVITE and SUBSCRIBE are checked",
                      extra={"error": str(exc)})

    def _create_transports(self) -> None:
        self.port, self.tls_port = create_transports(self._ep, self.cfg, self._bound)

    def _shutdown_calls(self) -> None:
        self._send_refusals()
        try:
            self._ep.hangupAllCalls()
        except pj.Error:
            pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(c.state and not c.state.ended for c in self._calls.values()):
            self._ep.libHandleEvents(20)
        for call in list(self._calls.values()):
            self._finish(call, "shutdown")
            self._retire_ports(call)
        self._reap()
        deadline = time.monotonic() + 5.0
        while self._tailer is not None and self._tailer.busy() and time.monotonic() < deadline:
            self._ep.libHandleEvents(20)  # native legs: the bridge lets go of their writers, the tailer ends them
            self._yard.sweep()

    def _teardown(self) -> None:
        ep = getattr(self, "_ep", None)
        if ep is None:
            return
        if getattr(self, "_account", None) is not None:
            try:
                self._account.shutdown()
            except pj.Error:
                pass
            self._account = None
        if self._yard is not None:  # every port out of the bridge (or kept) before pjsua goes
            self._yard.drain(ep.libHandleEvents, 2.0)
        if self._tailer is not None:
            self._tailer.stop()
            self._tailer = None
        if self._own_leg_dir and self._leg_dir is not None:
            shutil.rmtree(self._leg_dir, ignore_errors=True)
        self._calls.clear()
        if self._guard is not None:
            self._guard.close()
        try:
            ep.libDestroy()
        except pj.Error:
            pass
        self._ep = None
        self._guard = None

    # -- calls (all on the event thread) ---------------------------------------------------------

    def on_incoming(self, account: SipAccount, prm) -> None:
        call = SipCall(self, account, prm.callId)
        raw = prm.rdata.wholeMsg
        remote = prm.rdata.srcAddress
        source = host_of(remote)
        msg = parse_sip(raw)
        sip_call_id = wire_text(msg.header("call-id")) or ""  # data for the log and metadata, never a name
        if not is_allowed(remote, self._allow):  # the guard refused it already; this is the fallback
            self.refusal_log.note("not_allowed", "SIP call refused: source not allowed", source,
                                   {"sip_call_id": sip_call_id})
            return self._refuse(call, 403, "Forbidden")
        if self._guard is None and not self._limiter.allow(source):
            self.refusal_log.note("rate_limited", "SIP call refused: INVITE rate limit", source, {})
            return self._refuse(call, 503, "Service Unavailable",
                                [("Retry-After", str(self._limiter.retry_after_s(source)))])
        if self._auth is not None:
            credentials = msg.header("authorization")
            if not credentials or not self._auth.verify("INVITE", credentials):
                if credentials:
                    self.refusal_log.note("bad_credentials", "SIP call refused: bad credentials", source,
                                           {"sip_call_id": sip_call_id})
                return self._refuse(call, 401, "Unauthorized", [("WWW-Authenticate", self._auth.challenge())])
        overloaded = refusal(self.sink, "sip")
        if overloaded:  # recording cannot keep up: the calls already answered come first
            self.refusal_log.note("overloaded", "SIP call refused: recording cannot keep up", source,
                                  {"reason": overloaded, "sip_call_id": sip_call_id})
            return self._refuse(call, 503, "Service Unavailable",
                                [("Retry-After", str(max(1, self.cfg.overload_retry_after_s)))])
        behind = self.clock.behind(self.cfg.clock_max_skipped_share)
        if behind:  # the media clock is starved: another call would lose its audio's timing too
            self.refusal_log.note("clock_behind", "SIP call refused: media clock skipping ticks", source,
                                  {"reason": behind, "sip_call_id": sip_call_id})
            return self._refuse(call, 503, "Service Unavailable",
                                [("Retry-After", str(max(1, self.cfg.overload_retry_after_s)))])
        starting = sum(1 for c in self._calls.values() if c.state and not c.state.started)
        if self.active_calls + starting >= self._max_calls:
            self.refusal_log.note("busy", "SIP call refused: at max_calls", source, {"max_calls": self._max_calls})
            return self._refuse(call, 486, "Busy Here")
        try:
            summary = summarize_invite(raw, self.cfg.siprec_agent_match)
        except Exception as exc:  # the body pjsip accepted still made no sense to us
            log.warning("SIP call refused: unreadable INVITE", extra={"remote": remote, "error": repr(exc)[:200]})
            return self._refuse(call, 400, "Bad Request")
        if not summary.legs:
            log.warning("SIP call refused: no audio stream", extra={"remote": remote, "sip_call_id": sip_call_id})
            return self._refuse(call, 488, "Not Acceptable Here")
        call_id = new_call_id("siprec" if summary.siprec else "sip")
        call.state = CallState(call_id, remote, summary, call_metadata_of(summary, sip_call_id))
        self._calls[prm.callId] = call
        log.info("SIP call answered", extra={"call_id": call_id, "sip_call_id": sip_call_id, "remote": remote})
        op = pj.CallOpParam(True)
        op.statusCode = 200
        op.opt.audioCount = sum(1 for _ in summary.legs)  # or pjsua refuses every stream after the first
        op.opt.videoCount = 0
        try:
            call.answer(op)
        except pj.Error as exc:
            log.warning("SIP answer failed", extra={"call_id": call_id, "error": exc.info()})

    def _refuse(self, call: SipCall, code: int, reason: str, headers: list[tuple[str, str]] = ()) -> None:
        """Queue a final error response, sent once onIncomingCall has returned.

        Hanging up inside the callback is unsafe: pjsua defers it, sends the response without our
        headers (a 401 without its WWW-Authenticate challenge), and for an INVITE without SDP it
        resets the call before pjsua2 frees the cloned request, which aborts the process.
        """
        self._pending_refusals.append((call, code, reason, tuple(headers)))

    def _send_refusals(self) -> None:
        if not self._pending_refusals:
            return
        refusals, self._pending_refusals = self._pending_refusals, []
        for call, code, reason, headers in refusals:
            self._send_refusal(call, code, reason, headers)

    def _send_refusal(self, call: SipCall, code: int, reason: str, headers: tuple[tuple[str, str], ...]) -> None:
        if call.disconnected:  # CANCELled meanwhile: its pjsua slot may already be a new call's
            self._done.append(call)
            return
        op = pj.CallOpParam()
        op.statusCode = code
        op.reason = reason
        for name, value in headers:
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            op.txOption.headers.append(header)
        try:
            call.hangup(op)
        except pj.Error as exc:
            log.warning("SIP refusal failed", extra={"code": code, "error": exc.info()})
        self._done.append(call)

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
        self._ports.remove(native.slot)
        self._yard.retire_slot(native.slot, lambda: release_leg(self._ports, native))

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
