"""The process that owns the DuckDB file serves everyone else's reads and writes.

DuckDB allows one writing process per file and, while it writes, no reader elsewhere. The
owner (the analysis service) therefore keeps the file open and answers on 127.0.0.1: reads run
on their own cursors, so they see committed data and never wait for the writer (DuckDB's MVCC),
and writes are serialised through one lock. Clients find the service through
`<db>.server.json` (url, pid and a token that only the file's owner can read: 0600).

What the listener checks, in order, before anything reaches the database:
- at most `store.max_connections` connections are served at once (more wait in the listen queue,
  not in threads), and each must deliver its whole request within `store.request_timeout_s`
  (half-open and trickling connections are closed);
- every POST carries the token in X-Store-Token (compared in constant time), else 403;
- a Content-Length is required (411), must be an integer (400) and at most
  `store.max_request_bytes` (413); the body must be a JSON object;
- /read and /write name a query or action of storage.queries, and their params must match its
  signature; /calls may carry only CallRecord's fields, and every key of the call and of each row
  must be a real column of its table (storage.db.check_record); /deltas (a live call's changed
  rows, storage/incremental.py) is checked the same way. No SQL is built from any of it.
- X-Store-User, when sent (the dashboard sends its signed-in user with every request; it holds
  the token, so the name is its claim), must name an account of the user file (else 403), and
  then storage/access.py decides: the user's role may run this query or action (else 403); a
  query that lists calls is filtered in its SQL to the user's scope (their teams, or an agent's
  own calls); a read or write naming a call outside that scope is refused with 403 (the same
  answer whether the call is another agent's or does not exist); an analyst's results carry no
  transcript text or words; /calls and /deltas are refused (403: only services store calls).
  Views of a call's transcript, playbacks, exports, sign-ins, acknowledgements, feedback and
  erasures are appended to audit_log; a read whose audit row cannot be written is refused.
  Without X-Store-User (the analysis service, the CLI) access is what it always was: everything.
Errors are answered as {"error": a short message of ours, "request_id": id}; the full exception is
logged under that id, so no Python or DuckDB text leaves the process.

GET /health (no token: it says nothing about the data) answers 200 {"ok": true} while writes go
through, and 503 {"ok": false, "store_fault": ..., "since": ..., "failures": n} from the first
write the file refused (a full disk, a read-only file, any DuckDB error that is not the caller's
bad data) until one succeeds again.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import secrets
import socket
import threading
import time
from http import HTTPStatus
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyarrow as pa

from emotivoice.config import StoreConfig
from emotivoice.storage import access, queries
from emotivoice.storage.access import AccessDenied, Directory, Principal
from emotivoice.storage.db import BadRequest, CallRecord, StorageError, connect, first_line, save_call, short
from emotivoice.storage.files import write_private
from emotivoice.storage.incremental import CallDelta, save_deltas
from emotivoice.storage.store import announcement

log = logging.getLogger(__name__)

SLOT_POLL_S = 0.2  # how often a full server looks up from waiting for a slot to see if it is closing


class WriteHealth:
    """Whether the file takes writes: the first refusal starts a fault, the next success ends it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fault: str | None = None
        self.since: datetime | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.fault is None:
                self.since = datetime.now(timezone.utc)
            self.fault = f"{type(exc).__name__}: {first_line(exc)}"
            self.failures += 1

    def ok(self) -> None:
        with self._lock:
            self.fault, self.since, self.failures = None, None, 0

    def report(self) -> dict:
        with self._lock:
            if self.fault is None:
                return {"ok": True}
            return {"ok": False, "store_fault": self.fault, "since": self.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "failures": self.failures}


