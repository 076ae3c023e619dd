"""The process that owns the DuckDB file serves everyone else's reads and writes.

DuckDB allows one writing process per file and, while it writes, no reader elsewhere. The
owner (the analysis service) therefore keeps the file open and answers on 127.0.0.1: reads run
on their own cursors, so they see committed data and never wait for the writer (DuckDB's MVCC),
and writes are serialised through one lock. Clients find the service through
`<db>.server.json` (url, pid and a token that only the file's readers can know).
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyarrow as pa

from storage import queries
from storage.db import CallRecord, StorageError, connect, save_call
from storage.store import announcement

log = logging.getLogger(__name__)


class StoreServer:
    """Owns the file; `start()` serves it in a background thread until `close()`."""

    def __init__(self, db_path: Path | str, host: str = "127.0.0.1", port: int = 0):
        self.db_path = Path(db_path)
        self.con = connect(self.db_path, wait_s=30.0)
        self.write_lock = threading.Lock()
        self.token = secrets.token_hex(16)
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    # The owning process uses the same three calls as any Store, without HTTP.
    def read(self, query: str, **params) -> pd.DataFrame:
        cursor = self.con.cursor()
        try:
            return queries.reader(query)(cursor, **params)
        finally:
            cursor.close()

    def write(self, action: str, **params) -> dict:
        with self.write_lock:
            return queries.writer(action)(self.con, **params)

    def save_call(self, record: CallRecord) -> None:
        with self.write_lock:
            save_call(self.con, record)

    def start(self) -> StoreServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="store-server", daemon=True)
        self._thread.start()
        note = announcement(self.db_path)
        tmp = note.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid(), "token": self.token}))
        os.chmod(tmp, 0o600)
        tmp.replace(note)
        log.info("store served", extra={"db": str(self.db_path), "url": self.url})
        return self

    def close(self) -> None:
        note = announcement(self.db_path)
        try:
            if json.loads(note.read_text()).get("pid") == os.getpid():
                note.unlink()
        except (OSError, ValueError):
            pass
        self.httpd.shutdown()
        self.httpd.server_close()
        self.con.close()

    def __enter__(self) -> StoreServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _handler(server: StoreServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args) -> None:  # structured logs instead of stderr lines
            log.debug("store request", extra={"request": fmt % args})

        def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, b'{"ok": true}')
            else:
                self._reply(404, b"not found")

        def do_POST(self) -> None:
            if self.headers.get("X-Store-Token") != server.token:
                self._reply(403, b"bad or missing store token")
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/read":
                    frame = server.read(body["query"], **body.get("params", {}))
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    sink = io.BytesIO()
                    with pa.ipc.new_stream(sink, table.schema) as writer:
                        writer.write_table(table)
                    self._reply(200, sink.getvalue(), "application/vnd.apache.arrow.stream")
                elif self.path == "/write":
                    self._reply(200, json.dumps(server.write(body["action"], **body.get("params", {})),
                                                default=str).encode())
                elif self.path == "/calls":
                    server.save_call(CallRecord(**body))
                    self._reply(200, b'{"ok": true}')
                else:
                    self._reply(404, b"not found")
            except (KeyError, ValueError, TypeError) as exc:
                self._reply(400, f"bad request: {exc}".encode())
            except StorageError as exc:
                self._reply(500, str(exc).encode())
            except Exception as exc:  # the service keeps serving whatever one request did
                log.exception("store request failed")
                self._reply(500, f"store error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}".encode())
    return Handler
