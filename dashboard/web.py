"""The dashboard's own HTTP routes and the guard in front of Streamlit's media store.

Why not st.audio: whatever it is given (a path or raw bytes) goes into Streamlit's in-memory
MediaFileManager and is served at /media/<content hash> with no authentication at all, to anyone
who has the URL, until the session that added it is cleaned up, which happens only
`server.disconnectedSessionTTL` (120 s) after its browser has gone. Nothing in Streamlit can tie
that URL to a signed-in user or make it expire. So the review page plays audio through a route
of our own, mounted beside Streamlit by dashboard/launcher.py (st.App, Streamlit 1.67's supported
way to add routes and middleware), and /media/ itself is closed to anyone without a session.

What each one checks, on every request:

- `POST /api/session`: the request comes from the dashboard's own page (Origin, when sent, is
  this host; Sec-Fetch-Site, when sent, is same-origin) and its body is a live one-time ticket
  (dashboard/sessions.py); then it sets the HttpOnly, SameSite=Strict session cookie (Secure
  under TLS). Anything else: 403, nothing set.
- `POST /api/logout`: same origin check; ends the session its cookie names and clears the cookie.
- `GET|HEAD /api/audio/<link>`: the link's HMAC signature and expiry; a session cookie naming a
  live session of the link's user, the very session the link was made for; the store, asked as
  that user, lets them play this call (their role and scope) and records the playback in the
  audit log; the call's stored source is a kept WAV inside the audio dir (dashboard/playback.py).
  Then the file, with Range support and `Cache-Control: no-store`. A refusal is 403 (link,
  session or the store's refusal) or 404 (no kept audio),
  with a fixed one-line text and a structured log line, never internals.
- Streamlit's `/media/...` (what st.audio, st.image and download buttons are served from, with no
  authentication of its own): answered only to a request with a live session cookie. The
  dashboard serves no audio from there; the guard covers the CSV and Parquet exports.
"""

from __future__ import annotations

import logging
import os
import re
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from emotivoice.dashboard.playback import call_source, kept_recording
from emotivoice.dashboard.sessions import COOKIE, REGISTRY, BadLink, link_secret, read_link, session_id
from emotivoice.config import Settings, load_settings

log = logging.getLogger(__name__)

MAX_TICKET_BYTES = 512


def _settings() -> Settings:
    return load_settings()


def _refuse(request: Request, status: int, text: str, reason: str) -> Response:
    log.warning("dashboard request refused", extra={
        "event": "dashboard_refused", "path": request.url.path[:80], "reason": reason,
        "client": request.client.host if request.client else None})
    return PlainTextResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from a page of this dashboard (not another site)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


def _cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def open_session(request: Request) -> Response:
    if not same_origin(request):
        return _refuse(request, 403, "refused", "cross-origin session request")
    body = await request.body()
    token = REGISTRY.redeem(body[:MAX_TICKET_BYTES].decode("ascii", "replace").strip()) \
        if len(body) <= MAX_TICKET_BYTES else None
    if token is None:
        return _refuse(request, 403, "refused", "unknown, used or expired ticket")
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    _cookie(response, request, token, max(int(REGISTRY.expires(token) - time.time()), 1))
    return response


async def close_session(request: Request) -> Response:
    if not same_origin(request):
        return _refuse(request, 403, "refused", "cross-origin logout request")
    REGISTRY.close(request.cookies.get(COOKIE))
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    _cookie(response, request, "", 0)
    return response


def play(request: Request) -> Response:
    """A kept recording for a signed link and its live session (sync: Starlette runs it in a thread)."""
    settings = _settings()
    try:
        link = read_link(link_secret(settings), request.path_params["link"])
    except BadLink as exc:
        return _refuse(request, 403, "playback link refused", str(exc))
    token = request.cookies.get(COOKIE)
    if not token or REGISTRY.user(token) != link.user or session_id(token) != link.session:
        return _refuse(request, 403, "sign in to play this call", "no live session for this link")
    from emotivoice.storage.access import AccessDenied
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    try:  # as the link's user: the store checks the call is theirs to hear, and audits the playback
        db = open_store(os.environ.get("EMOTIVOICE_DB_PATH") or settings.db_path, user=link.user,
                        client=request.client.host if request.client else None)
        source = call_source(db, link.call_id, query="playback_source")
    except AccessDenied:
        return _refuse(request, 403, "this call is not yours to play", "store refused the playback")
    except (StorageError, OSError):
        return _refuse(request, 503, "the call store is not available", "store unavailable")
    path = kept_recording(settings, source)
    if path is None:
        return _refuse(request, 404, "the audio of this call is not kept", "source is not a kept recording")
    return FileResponse(path, media_type="audio/wav", content_disposition_type="inline",
                        headers={"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"})


ROUTES = [
    Route("/api/session", open_session, methods=["POST"]),
    Route("/api/logout", close_session, methods=["POST"]),
    Route("/api/audio/{link}", play, methods=["GET", "HEAD"]),
]


class MediaGuard:
    """ASGI middleware: Streamlit's /media/ store answers only requests with a live session cookie.

    Doubled slashes are collapsed before the check, so "//media/..." does not get around it.
    """

    def __init__(self, app: ASGIApp) -> None:
        from streamlit import config

        self.app = app
        base = (config.get_option("server.baseUrlPath") or "").strip("/")
        self.prefix = f"/{base}/media/" if base else "/media/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and re.sub("/{2,}", "/", scope.get("path", "")).startswith(self.prefix):
            request = Request(scope)
            if not REGISTRY.user(request.cookies.get(COOKIE)):
                response = _refuse(request, 403, "sign in to download this", "media without a session")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
