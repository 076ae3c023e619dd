"""pjsua2 plumbing the SIP connector needs but that is not about calls: its log, ports, checks.

Kept apart from connector/sip.py so that module reads as what happens to a call. pjsip's log lines
go to the "connector.sip" logger, like the connector's own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import sys

import pjsua2 as pj

from emotivoice.config import ConnectorConfig

log = logging.getLogger("emotivoice.connector.sip")

SRTP_MODES = {"off": "PJMEDIA_SRTP_DISABLED", "optional": "PJMEDIA_SRTP_OPTIONAL",
              "mandatory": "PJMEDIA_SRTP_MANDATORY"}


def vector_bytes(vector, size: int) -> bytes:
    """Copy a SWIG std::vector<unsigned char> without per-element conversion: its first word is data()."""
    data = ctypes.c_void_p.from_address(int(vector.this)).value
    return ctypes.string_at(data, size) if data else b""


@contextlib.contextmanager
def quiet_stdout():
    """Send what C code writes to fd 1 to /dev/null for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class LogWriter(pj.LogWriter):
    """pjsip's log into ours. Its errors and warnings (level 1-2: among them every request it drops,
    for a syntax error or a missing Call-ID/From/To/Via/CSeq, with the packet) become warnings."""

    def write(self, entry) -> None:
        text = entry.msg.strip()
        if entry.level <= 2:
            log.warning("pjsip: %s", text.split("\n", 1)[0][:300],
                        extra={"pj_level": entry.level, "pj_msg": text[:2000]})
        else:
            log.debug("pjsip", extra={"pj_level": entry.level, "pj_msg": text})


def check_security(cfg: ConnectorConfig) -> None:
    """Refuse a configuration that asks for TLS or SRTP but would run without it.

    pjsip starts a TLS listener on a missing certificate (every handshake then fails), and a
    misspelt srtp value must not mean "optional"; both fail at construction instead.
    """
    if cfg.srtp not in SRTP_MODES:
        raise ValueError(f"connector.srtp must be one of {', '.join(SRTP_MODES)}, not {cfg.srtp!r}")
    if not cfg.sip_tls_port:
        return
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(cfg, name)
        if not path:
            raise ValueError(f"connector.sip_tls_port is set but connector.{name} is not")
        if not os.access(path, os.R_OK):
            raise ValueError(f"connector.{name} {path!r} is missing or unreadable")


def transport_cfg(bound: str, port: int) -> pj.TransportConfig:
    tc = pj.TransportConfig()
    tc.port = port
    if bound:
        tc.boundAddress = bound
    return tc


def free_port(host: str, v6: bool) -> int:
    """A port free for both UDP and TCP right now."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as tcp:
        tcp.bind((host, 0))
        port = tcp.getsockname()[1]
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, port))
    return port


JITTER_BUFFER_MAX_MS = 2000  # a fixed buffer's capacity: a sender's backlog up to this is kept, not dropped


def endpoint_config(max_calls: int, writer: LogWriter, debug: bool, jitter_buffer_ms: int = 0) -> pj.EpConfig:
    """The Endpoint's settings: SIP events polled by the connector's own thread, pjsip's log into
    ours, a 16 kHz bridge with room for every call's streams and leg ports.

    `jitter_buffer_ms` > 0 fixes every stream's playout delay there and turns discarding off.
    pjmedia's adaptive buffer starts with no delay, grows it whenever a packet comes late (each time
    inserting silence) and shrinks it by dropping frames: a recorder's timeline moves both ways.
    A fixed delay absorbs any lateness up to it, and with no discard a backlog is played out late
    rather than dropped, so a leg's frames are its packets in sequence; silence is inserted only
    when the buffer runs dry (a sender stalled longer than the delay, or one that stopped)."""
    ep_cfg = pj.EpConfig()
    ep_cfg.uaConfig.threadCnt = 0  # SIP events are polled by the connector's thread
    ep_cfg.uaConfig.mainThreadOnly = False
    ep_cfg.uaConfig.maxCalls = max_calls
    ep_cfg.uaConfig.userAgent = "EmotiVoice"
    ep_cfg.logConfig.writer = writer
    ep_cfg.logConfig.level = 3 if debug else 2
    ep_cfg.logConfig.consoleLevel = ep_cfg.logConfig.level
    ep_cfg.logConfig.msgLogging = 0
    ep_cfg.medConfig.clockRate = 16000
    ep_cfg.medConfig.sndClockRate = 16000
    ep_cfg.medConfig.noVad = True
    ep_cfg.medConfig.ecTailLen = 0
    ep_cfg.medConfig.maxMediaPorts = 4 * max_calls + 16
    if jitter_buffer_ms > 0:
        ep_cfg.medConfig.jbInit = ep_cfg.medConfig.jbMinPre = ep_cfg.medConfig.jbMaxPre = jitter_buffer_ms
        ep_cfg.medConfig.jbMax = max(JITTER_BUFFER_MAX_MS, 2 * jitter_buffer_ms)
        ep_cfg.medConfig.jbDiscardAlgo = pj.PJMEDIA_JB_DISCARD_NONE
    return ep_cfg


def account_config(cfg: ConnectorConfig, bound: str, native_siprec: bool) -> pj.AccountConfig:
    """The one account that answers every call: RTP from `rtp_port`, SRTP as configured."""
    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = f"sip:emotivoice@{bound or 'localhost'}"
    if native_siprec:
        acc_cfg.callConfig.siprecUse = pj.PJSUA_SIP_SIPREC_OPTIONAL
    acc_cfg.mediaConfig.transportConfig.port = cfg.rtp_port
    acc_cfg.mediaConfig.transportConfig.portRange = 0
    if bound:
        acc_cfg.mediaConfig.transportConfig.boundAddress = bound
    acc_cfg.mediaConfig.srtpUse = getattr(pj, SRTP_MODES[cfg.srtp])
    acc_cfg.mediaConfig.srtpSecureSignaling = 0
    return acc_cfg


def create_transports(ep: pj.Endpoint, cfg: ConnectorConfig, bound: str) -> tuple[int, int]:
    """UDP and TCP on one port (`sip_port`, or a free one), TLS on `sip_tls_port` when set;
    returns (port, tls_port)."""
    v6 = ":" in cfg.sip_host
    kinds = ((pj.PJSIP_TRANSPORT_UDP6, pj.PJSIP_TRANSPORT_TCP6, pj.PJSIP_TRANSPORT_TLS6) if v6
             else (pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_TCP, pj.PJSIP_TRANSPORT_TLS))
    for _attempt in range(20):  # port 0: UDP picks a port, TCP must get the same one
        try:
            port = cfg.sip_port or free_port(bound or ("::" if v6 else "0.0.0.0"), v6)
            ep.transportCreate(kinds[0], transport_cfg(bound, port))
        except (pj.Error, OSError):
            if cfg.sip_port:
                raise
            continue
        ep.transportCreate(kinds[1], transport_cfg(bound, port))
        break
    else:
        raise RuntimeError("no free SIP port")
    if not cfg.sip_tls_port:
        return port, 0
    tls = transport_cfg(bound, cfg.sip_tls_port)
    tls.tlsConfig.certFile = cfg.tls_cert_file
    tls.tlsConfig.privKeyFile = cfg.tls_key_file
    ep.transportCreate(kinds[2], tls)
    return port, cfg.sip_tls_port
