"""Issue 10, findings 2 and 4, replayed against a real StoreServer on a real DuckDB file.

Each test attacks the running service over loopback the way a token holder or a stranger could:
SQL smuggled in JSON keys, requests made to leak Python/DuckDB text, half-open and trickling
connections, oversized bodies, and a local user reading the database files. All traffic goes to
127.0.0.1, bounded in count; the tests take seconds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from emotivoice.config import StoreConfig
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import ServedStore, announcement
from tests.test_storage import record

INTERNALS = re.compile(r"duckdb|traceback|error:|exception|binder|catalog|conversion|parser|"
                       r"\.py\b|line \d|typeerror|keyerror|valueerror|__init__|unexpected keyword", re.I)
CALLS_COLUMNS = "SELECT column_name FROM information_schema.columns WHERE table_name = 'calls' ORDER BY 1"


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def served(tmp_path):
    """A real store service on a fresh file, with one good call already stored."""
    config = StoreConfig(max_connections=8, request_timeout_s=0.5, max_request_bytes=64 * 1024)
    with StoreServer(tmp_path / "data" / "calls.duckdb", config=config) as server:
        server.save_call(record("good"))
        yield server


def port_of(server: StoreServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def raw(server: StoreServer, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes, read to EOF: (status, body)."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(server: StoreServer, path: str, body: object, token: str | None = None) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Store-Token: {token or server.token}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    return raw(server, head + data)


def tables(server: StoreServer) -> set[str]:
    return {r[0] for r in server.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def test_sql_in_json_keys_runs_nothing_and_loses_nothing(served, tmp_path):
    """Finding 2's payload: a key that closes the column list and runs CREATE TABLE and COPY."""
    stolen = tmp_path / "stolen.txt"
    payload = (f"source) VALUES ('planted', '/etc/passwd'); CREATE TABLE pwn(a VARCHAR, b INT); "
               f"COPY (SELECT content FROM read_text('/etc/hostname')) TO '{stolen}'; INSERT INTO pwn (a, b")
    columns_before = served.con.execute(CALLS_COLUMNS).fetchall()
    good_before = served.read("call_utterances", call_id="good")
    row = dict(record("x").utterances[0], **{payload: 1})
    attacks = [
        {"call": {"call_id": "x", payload: 1}},                                 # a column of calls
        {"call": {"call_id": "x"}, "utterances": [row]},                          # a column of a row table
        {"call": {"call_id": "x"}, payload: []},                                  # a field of the record
        {"call": {"call_id": "good", payload: 1}},                                # aimed at a stored call
        {"call": {"call_id": "x", "source\"; DROP TABLE calls; --": 1}},
        {"call": {"call_id": "x"}, "speakers": [{"call_id": "good", "speaker": "a", "role": "agent", "leg": 0}]},
    ]
    for body in attacks:
        status, reply = post(served, "/calls", body)
        assert status == 400, reply
        assert len(reply) < 300 and not INTERNALS.search(reply.decode())
    for body in ({"query": "list_calls", "params": {payload: 1}}, {"query": payload},
                 {"action": "add_feedback; DROP TABLE calls", "params": {}}):
        status, reply = post(served, "/write" if "action" in body else "/read", body)
        assert status == 400, reply
    assert "pwn" not in tables(served) and not stolen.exists()
    assert served.con.execute(CALLS_COLUMNS).fetchall() == columns_before
    assert list(served.read("list_calls").call_id) == ["good"]  # nothing planted, nothing replaced
    assert served.read("call_utterances", call_id="good").equals(good_before)
    assert post(served, "/calls", record("after").__dict__)[0] == 200  # and it still serves


def test_error_bodies_carry_no_internals_and_the_log_has_them(served, caplog):
    caplog.set_level(logging.INFO, logger="emotivoice.storage")
    bad_alert = {"call_id": "x", "speaker": "c", "t_s": "soon", "kind": "escalation", "score": 1}
    requests = [
        post(served, "/read", b"{not json"),
        post(served, "/read", b"[1, 2]"),
        post(served, "/read", {"query": "list_calls", "params": {"limit": "ten"}}),
        post(served, "/read", {"query": "list_calls", "params": {"bogus": 1}}),
        post(served, "/read", {"query": "call_speakers"}),                            # a parameter missing
        post(served, "/read", {"query": ["list_calls"]}),
        post(served, "/read", {"query": "list_calls", "params": [1]}),
        post(served, "/write", {"action": "acknowledge_alert", "params": {"alert_id": 10 ** 30, "user": "u"}}),
        post(served, "/write", {"action": "add_feedback", "params": {"call_id": "good", "kind": "x", "author": "a"}}),
        post(served, "/calls", {"call": {"call_id": "x", "duration_s": "long"}}),
        post(served, "/calls", {"call": {"call_id": "x"}, "alerts": [bad_alert]}),
        post(served, "/calls", {"call": {"call_id": "x"}, "utterances": "nope"}),
        post(served, "/calls", {"call": {"call_id": "x"}, "emotion_scores": [{"call_id": "x"}] * 2}),
        post(served, "/calls", {"call": {"call_id": "x"}, "speakers": [{"call_id": "x", "leg": "left"}]}),
        post(served, "/nowhere", {}),
        raw(served, b"BREW /pot HTTP/1.1\r\n\r\n"),                                     # no such method
        raw(served, b"GET / HTTP/9.x<script>\r\n\r\n"),                                 # bad version, echoed before
    ]
    ids = []
    for status, body in requests:
        assert 400 <= status < 600, body
        text = body.decode()
        assert len(text) < 300 and not INTERNALS.search(text) and "<script>" not in text, text
        ids.append(json.loads(text)["request_id"])
    assert len(set(ids)) == len(ids)
    logged = {getattr(r, "request_id", None): r for r in caplog.records}
    assert set(ids) <= set(logged)  # every refusal can be found in the service's log
    wrong_type = logged[ids[2]]
    assert "Conversion" in wrong_type.detail or "convert" in wrong_type.detail.lower()
    assert list(served.read("list_calls").call_id) == ["good"]


