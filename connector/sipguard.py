"""Every SIP request checked before pjsip acts on it: two pjsip modules of our own, through ctypes.

pjsua2 lets Python see only some requests: INVITE (Account.onIncomingCall) and presence SUBSCRIBE
(Account.onIncomingSubscribe). OPTIONS is answered 200 by pjsua's core, MESSAGE is answered 200
before Account.onInstantMessage runs, and REGISTER, PUBLISH, REFER, NOTIFY and the rest get
whatever pjsua does with them. So the connector registers two pjsip modules (the C API that
pjsua itself is built from; its functions are exported by pjsua2's extension module) whose
`on_rx_request` sees every request first:

- `mod-ev-allow`, just before the transaction layer (priority 15): a request from a source outside
  `connector.allow` gets a stateless 403 (an ACK is dropped), whatever its method, inside a dialog
  or not; a response from such a source is dropped. Nothing of pjsip's sees it, so it makes no
  transaction, dialog, subscription or call.
- `mod-ev-limit`, after the transaction layer and before dialogs (priority 31), so retransmissions
  already answered never count: a method the recorder has no use for (SUBSCRIBE, MESSAGE, REGISTER,
  REFER, NOTIFY, PUBLISH...) gets a stateless 405 with Allow; a new INVITE (no To tag) beyond its
  source's token bucket (`connector.invite_rate_per_s`, `invite_burst`) gets a stateless 503 with
  Retry-After. Refusals are counted and logged through access.RefusalLog (one line per source and
  kind per 10 s, with the count held back).

A request whose top Via names a `maddr` and that would be refused is dropped instead of answered,
so a refusal is never sent to an address other than the source.

The source address is read from pjsip's `pjsip_rx_data` (pkt_info.src_name), whose layout is
mirrored below for this build (PJSIP_MAX_PKT_LEN 4000, x86-64/aarch64). Each message is checked
against it (the message buffer must lie in the packet, the source must parse as an address); a
mismatch drops the message and logs an error, so a different build fails closed, loudly.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
from dataclasses import dataclass, field

from emotivoice.connector.access import Network, RateLimiter, RefusalLog, is_allowed

log = logging.getLogger("emotivoice.connector.sip")

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK")
KNOWN_METHODS = frozenset(ALLOWED_METHODS + ("SUBSCRIBE", "NOTIFY", "MESSAGE", "REGISTER", "PUBLISH", "REFER"))
PRIORITY_ALLOW = 15  # PJSIP_MOD_PRIORITY_TSX_LAYER - 1
PRIORITY_LIMIT = 31  # PJSIP_MOD_PRIORITY_UA_PROXY_LAYER - 1
PJSIP_MAX_PKT_LEN = 4000  # sip_config.h default; connector/install_pjsua2.py does not change it
PJ_INET6_ADDRSTRLEN = 46

_START = re.compile(rb"^([A-Za-z0-9.!%*_+`'~-]{1,64}) ")  # a request line's method (RFC 3261 token)
_TO = re.compile(rb"^(?:to|t)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_VIA = re.compile(rb"^(?:via|v)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_TAG = re.compile(rb";\s*tag\s*=", re.IGNORECASE)
_MADDR = re.compile(rb";\s*maddr\s*=", re.IGNORECASE)


# -- pjsip structures (pjsip/sip_module.h, pjsip/sip_transport.h, pjlib/ioqueue.h) ---------------

class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


_ON_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _Module(ctypes.Structure):
    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("name", _PjStr),
                ("id", ctypes.c_int), ("priority", ctypes.c_int),
                ("load", ctypes.c_void_p), ("start", ctypes.c_void_p), ("stop", ctypes.c_void_p),
                ("unload", ctypes.c_void_p), ("on_rx_request", _ON_RX), ("on_rx_response", _ON_RX),
                ("on_tx_request", ctypes.c_void_p), ("on_tx_response", ctypes.c_void_p),
                ("on_tsx_state", ctypes.c_void_p)]


class _Hdr(ctypes.Structure):  # PJSIP_DECL_HDR_MEMBER: a list head for the extra response headers
    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("type", ctypes.c_int),
                ("name", _PjStr), ("sname", _PjStr), ("vptr", ctypes.c_void_p)]


class _TpInfo(ctypes.Structure):
    _fields_ = [("pool", ctypes.c_void_p), ("transport", ctypes.c_void_p), ("tp_data", ctypes.c_void_p),
                ("op_key", ctypes.c_void_p * 34),  # pj_ioqueue_op_key_t: internal__[32], two pointers
                ("op_rdata", ctypes.c_void_p)]


class _PktInfo(ctypes.Structure):
    _fields_ = [("ts_sec", ctypes.c_long), ("ts_msec", ctypes.c_long),
                ("packet", ctypes.c_char * PJSIP_MAX_PKT_LEN), ("zero", ctypes.c_uint32),
                ("len", ctypes.c_ssize_t), ("src_addr", ctypes.c_uint32 * 7),  # pj_sockaddr (28 bytes)
                ("src_addr_len", ctypes.c_int), ("src_name", ctypes.c_char * PJ_INET6_ADDRSTRLEN),
                ("src_port", ctypes.c_int)]


class _MsgInfo(ctypes.Structure):
    _fields_ = [("msg_buf", ctypes.c_void_p), ("len", ctypes.c_int), ("msg", ctypes.c_void_p)]


class _RxData(ctypes.Structure):
    _fields_ = [("tp_info", _TpInfo), ("pkt_info", _PktInfo), ("msg_info", _MsgInfo)]


@dataclass(frozen=True)
class Request:
    """What the policy needs from a received message (request or response)."""

    source: str  # the IP it came from
    port: int
    method: str  # "" for a response
    new_dialog: bool  # no To tag: an INVITE starting a call, or an out-of-dialog request
    maddr: bool  # the top Via asks for responses elsewhere


@dataclass(frozen=True)
class Verdict:
    code: int  # 0: pass it on; -1: drop silently; else the status to answer with
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()


PASS, DROP = Verdict(0), Verdict(-1)


def read_request(rdata: int) -> Request | None:
    """The source and start of the message in `rdata`, or None when the layout does not match."""
    rx = _RxData.from_address(rdata)
    pkt, msg = rx.pkt_info, rx.msg_info
    packet_at = rdata + _RxData.pkt_info.offset + _PktInfo.packet.offset
    if not (0 < pkt.len <= PJSIP_MAX_PKT_LEN and 0 < msg.len <= pkt.len and 0 <= pkt.src_port < 65536
            and msg.msg_buf is not None and packet_at <= msg.msg_buf <= packet_at + pkt.len - msg.len):
        return None
    try:
        source = str(ipaddress.ip_address(pkt.src_name.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return None
    text = ctypes.string_at(msg.msg_buf, msg.len)
    head = text.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if head.startswith(b"SIP/"):
        method = ""  # a response
    else:
        start = _START.match(head)  # pjsip parsed a request line, so this only fails on odd tokens
        method = start.group(1).decode() if start else "?"
    to = _TO.search(head)
    via = _VIA.search(head)
    return Request(source, pkt.src_port, method, not (to and _TAG.search(to.group(1))),
                   bool(via and _MADDR.search(via.group(1))))


@dataclass
class RequestPolicy:
    """What each request gets, decided in plain Python (tests drive it without pjsip)."""

    allow: list[Network]
    limiter: RateLimiter
    refusals: RefusalLog
    checked: dict[str, int] = field(default_factory=dict)  # method -> requests seen

    def screen(self, req: Request) -> Verdict:
        """mod-ev-allow: the source allowlist, for every message."""
        if not req.method:  # a response
            return PASS if is_allowed(req.source, self.allow) else DROP
        method = req.method if req.method in KNOWN_METHODS else "other"  # the table stays small
        self.checked[method] = self.checked.get(method, 0) + 1
        if is_allowed(req.source, self.allow):
            return PASS
        self.refusals.note("not_allowed", "SIP request refused: source not allowed", req.source,
                           {"method": req.method, "port": req.port})
        return DROP if req.method == "ACK" or req.maddr else Verdict(403, "Forbidden")

    def limit(self, req: Request) -> Verdict:
        """mod-ev-limit: methods we serve, and the per-source INVITE rate."""
        if not req.method:
            return PASS
        if req.method not in ALLOWED_METHODS:
            self.refusals.note("method", "SIP request refused: method not served", req.source,
                               {"method": req.method[:32]})
            return DROP if req.maddr else Verdict(405, "Method Not Allowed", (("Allow", ", ".join(ALLOWED_METHODS)),))
        if req.method != "INVITE" or not req.new_dialog or self.limiter.allow(req.source):
            return PASS
        retry = self.limiter.retry_after_s(req.source)
        self.refusals.note("rate_limited", "SIP call refused: INVITE rate limit", req.source,
                           {"rate_per_s": self.limiter.rate, "burst": self.limiter.burst, "retry_after_s": retry})
        return DROP if req.maddr else Verdict(503, "Service Unavailable", (("Retry-After", str(retry)),))


class SipGuard:
    """Registers the two modules on pjsua's endpoint and answers what the policy refuses.

    Create it on the thread that owns the pjsua2 Endpoint, after libInit; keep it until libDestroy
    (pjsip keeps pointers to the module structures and callbacks held here).
    """

    def __init__(self, library_path: str, policy: RequestPolicy):
        self.policy = policy
        self.layout_errors = 0
        lib = ctypes.CDLL(library_path)
        self._endpt = ctypes.c_void_p(_fn(lib, "pjsua_get_pjsip_endpt", ctypes.c_void_p)())
        self._register = _fn(lib, "pjsip_endpt_register_module", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        self._unregister = _fn(lib, "pjsip_endpt_unregister_module", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        self._respond = _fn(lib, "pjsip_endpt_respond_stateless", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int, ctypes.POINTER(_PjStr), ctypes.c_void_p, ctypes.c_void_p)
        self._string_hdr = _fn(lib, "pjsip_generic_string_hdr_create", ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.POINTER(_PjStr), ctypes.POINTER(_PjStr))
        self._callbacks = []  # the CFUNCTYPE objects must outlive the modules
        self._modules = [self._module(b"mod-ev-allow", PRIORITY_ALLOW, self.policy.screen, True),
                         self._module(b"mod-ev-limit", PRIORITY_LIMIT, self.policy.limit, False)]
        for module in self._modules:
            status = self._register(self._endpt, ctypes.byref(module))
            if status != 0:
                raise RuntimeError(f"pjsip refused module {module.name.ptr!r} (status {status})")

    def close(self) -> None:
        """Unregister the modules (before libDestroy; libDestroy alone also drops them)."""
        for module in reversed(self._modules):
            if module.id >= 0:
                self._unregister(self._endpt, ctypes.byref(module))
        self._modules = []

    def _module(self, name: bytes, priority: int, decide, responses: bool) -> _Module:
        def on_request(rdata: int) -> int:
            return self._handle(rdata, decide, True)

        def on_response(rdata: int) -> int:
            return self._handle(rdata, decide, False)

        request_cb = _ON_RX(on_request)
        response_cb = _ON_RX(on_response) if responses else _ON_RX()
        self._callbacks += [request_cb, response_cb, name]
        module = _Module()
        module.name = _PjStr(name, len(name))
        module.id, module.priority = -1, priority
        module.on_rx_request, module.on_rx_response = request_cb, response_cb
        return module

    def _handle(self, rdata: int, decide, is_request: bool) -> int:
        """pj_bool_t for pjsip: 1 when we consumed the message (answered or dropped it)."""
        try:
            req = read_request(rdata)
            if req is None:
                self.layout_errors += 1
                if self.layout_errors in (1, 10, 100) or self.layout_errors % 1000 == 0:
                    log.error("SIP message dropped: pjsip's rx data is not laid out as expected",
                              extra={"layout_errors": self.layout_errors})
                return 1
            if is_request != bool(req.method):
                return 1  # a request parsed as a response or the reverse: not something to act on
            verdict = decide(req)
            if verdict.code > 0:
                self._answer(rdata, verdict)
            return 0 if verdict.code == 0 else 1
        except Exception:  # never let a Python error reach C; drop the message
            log.exception("SIP guard failed; message dropped")
            return 1

    def _answer(self, rdata: int, verdict: Verdict) -> None:
        pool = ctypes.c_void_p.from_address(rdata).value  # rdata->tp_info.pool, the first member
        head = _Hdr()
        head.prev = head.next = ctypes.addressof(head)
        keep = []
        for name, value in verdict.headers:
            hname, hvalue = _PjStr(name.encode(), len(name)), _PjStr(value.encode(), len(value))
            keep += [hname, hvalue]
            hdr = self._string_hdr(pool, ctypes.byref(hname), ctypes.byref(hvalue))
            if not hdr:
                continue
            node = _Hdr.from_address(hdr)  # append before the head (pj_list_push_back)
            node.prev, node.next = head.prev, ctypes.addressof(head)
            _Hdr.from_address(head.prev).next = hdr
            head.prev = hdr
        reason = verdict.reason.encode()
        status = self._respond(self._endpt, ctypes.c_void_p(rdata), verdict.code,
                               ctypes.byref(_PjStr(reason, len(reason))), ctypes.addressof(head), None)
        if status != 0:
            log.debug("SIP refusal not sent", extra={"code": verdict.code, "status": status})


def _fn(lib: ctypes.CDLL, name: str, restype, *argtypes):
    func = getattr(lib, name)
    func.restype, func.argtypes = restype, list(argtypes)
    return func
