"""One WebSocket listener for the JSON/WebSocket media forks: Twilio at /twilio, AudioHook at /audiohook.

Each protocol lives in its own module as a route: `check_request` may refuse the HTTP upgrade
(AudioHook's API key gives 401), `handle` serves one accepted connection. Unknown paths get 404
before any WebSocket is opened. A query string on the path is ignored for routing (Twilio
stream URLs often carry one).

What this listener checks for every connection: the path (404 otherwise), the opening
handshake within websockets' open timeout (10 s), messages of at most 1 MiB without compression
(a larger one closes the connection with 1009), then the route's own checks (connector/twilio.py,
connector/audiohook.py), then admission: while the engine's recording cannot keep up
(analysis/live/recording.py) a new stream is refused at the upgrade with HTTP 503 and
Retry-After, before any session exists (logged and counted in `refused`). A session that fails
its route's handshake stores nothing, and nothing a peer sends ever names a file: calls get ids
of our own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from emotivoice.analysis.live.messages import LiveSink, refusal
from emotivoice.connector.audiohook import AudioHookRoute
from emotivoice.connector.loop_thread import LoopThread
from emotivoice.connector.twilio import TwilioRoute
from emotivoice.config import ConnectorConfig

log = logging.getLogger(__name__)


class Route(Protocol):
    """One protocol served at one path."""

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None: ...

    async def handle(self, ws: ServerConnection) -> None: ...

    def shutting_down(self) -> None: ...


def route_path(raw_path: str) -> str:
    return urlsplit(raw_path).path.rstrip("/") or "/"


class ForkWebSocketServer:
    """Serves Twilio Media Streams and Genesys AudioHook on `websocket_host:websocket_port`.

    start() binds and returns at once (its asyncio loop runs on a daemon thread); `port` is the
    bound port, so port 0 picks a free one (tests). The composition root leaves the server
    unstarted when the configured port is 0. stop() closes every connection (code 1001) and
    each open call ends once with reason "shutdown".
    """

    def __init__(self, cfg: ConnectorConfig, sink: LiveSink):
        self.host = cfg.websocket_host
        self.port = cfg.websocket_port
        self.routes: dict[str, Route] = {"/twilio": TwilioRoute(sink), "/audiohook": AudioHookRoute(cfg, sink)}
        self.sink = sink
        self.retry_after_s = max(1, cfg.overload_retry_after_s)
        self.refused = 0  # streams refused because recording could not keep up
        self._thread = LoopThread("media-fork-websocket")
        self._server: Server | None = None

    def start(self) -> None:
        self._thread.start()
        self._thread.run(self._listen)
        log.info("media fork websocket listening",
                 extra={"host": self.host, "port": self.port, "paths": sorted(self.routes)})

    def stop(self) -> None:
        if self._server is not None:
            self._thread.run(self._shutdown, timeout=15.0)
        self._thread.stop()

    async def _listen(self) -> None:
        self._server = await serve(self._handle, self.host, self.port, process_request=self._check_request,
                                   compression=None, max_size=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        for route in self.routes.values():
            route.shutting_down()
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 10.0)
        except TimeoutError:
            log.warning("media fork websocket: connections still open at shutdown")
        self._server = None

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        route = self.routes.get(route_path(request.path))
        if route is None:
            log.info("media fork websocket: unknown path", extra={"path": request.path,
                                                                 "remote": _remote(connection)})
            return connection.respond(404, "Not found: use /twilio or /audiohook\n")
        refused = route.check_request(connection, request)
        if refused is not None:
            return refused
        path = route_path(request.path)
        overloaded = refusal(self.sink, path.strip("/"))
        if overloaded is None:
            return None
        self.refused += 1
        log.warning("media fork refused: recording cannot keep up",
                    extra={"path": path, "remote": _remote(connection), "reason": overloaded, "refused": self.refused})
        response = connection.respond(503, "Service unavailable: call recording cannot keep up; try again later\n")
        response.headers["Retry-After"] = str(self.retry_after_s)
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        await self.routes[route_path(ws.request.path)].handle(ws)


def _remote(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else ""
