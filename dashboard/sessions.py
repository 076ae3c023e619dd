"""Sign-in sessions that survive a reload, and signed, expiring audio playback links.

A session is a random 256-bit token. The server keeps only its SHA-256 in a registry (module
state of the Streamlit server process, behind a lock), with the user and an expiry
(`dashboard.session_ttl_s`); logging out deletes the entry, so a copied cookie stops working at
once, and a restart of the dashboard signs everybody out. The registry, not a signature, is the
authority: a token is valid only while it is listed.

The browser keeps the token in an HttpOnly, SameSite=Strict cookie that page scripts cannot read.
Streamlit talks over a WebSocket, where no cookie can be set, so after a sign-in the page gets a
one-time ticket (random, 60 s, stored hashed) and a tiny script POSTs it to /api/session
(dashboard/web.py), whose HTTP answer sets the cookie. The session token itself never appears in
a URL or in the page.

A playback link names a call, the user, the session (a hash of its token) and an expiry
(`dashboard.media_link_ttl_s`), HMAC-SHA256-signed with a 256-bit key kept in
`<data_dir>/dashboard_secret.key` (0600). /api/audio checks the signature, the expiry, and that
the request's session cookie is that same live session, on every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emotivoice.config import Settings
from emotivoice.storage.files import FILE_MODE, private_dir, write_private

COOKIE = "emotivoice_session"
TICKET_TTL_S = 60.0
SECRET_FILE = "dashboard_secret.key"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_id(token: str) -> str:
    """A public handle of a session (what a playback link is bound to); reveals nothing of the token."""
    return _digest(token)[:32]


@dataclass
class _Session:
    user: str
    expires: float


class SessionRegistry:
    """Live sessions and pending cookie tickets, by hash; thread-safe, clock injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._tickets: dict[str, tuple[str, float]] = {}  # hash(ticket) -> (token, expires)
        self._lock = threading.Lock()

    def open(self, user: str, ttl_s: float) -> str:
        """A new session for `user`; returns its token (shown to nobody but the cookie)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._sessions[_digest(token)] = _Session(user, self.clock() + ttl_s)
        return token

    def user(self, token: str | None) -> str | None:
        """The user of a live session, else None (unknown, logged out or expired)."""
        if not isinstance(token, str) or not token or len(token) > 256:
            return None
        with self._lock:
            session = self._sessions.get(_digest(token))
            if session and session.expires > self.clock():
                return session.user
            self._sessions.pop(_digest(token), None)
            return None

    def expires(self, token: str) -> float:
        with self._lock:
            session = self._sessions.get(_digest(token))
            return session.expires if session else 0.0

    def close(self, token: str | None) -> None:
        """Log out: the token stops working everywhere at once."""
        if isinstance(token, str) and token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def ticket(self, token: str) -> str:
        """A one-time ticket that /api/session exchanges for the session cookie within TICKET_TTL_S."""
        ticket = secrets.token_urlsafe(32)
        with self._lock:
            self._tickets[_digest(ticket)] = (token, self.clock() + TICKET_TTL_S)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The session token a ticket stands for, once; None if unknown, used, expired or logged out."""
        if not isinstance(ticket, str) or not ticket or len(ticket) > 256:
            return None
        with self._lock:
            token, expires = self._tickets.pop(_digest(ticket), (None, 0.0))
        return token if token and expires > self.clock() and self.user(token) else None

    def _prune(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
        for key in [k for k, (_, e) in self._tickets.items() if e <= now]:
            del self._tickets[key]


REGISTRY = SessionRegistry()  # the one every Streamlit session and HTTP route of this process shares


# ---- signed playback links -------------------------------------------------------------------

_SECRETS: dict[Path, bytes] = {}
_SECRET_LOCK = threading.Lock()


def link_secret(settings: Settings) -> bytes:
    """The HMAC key for playback links: made once (0600 in the data dir), then read back."""
    path = settings.data_dir / SECRET_FILE
    with _SECRET_LOCK:
        if path not in _SECRETS:
            if not path.is_file():
                private_dir(path.parent)
                write_private(path, secrets.token_hex(32))
            if path.stat().st_mode & 0o777 != FILE_MODE:
                raise PermissionError(f"{path} must be owner-only (0600)")
            key = bytes.fromhex(path.read_text().strip())
            if len(key) < 32:
                raise ValueError(f"{path} does not hold a 256-bit key")
            _SECRETS[path] = key
        return _SECRETS[path]


class BadLink(ValueError):
    """A playback link that is malformed, forged or expired."""


@dataclass(frozen=True)
class Link:
    call_id: str
    user: str
    session: str  # session_id() of the session it was made for
    expires: int  # unix time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"emotivoice-audio-link\x00" + payload, hashlib.sha256).digest()


def make_link(key: bytes, call_id: str, user: str, token: str, ttl_s: float, now: float | None = None) -> str:
    """The opaque, URL-safe part of /api/audio/<link> for this call, user and session."""
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = json.dumps({"c": call_id, "u": user, "s": session_id(token), "e": expires},
                         separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_sign(key, payload))}"


def read_link(key: bytes, link: str, now: float | None = None) -> Link:
    """The link's fields once its signature and expiry check out; BadLink otherwise."""
    try:
        payload_b64, sig_b64 = link.split(".")
        payload, sig = _unb64(payload_b64), _unb64(sig_b64)
    except (ValueError, TypeError):
        raise BadLink("malformed playback link") from None
    if len(link) > 2048 or not hmac.compare_digest(sig, _sign(key, payload)):
        raise BadLink("bad playback link signature")
    data = json.loads(payload)
    found = Link(str(data["c"]), str(data["u"]), str(data["s"]), int(data["e"]))
    if found.expires <= (time.time() if now is None else now):
        raise BadLink("playback link expired")
    return found