class StoreServer:
    """Owns the file; `start()` serves it in a background thread until `close()`."""

    def __init__(self, db_path: Path | str, host: str = "127.0.0.1", port: int = 0,
                 config: StoreConfig | None = None, users: Directory | None = None):
        self.db_path = Path(db_path)
        self.config = config or StoreConfig()
        if users is None:  # the user file of the configured data dir, as the dashboard signs in with
            from emotivoice.config import load_settings

            users = Directory.from_settings(load_settings())
        self.users = users
        self.con = connect(self.db_path, wait_s=30.0)
        self.write_lock = threading.Lock()
        self.health = WriteHealth()
        self.token = secrets.token_hex(16)
        self.httpd = _BoundedServer((host, port), _handler(self), self.config.max_connections)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    # The owning process uses the same three calls as any Store, without HTTP.
    def read(self, query: str, **params) -> pd.DataFrame:
        return self.read_named(query, params)

    def write(self, action: str, **params) -> dict:
        return self.write_named(action, params)

    def read_named(self, query: str, params: dict, principal: Principal | None = None) -> pd.DataFrame:
        """A named read for `principal` (None: a service), scoped, redacted and audited (storage/access.py)."""
        queries.reader(query)
        cursor = self.con.cursor()
        try:
            plan = access.plan_read(cursor, principal, query, params)
            frame = queries.run_read(cursor, query, params, plan.scope)
        finally:
            cursor.close()
        if principal is not None and plan.audit and (key := access.audit_due(principal, plan.audit, plan.call_id,
                                                                              str(self.db_path))):
            with self.write_lock:  # before the answer: a view that cannot be recorded is not shown
                self._watched(access.record_read, self.con, principal, plan)
            access.audit_done(key)
        return access.redact(frame, principal)

    def write_named(self, action: str, params: dict, principal: Principal | None = None) -> dict:
        queries.writer(action)
        with self.write_lock:
            return self._watched(access.run_write, self.con, principal, action, params)

    def principal(self, user: str | None, client: str | None = None) -> Principal | None:
        """Who a request acts for: None (full access) without a user, else AccessDenied or the user."""
        return None if user is None else self.users.principal(user, client)

    def save_call(self, record: CallRecord) -> None:
        with self.write_lock:
            self._watched(save_call, self.con, record)

    def save_deltas(self, deltas: list[CallDelta]) -> None:
        """Live changes of many calls in one transaction (storage/incremental.py)."""
        with self.write_lock:
            self._watched(save_deltas, self.con, deltas)

    def _watched(self, write, *args):
        """Run a write, noting in `health` whether the file took it (a caller's bad data is no fault)."""
        try:
            result = write(*args)
        except BadRequest:
            raise
        except Exception as exc:
            self.health.failed(exc)
            raise
        self.health.ok()
        return result

    def start(self) -> StoreServer:
        # close() waits for the serving loop's next look at its stop flag: 0.1 s, not the default 0.5
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), name="store-server", daemon=True)
        self._thread.start()
        write_private(announcement(self.db_path),
                      json.dumps({"url": self.url, "pid": os.getpid(), "token": self.token}))
        log.info("store served", extra={"db": str(self.db_path), "url": self.url,
                                        "max_connections": self.config.max_connections})
        return self

    def close(self) -> None:
        note = announcement(self.db_path)
        try:
            if json.loads(note.read_text()).get("pid") == os.getpid():
                note.unlink()
        except (OSError, ValueError):
            pass
        self.httpd.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.con.close()

    def __enter__(self) -> StoreServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but never more than `max_connections` at once: the accept loop
    waits for a free slot, so further connections queue in the kernel instead of costing threads."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: where connections beyond max_connections wait

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int):
        self.slots = threading.BoundedSemaphore(max(1, max_connections))
        self.closing = threading.Event()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        while not self.slots.acquire(timeout=SLOT_POLL_S):
            if self.closing.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:  # a client that hung up is no traceback
        log.debug("store connection failed", exc_info=True)


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, but only until `deadline`: each recv may wait just the time left, so a
    request that trickles in (one byte every few seconds) is cut off like a silent one."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Refused(Exception):
    """A request turned away before it reached the store: status and our own short message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _handler(server: StoreServer) -> type[BaseHTTPRequestHandler]:
    config = server.config

    class Handler(BaseHTTPRequestHandler):
        timeout = config.request_timeout_s  # per socket operation, answers included

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # replaced by one that keeps to the deadline
            self.rfile = io.BufferedReader(
                _DeadlineReader(self.connection, time.monotonic() + config.request_timeout_s))

        def log_message(self, fmt: str, *args) -> None:  # structured logs instead of stderr lines
            log.debug("store request", extra={"request": (fmt % args)[:200]})

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals (bad request line, headers too long) without echoing input."""
            if self.request_version == "HTTP/0.9":  # a request line too bad to say its version
                self.request_version = "HTTP/1.0"
            self._fail(code, HTTPStatus(code).phrase.lower(), detail=message)

        def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.connection.settimeout(config.request_timeout_s)  # a reader that stalls is let go too
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def _fail(self, status: int, message: str, detail: object = None, exc_info: bool = False) -> None:
            request_id = secrets.token_hex(6)
            log.log(logging.ERROR if status >= 500 else logging.INFO, "store request refused",
                    extra={"request_id": request_id, "status": status, "reason": message,
                           "path": str(getattr(self, "path", ""))[:100], "detail": str(detail)[:500]},
                    exc_info=exc_info)
            self._reply(status, json.dumps({"error": message, "request_id": request_id}).encode())

        def do_GET(self) -> None:
            if self.path == "/health":
                report = server.health.report()
                self._reply(200 if report["ok"] else 503, json.dumps(report).encode())
            else:
                self._fail(404, "not found")

        def do_POST(self) -> None:
            try:
                body = self._body()
            except _Refused as refusal:
                self._fail(refusal.status, refusal.message)
                return
            try:
                self._route(body)
            except AccessDenied as exc:  # our own words: the user, the query or the call refused
                self._fail(403, str(exc))
            except BadRequest as exc:  # our own words, naming at most a shortened key
                self._fail(400, str(exc), detail=repr(exc.__cause__) if exc.__cause__ else None)
            except StorageError as exc:
                self._fail(500, _FAILED.get(self.path, "store error"), detail=str(exc), exc_info=True)
            except Exception as exc:  # the service keeps serving whatever one request did
                self._fail(500, _FAILED.get(self.path, "store error"), detail=repr(exc), exc_info=True)

        def _body(self) -> dict:
            """The checked JSON body (token, length, size, shape), or _Refused."""
            token = self.headers.get("X-Store-Token", "")
            if not hmac.compare_digest(token.encode("latin-1", "replace"), server.token.encode()):
                raise _Refused(403, "bad or missing store token")
            if self.path not in _FAILED:
                raise _Refused(404, "not found")
            length = self.headers.get("Content-Length")
            if length is None:
                raise _Refused(411, "a Content-Length is required")
            if not (length.isascii() and length.strip().isdigit()):
                raise _Refused(400, "bad Content-Length")
            if int(length) > config.max_request_bytes:
                raise _Refused(413, f"request larger than {config.max_request_bytes} bytes")
            data = self.rfile.read(int(length))  # TimeoutError past the deadline: http.server closes
            if len(data) < int(length):
                raise _Refused(400, "request body shorter than its Content-Length")
            try:
                body = json.loads(data or b"{}")
            except (ValueError, RecursionError):
                raise _Refused(400, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise _Refused(400, "the body must be a JSON object")
            return body

        def _route(self, body: dict) -> None:
            principal = server.principal(self.headers.get("X-Store-User"), self.headers.get("X-Store-Client"))
            if principal is not None and self.path in ("/calls", "/deltas"):
                raise AccessDenied("calls are stored by the services, not for a user")
            if self.path == "/calls":
                server.save_call(CallRecord.from_json(body))
                self._reply(200, b'{"ok": true}')
                return
            if self.path == "/deltas":  # {"deltas": [CallDelta, ...]}, each checked by save_deltas
                if set(body) != {"deltas"} or not isinstance(body["deltas"], list):
                    raise BadRequest("a body of {'deltas': [...]} is required")
                server.save_deltas([CallDelta.from_json(d) for d in body["deltas"]])
                self._reply(200, b'{"ok": true}')
                return
            name_key = "query" if self.path == "/read" else "action"
            for key in body:
                if key not in (name_key, "params"):
                    raise BadRequest(f"unknown field {short(key)}")
            if name_key not in body:
                raise BadRequest(f"{name_key!r} is required")
            params = body.get("params", {})
            if self.path == "/read":
                frame = server.read_named(body["query"], params, principal)
                self._reply(200, _arrow(frame), "application/vnd.apache.arrow.stream")
            else:
                self._reply(200, json.dumps(server.write_named(body["action"], params, principal),
                                            default=str).encode())

    return Handler


_FAILED = {"/read": "read failed", "/write": "write failed", "/calls": "could not store the call",
           "/deltas": "could not store the changes"}


def _arrow(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()
