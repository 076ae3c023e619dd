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

Which requests and calls it takes is connector/sipadmit.py (source, method, INVITE rate,
credentials, admission, capacity); what happens to an answered call's legs is connector/sipmedia.py
(`connector.media_path`: pjmedia WAV writers or Python ports).

Refusals are counted (`stats()`) and logged with the source, one line per source and kind per 10 s
carrying the number held back. The call's id is ours (storage.files.new_call_id); the SIP Call-ID,
From, To and the SIPREC session id and participants are bounded text in CallStarted.metadata
["external"], never a name.

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

from emotivoice.analysis.live.messages import LiveSink
from emotivoice.connector.access import DigestAuth, RateLimiter, RefusalLog, parse_allow
from emotivoice.connector.pjsetup import (LogWriter, account_config, check_security, create_transports, endpoint_config,
                                          quiet_stdout)
from emotivoice.connector.nativeleg import LegTailer, WavPorts
from emotivoice.connector.portyard import BridgeEndpoint, PortYard
from emotivoice.connector.sipadmit import CallAdmission
from emotivoice.connector.sipcall import ClockWatch, SipAccount, SipCall
from emotivoice.connector.sipguard import RequestPolicy, SipGuard
from emotivoice.connector.sipmedia import BRIDGE_RATE, CallMedia
from emotivoice.config import ConnectorConfig

log = logging.getLogger(__name__)

_MAX_CALLS_BUILT = 256 if hasattr(pj, "PJSUA_SIP_SIPREC_OPTIONAL") else 4  # PJSUA_MAX_CALLS of the binding
MEDIA_PATHS = ("native", "python")


class SipConnector(CallAdmission, CallMedia):
    """Answers SIP/SIPREC calls and feeds their audio to `sink`. start() returns once listening."""

    def __init__(self, cfg: ConnectorConfig, sink: LiveSink):
        check_security(cfg)
        if cfg.media_path not in MEDIA_PATHS:
            raise ValueError(f"connector.media_path must be one of {', '.join(MEDIA_PATHS)}, not {cfg.media_path!r}")
        if cfg.jitter_buffer_ms and not 20 <= cfg.jitter_buffer_ms <= 1000:
            raise ValueError(f"connector.jitter_buffer_ms must be 0 (adaptive) or 20 to 1000, "
                             f"not {cfg.jitter_buffer_ms}")
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
        self.jitter = {"legs": 0, "fixed_legs": 0, "empty_frames": 0, "discarded_frames": 0,  # on_stream_destroyed
                       "lost_frames": 0, "rtp_lost_packets": 0, "max_delay_ms": 0}
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
                "jitter_buffer": {"fixed_ms": self.cfg.jitter_buffer_ms if self.cfg.media_path == "native" else 0,
                                  **self.jitter},
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
                                 log.isEnabledFor(logging.DEBUG),
                                 self.cfg.jitter_buffer_ms if self.cfg.media_path == "native" else 0)
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

