"""Who may send us calls: a source-address allowlist and SIP digest authentication (RFC 2617/7616, MD5).

pjsua2 only authenticates as a client, so the connector challenges callers itself: `challenge()`
gives the WWW-Authenticate value for a 401, `verify()` checks the Authorization header of the retried
INVITE. Nonces are stateless (timestamp + HMAC with a per-process secret) and expire; a (nonce, nc)
pair is accepted once, so a captured INVITE cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(spec: str) -> list[Network]:
    """'10.0.0.0/8, 192.168.1.7, ::1' -> networks. An empty spec allows nobody; '0.0.0.0/0,::/0' everyone."""
    return [ipaddress.ip_network(item.strip(), strict=False) for item in spec.split(",") if item.strip()]


def host_of(address: str) -> str:
    """'127.0.0.1:5060' or '[::1]:5060' (pjsua's srcAddress) -> the bare IP."""
    address = address.strip()
    if address.startswith("["):
        return address[1:].split("]")[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def is_allowed(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(host_of(address))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def parse_auth_params(header: str) -> dict[str, str]:
    """'Digest username="a", nc=00000001, ...' -> {"username": "a", "nc": "00000001", ...}."""
    _, _, rest = header.strip().partition(" ")
    return {k.lower(): (quoted if quoted or plain == "" else plain)
            for k, quoted, plain in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', rest)}


@dataclass
class DigestAuth:
    user: str
    password: str
    realm: str = "emotivoice"
    nonce_ttl_s: float = 300.0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _seen: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _sign(self, stamp: str) -> str:
        return hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        stamp = f"{int(time.time())}.{secrets.token_hex(4)}"
        return f"{stamp}.{self._sign(stamp)}"

    def _nonce_fresh(self, nonce: str) -> bool:
        stamp, _, sig = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(sig, self._sign(stamp)):
            return False
        try:
            return 0 <= time.time() - float(stamp.split(".")[0]) <= self.nonce_ttl_s
        except ValueError:
            return False

    def challenge(self, stale: bool = False) -> str:
        value = f'Digest realm="{self.realm}", nonce="{self.new_nonce()}", algorithm=MD5, qop="auth"'
        return value + (", stale=true" if stale else "")

    def verify(self, method: str, authorization: str) -> bool:
        """True if `authorization` proves the password for this method, fresh nonce, not replayed."""
        if not authorization.lower().startswith("digest "):
            return False
        p = parse_auth_params(authorization)
        if p.get("username") != self.user or p.get("realm") != self.realm or not self._nonce_fresh(p.get("nonce", "")):
            return False
        if p.get("algorithm", "MD5").upper() != "MD5":
            return False
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = _md5(f"{method}:{p.get('uri', '')}")
        if p.get("qop"):
            if p["qop"] != "auth":
                return False
            expected = _md5(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        else:
            expected = _md5(f"{ha1}:{p['nonce']}:{ha2}")
        if not hmac.compare_digest(expected, p.get("response", "").lower()):
            return False
        key = (p["nonce"], p.get("nc", ""))
        now = time.time()
        with self._lock:
            for old in [k for k, t in self._seen.items() if now - t > self.nonce_ttl_s]:
                del self._seen[old]
            if key in self._seen:
                return False
            self._seen[key] = now
        return True