@pytest.mark.slow
def test_half_open_connections_cannot_take_a_thread_each(tmp_path):
    """800 half-open sockets made 832 threads; 200 here must not pass max_connections, and a real
    request behind them is answered once their timeouts free the slots."""
    config = StoreConfig(max_connections=16, request_timeout_s=0.25)
    with StoreServer(tmp_path / "calls.duckdb", config=config) as served:
        served.save_call(record("good"))
        _flood_then_read(served)


def _flood_then_read(served: StoreServer) -> None:
    base = threading.active_count()
    idle = []
    try:
        for _ in range(200):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port_of(served)))
            idle.append(sock)
        peak, stop = [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], threading.active_count())
                time.sleep(0.005)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            frame = ServedStore(served.url, served.token, timeout_s=120).read("list_calls")
        finally:
            stop.set()
            sampler.join()
        assert list(frame.call_id) == ["good"]
        assert peak[0] <= base + served.config.max_connections + 1, peak  # +1: the sampler
    finally:
        for sock in idle:
            sock.close()


def test_a_trickling_request_is_cut_off(served):
    """One header byte at a time never idles past the timeout, but the whole request has a deadline."""
    with socket.create_connection(("127.0.0.1", port_of(served)), timeout=10) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nX-Slow: ")
        for _ in range(400):  # at most 400 x 0.05 s; the server's deadline is 0.5 s
            try:
                sock.sendall(b"a")
                time.sleep(0.05)
            except OSError:
                break
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    break
            except BlockingIOError:
                pass
            except OSError:  # reset: closed by the server
                break
            finally:
                sock.setblocking(True)
        else:
            pytest.fail("the server kept a trickling request open")
    assert list(served.read("list_calls").call_id) == ["good"]


def test_request_size_and_length_are_checked_before_reading(served):
    head = f"POST /calls HTTP/1.1\r\nX-Store-Token: {served.token}\r\n"
    status, body = raw(served, (head + f"Content-Length: {10 ** 12}\r\n\r\n").encode())
    assert status == 413 and not INTERNALS.search(body.decode())
    assert raw(served, (head + "\r\n").encode())[0] == 411
    assert raw(served, (head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").encode())[0] == 411
    for length in ("-1", "1e3", "abc", "²"):
        assert raw(served, (head + f"Content-Length: {length}\r\n\r\n").encode("utf-8"))[0] == 400
    assert raw(served, (head.replace(served.token, "0" * 32) + "Content-Length: 2\r\n\r\n{}").encode())[0] == 403
    assert raw(served, b"POST /calls HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")[0] == 403
    assert list(served.read("list_calls").call_id) == ["good"]


def test_database_wal_and_announcement_are_owner_only_whatever_the_umask(tmp_path):
    """Finding 4: another user copied the 0644 database. Under umask 022 everything is 0600/0700."""
    data = tmp_path / "data"
    db = data / "calls.duckdb"
    with umask(0o022):
        with StoreServer(db) as server:
            server.save_call(record("c1"))
            modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
            assert modes == {"calls.duckdb": 0o600, "calls.duckdb.wal": 0o600, "calls.duckdb.server.json": 0o600}
            server.con.execute("CHECKPOINT")  # DuckDB drops the WAL; the next write makes a new one
            ServedStore(server.url, server.token).save_call(record("c2"))
            ServedStore(server.url, server.token).write("add_feedback", call_id="c2", kind="note", author="a")
            assert (data / "calls.duckdb.wal").stat().st_mode & 0o777 == 0o600
            assert announcement(db).stat().st_mode & 0o777 == 0o600
        assert data.stat().st_mode & 0o777 == 0o700
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in data.iterdir())
