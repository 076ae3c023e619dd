"""One way in to the store for every process, whoever holds the DuckDB file.

DuckDB lets one process open a file for writing, and while it does, no other process may even
read it. So a long-running service (`emotivoice watch`, later `serve`) owns the file and serves
reads and writes to the others over a small local HTTP API (storage/server.py); it announces
itself in `<db>.server.json`. `open_store()` returns a client of that service when one is up,
and otherwise opens the file directly for each read or write. Either way callers name a query
from emotivoice.storage.queries and pass parameters: no SQL travels and none is built from input.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa

from emotivoice.storage import access, queries
from emotivoice.storage.access import AccessDenied, Directory, Principal
from emotivoice.storage.db import BadRequest, CallRecord, StorageError, connect, save_call
from emotivoice.storage.incremental import CallDelta, save_deltas


class Store(Protocol):
    def read(self, query: str, **params) -> pd.DataFrame:
        """Run the named read query of storage.queries with these parameters."""
        ...

    def write(self, action: str, **params) -> dict:
        """Run the named write action of storage.queries (acknowledge an alert, add feedback)."""
        ...

    def save_call(self, record: CallRecord) -> None:
        """Replace everything stored for this call, atomically."""
        ...

    def save_deltas(self, deltas: list[CallDelta]) -> None:
        """Apply only what changed in these live calls, all in one transaction (storage/incremental.py)."""
        ...


def announcement(db_path: Path | str) -> Path:
    return Path(str(db_path) + ".server.json")


class FileStore:
    """Direct access: each read or write opens the file only for as long as it takes.

    With a `user`, every read and write is checked and audited for that user (storage/access.py)
    exactly as the store service does it, resolved from the user file of the configured data dir."""

    def __init__(self, db_path: Path | str, user: str | None = None, client: str | None = None,
                 users: Directory | None = None):
        self.db_path, self.user, self.client, self._users = Path(db_path), user, client, users

    def _principal(self) -> Principal | None:
        if self.user is None:
            return None
        if self._users is None:
            from emotivoice.config import load_settings

            self._users = Directory.from_settings(load_settings())
        return self._users.principal(self.user, self.client)

    def read(self, query: str, **params) -> pd.DataFrame:
        queries.reader(query)  # an unknown name fails before the file is opened
        con = connect(self.db_path, read_only=True, wait_s=5.0)  # a missing file is a StorageError
        try:
            principal = self._principal()
            plan = access.plan_read(con, principal, query, params)
            frame = queries.run_read(con, query, params, plan.scope)
        finally:
            con.close()
        if principal is not None and plan.audit and (key := access.audit_due(principal, plan.audit, plan.call_id,
                                                                              str(self.db_path))):
            con = connect(self.db_path, wait_s=30.0)
            try:
                access.record_read(con, principal, plan)
            finally:
                con.close()
            access.audit_done(key)
        return access.redact(frame, principal)

    def write(self, action: str, **params) -> dict:
        queries.writer(action)
        principal = self._principal()
        con = connect(self.db_path, wait_s=30.0)
        try:
            return access.run_write(con, principal, action, params)
        finally:
            con.close()

    def save_call(self, record: CallRecord) -> None:
        if self.user is not None:
            raise AccessDenied("calls are stored by the services, not for a user")
        con = connect(self.db_path, wait_s=30.0)
        try:
            save_call(con, record)
        finally:
            con.close()

    def save_deltas(self, deltas: list[CallDelta]) -> None:
        if self.user is not None:
            raise AccessDenied("calls are stored by the services, not for a user")
        con = connect(self.db_path, wait_s=30.0)
        try:
            save_deltas(con, deltas)
        finally:
            con.close()


class ServedStore:
    """A client of the process that owns the file (storage/server.py); with a `user`, it acts for
    that dashboard user (X-Store-User, and X-Store-Client: the address the dashboard saw them at)."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0, user: str | None = None,
                 client: str | None = None):
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self.user, self.client = user, client

    def _post(self, path: str, body: dict) -> bytes:
        headers = {"Content-Type": "application/json", "X-Store-Token": self.token}
        if self.user is not None:
            headers["X-Store-User"] = self.user
            if self.client:
                headers["X-Store-Client"] = self.client[:64]
        request = urllib.request.Request(self.url + path, data=json.dumps(body, default=str).encode(),
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from exc
        except OSError as exc:
            raise StorageError(f"store service at {self.url} unreachable: {exc}") from exc

    def read(self, query: str, **params) -> pd.DataFrame:
        queries.reader(query)  # unknown names fail here, before the round trip
        with pa.ipc.open_stream(self._post("/read", {"query": query, "params": params})) as stream:
            return stream.read_all().to_pandas()

    def write(self, action: str, **params) -> dict:
        queries.writer(action)
        return json.loads(self._post("/write", {"action": action, "params": params}))

    def save_call(self, record: CallRecord) -> None:
        self._post("/calls", record.__dict__)

    def save_deltas(self, deltas: list[CallDelta]) -> None:
        self._post("/deltas", {"deltas": [d.__dict__ for d in deltas]})


def _refusal(exc: urllib.error.HTTPError) -> StorageError:
    """The service's answer as the error a FileStore would raise: BadRequest for a 4xx, else
    StorageError, with the service's short message and the request id its log has the detail under."""
    try:
        info = json.loads(exc.read())
        message, request_id = str(info["error"]), info.get("request_id")
    except (ValueError, KeyError, TypeError, OSError):
        message, request_id = f"HTTP {exc.code}", None
    text = message + (f" (store request {request_id})" if request_id else "")
    if exc.code == 403:
        return AccessDenied(text)
    return BadRequest(text) if 400 <= exc.code < 500 else StorageError(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_store(db_path: Path | str, user: str | None = None, client: str | None = None) -> Store:
    """The serving process's client when one owns `db_path`, else direct file access; with a
    `user`, limited to what that dashboard user may see and do (storage/access.py)."""
    note = announcement(db_path)
    try:
        info = json.loads(note.read_text())
        if _alive(int(info["pid"])):
            return ServedStore(info["url"], info["token"], user=user, client=client)
    except (OSError, ValueError, KeyError):
        pass
    return FileStore(db_path, user=user, client=client)
