"""Which SIP requests and calls the connector takes: the checks before a call is answered.

The SipConnector (connector/sip.py) mixes this in; it runs on the connector's event thread, in
pjsua2's onIncomingCall, and answers refusals on the thread's next turn.

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
"""

from __future__ import annotations

import logging
import pjsua2 as pj

from emotivoice.analysis.live.messages import refusal, wire_text
from emotivoice.connector.access import host_of, is_allowed
from emotivoice.connector.sipcall import CallState, SipAccount, SipCall, call_metadata_of
from emotivoice.connector.siprec import parse_sip, summarize_invite
from emotivoice.storage.files import new_call_id

log = logging.getLogger("emotivoice.connector.sip")


class CallAdmission:
    """SipConnector's answer to a new INVITE: refuse it (queued, see `_refuse`) or answer it."""

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

