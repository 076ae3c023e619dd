"""Who may send us calls: a source-address allowlist and SIP digest authentication (RFC 2617/7616, MD5).

pjsua2 only authenticates as a client, so the connector challenges callers itself: `challenge()`
gives the WWW-Authenticate value for a 401, `verify()` checks the Authorization header of the retried
INVITE. Nonces are stateless (timestamp + HMAC with a per-process secret) and expire; a (nonce, nc)
pair is accepted once, so a captured INVITE cannot be replayed.

`RateLimiter` is the per-source token bucket for new INVITEs (bounded memory: refilled buckets are
dropped), `RefusalLog` the refusal log that a flood cannot turn into one line per packet.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOG_INTERVAL_S = 10.0  # refusals of one kind from one source: at most one log line this often


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


@dataclass
class _Bucket:
    tokens: float
    stamp: float  # monotonic time `tokens` was last brought up to date


class RateLimiter:
    """A token bucket per source address: `burst` at once, then `rate_per_s` on average.

    Memory stays bounded for any number of sources: a bucket that has refilled is the same as no
    bucket, so such buckets are dropped when the table passes `max_sources` (and every few
    thousand checks); if it is still too big, the least recently used go. A dropped source starts
    again with a full burst, so eviction never refuses anyone. A rate of 0 turns limiting off.
    """

    def __init__(self, rate_per_s: float, burst: int, max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst = float(rate_per_s), max(1, int(burst))
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._checks = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str) -> bool:
        """Take one token from `source`'s bucket; False when it has none left."""
        if not self.enabled:
            return True
        now = self._clock()
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        self._buckets[source] = bucket  # most recently used last
        self._checks += 1
        if len(self._buckets) > self.max_sources or self._checks % 4096 == 0:
            self._evict(now)
        return allowed

    def retry_after_s(self, source: str) -> int:
        """Whole seconds until `source` has a token again (at least 1), for a Retry-After header."""
        bucket = self._buckets.get(source)
        if not self.enabled or bucket is None:
            return 1
        missing = 1.0 - bucket.tokens
        return max(1, math.ceil(missing / self.rate))

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        for source in [s for s, b in self._buckets.items() if now - b.stamp >= full_after]:
            del self._buckets[source]
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)


class RefusalLog:
    """Refusals logged without letting a flood write one line per packet.

    The first refusal of a kind from a source is logged at once; later ones within `interval_s`
    are counted and reported on the next line for that source and kind ("suppressed": n), which
    `flush()` writes once the interval has passed even if the flood stopped. At most `max_keys`
    sources and kinds are tracked; beyond, the oldest are reported and forgotten.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self.interval_s, self.max_keys, self._clock = logger, interval_s, max_keys, clock
        self._keys: OrderedDict[tuple[str, str], list] = OrderedDict()  # -> [logged_at, suppressed, extra]
        self.counts: dict[str, int] = {}  # kind -> refusals, for stats

    def note(self, kind: str, message: str, source: str, extra: dict | None = None) -> None:
        """Count one refusal of `kind` from `source`; log it unless one was logged just now."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now, key = self._clock(), (kind, source)
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            entry[2] = (message, dict(extra or {}))
            return
        suppressed = entry[1] if entry else 0
        self._keys.pop(key, None)
        self._keys[key] = [now, 0, None]
        self._emit(kind, message, source, extra or {}, suppressed)
        while len(self._keys) > self.max_keys:
            (old_kind, old_source), (_, count, last) = self._keys.popitem(last=False)
            if count and last:
                self._emit(old_kind, last[0], old_source, last[1], count, repeat=True)

    def flush(self) -> None:
        """Report the counts held back for sources whose interval has passed."""
        now = self._clock()
        for key, entry in list(self._keys.items()):
            if now - entry[0] < self.interval_s:
                continue
            if entry[1] and entry[2]:
                self._emit(key[0], entry[2][0], key[1], entry[2][1], entry[1], repeat=True)
            del self._keys[key]

    def _emit(self, kind: str, message: str, source: str, extra: dict, suppressed: int,
              repeat: bool = False) -> None:
        fields = {"refusal": kind, "remote": source, **extra}
        if suppressed:
            fields["suppressed"] = suppressed  # refusals of this kind from this source since the last line
        self._log.warning(message + (" (repeated)" if repeat else ""), extra=fields)
