"""The DuckDB store: connection, versioned migrations, and the per-call transactional write.

A call is written in one transaction: its old rows (if re-analysed) are deleted and the new ones
inserted as Arrow tables, so a crash or a full disk mid-write leaves the previous state whole
and never half a call that looks complete.

A record may arrive from the network (storage/server.py), so its keys are checked against the
tables' real columns before any SQL is made: a key is data until it is known to name a column,
and values only ever travel as parameters. The database file and its WAL are kept 0600 whatever
the umask (a missing parent directory is created 0700).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from emotivoice.storage import search_index
from emotivoice.storage.files import make_private, open_private, private_dir

log = logging.getLogger(__name__)

# feedback is a person's work and survives re-analysis; everything derived is replaced.
CALL_TABLES = ("alerts", "risk_scores", "sarcasm", "emotion_scores", "utterances", "speakers", "calls")


class StorageError(Exception):
    """The store could not be opened or written; the message says why, in one line."""


class BadRequest(StorageError, ValueError):
    """The caller asked for something the store does not take (an unknown column, query or
    parameter, a value of the wrong type); the message names at most the refused key, shortened,
    so it is safe to send back to a remote caller."""


def short(value: object, limit: int = 40) -> str:
    """`value` as a short repr, for messages that name what a caller sent."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text, bounded (DuckDB errors run to many lines)."""
    lines = str(exc).splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failure without raising: when COMMIT itself failed DuckDB has already
    rolled back, and ROLLBACK then says "no transaction is active" (issue 12), which must not
    replace the real error or kill the caller's thread."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error as exc:
        if "no transaction is active" not in str(exc):
            log.warning("rollback failed", extra={"error": first_line(exc)})


def wal_path(path: Path | str) -> Path:
    return Path(str(path) + ".wal")


def keep_private(path: Path | str) -> None:
    """Make the database file and its WAL 0600. DuckDB deletes the WAL at each checkpoint and makes
    a new one (as the umask says) at the next write, but writes into one that already exists: so a
    missing WAL is created here, empty and 0600, and the next write lands in a private file."""
    make_private(Path(path))
    try:
        with open_private(wal_path(path), "ab"):  # O_APPEND without O_TRUNC: a live WAL is untouched
            pass
    except OSError as exc:
        log.warning("could not keep the WAL private", extra={"db": str(path), "error": str(exc)})


def keep_private_con(con: duckdb.DuckDBPyConnection) -> None:
    """keep_private for whatever file `con` writes (nothing for an in-memory database)."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if row and row[0]:
        keep_private(row[0])


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for every file in storage/migrations, in order."""
    found = []
    for entry in resources.files("emotivoice.storage.migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply pending migrations, each in its own transaction; return the schema version."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMP DEFAULT current_timestamp)")
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    for version, sql in migrations():
        if version <= current:
            continue
        try:
            con.execute("BEGIN TRANSACTION")
            con.execute(sql)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            rollback(con)
            raise StorageError(f"could not apply migration {version}: {first_line(exc)}") from exc
        current = version
    return current


def _held_elsewhere(exc: duckdb.Error) -> bool:
    """True when the file is only busy: held by another process (a lock) or by a connection of
    this process opened the other way (read-only against read-write)."""
    text = str(exc).lower()
    return "lock" in text or "different configuration" in text


def connect(path: Path | str, read_only: bool = False, wait_s: float = 0.0) -> duckdb.DuckDBPyConnection:
    """Open the store (creating and migrating it when writable).

    DuckDB lets one process hold a file for writing; `wait_s` retries while another holds it,
    which is how short-lived readers and writers take turns. Threads of one process take turns the
    same way: while one holds the file read-write, another cannot open it read-only (nor the other
    way round), which DuckDB reports as a ConnectionException rather than a lock. The dashboard met
    it: a call's view being audited read-write while the browser fetched its recording (a read)
    answered that request with a 500.
    """
    path = Path(path)
    if read_only and not path.is_file():
        raise StorageError(f"{path}: no database yet (analyse a call first)")
    if not read_only and not path.parent.is_dir():
        private_dir(path.parent)  # ours, so owner-only; an existing directory is the user's choice
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _held_elsewhere(exc) or time.monotonic() >= deadline:
                raise StorageError(f"{path}: {str(exc).splitlines()[0]}") from exc
            time.sleep(0.05)
    if not read_only:
        try:
            migrate(con)
        except StorageError:
            con.close()
            raise
        keep_private(path)
    return con


@dataclass
class CallRecord:
    """One call's rows, ready to store. Keys of each dict are the table's column names."""

    call: dict
    speakers: list[dict] = field(default_factory=list)
    utterances: list[dict] = field(default_factory=list)
    emotion_scores: list[dict] = field(default_factory=list)
    sarcasm: list[dict] = field(default_factory=list)
    risk_scores: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    scorecard: list[dict] = field(default_factory=list)  # scorecard_answers rows (storage/scorecards.py)

    @classmethod
    def from_json(cls, body: object) -> CallRecord:
        """A record sent over the wire: a JSON object with only CallRecord's fields (columns are
        checked by save_call)."""
        if not isinstance(body, dict):
            raise BadRequest("a call record must be a JSON object")
        known = {f.name for f in fields(cls)}
        for key in body:
            if key not in known:
                raise BadRequest(f"unknown field {short(key)}")
        if "call" not in body:
            raise BadRequest("a call record needs 'call'")
        return cls(**body)


WORD = pa.struct([("word", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                  ("probability", pa.float64())])
GRANULAR = pa.struct([("emotion", pa.string()), ("label", pa.string()), ("band", pa.string()),
                      ("intensity", pa.float64())])
SCHEMAS = {
    "speakers": pa.schema([("call_id", pa.string()), ("speaker", pa.string()), ("role", pa.string()),
                           ("leg", pa.int32()), ("language", pa.string()), ("talk_time_s", pa.float64()),
                           ("metrics", pa.string()), ("role_confidence", pa.float64()), ("role_source", pa.string()),
                           ("role_reason", pa.string())]),
    "utterances": pa.schema([
        ("call_id", pa.string()), ("utterance_idx", pa.int32()), ("speaker", pa.string()), ("leg", pa.int32()),
        ("start_s", pa.float64()), ("end_s", pa.float64()), ("text", pa.string()), ("language", pa.string()),
        ("words", pa.list_(WORD)), ("loudness_dbfs", pa.float64()), ("base_emotion", pa.string()),
        ("base_confidence", pa.float64()), ("granular", pa.list_(GRANULAR)), ("complex_emotion", pa.string()),
        ("sentiment", pa.float64()), ("prosody", pa.string()), ("prosody_z", pa.string()), ("interrupts", pa.bool_()),
        ("phrases", pa.string()), ("partial", pa.bool_()), ("transcript_note", pa.string())]),
    "emotion_scores": pa.schema([("call_id", pa.string()), ("utterance_idx", pa.int32()),
                                 ("emotion", pa.string()), ("probability", pa.float64())]),
    "sarcasm": pa.schema([("call_id", pa.string()), ("utterance_idx", pa.int32()), ("is_sarcastic", pa.bool_()),
                          ("confidence", pa.float64()), ("ambiguous", pa.bool_()), ("reason", pa.string())]),
    "risk_scores": pa.schema([("call_id", pa.string()), ("utterance_idx", pa.int32()), ("speaker", pa.string()),
                              ("t_s", pa.float64()), ("score", pa.float64()), ("factors", pa.string())]),
    "alerts": pa.schema([("call_id", pa.string()), ("speaker", pa.string()), ("t_s", pa.float64()),
                         ("kind", pa.string()), ("score", pa.float64()), ("factors", pa.string()),
                         ("utterance_idx", pa.int32())]),
}


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict], extra: list[str] = (),
            values: list = ()) -> None:
    """Insert rows as one Arrow table; `extra` columns take the same `values` in every row.
    `table` and `extra` are our own names (CALL_TABLES, _TYPES), never a caller's."""
    if not rows:
        return
    con.register("incoming_rows", pa.Table.from_pylist(rows, schema=SCHEMAS[table]))
    more = "".join(f", ?::{_TYPES[c]} AS {c}" for c in extra)
    con.execute(f"INSERT INTO {table} BY NAME SELECT *{more} FROM incoming_rows", list(values))
    con.unregister("incoming_rows")  # after a failure, save_call unregisters once it has rolled back


def _forget_rows(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.unregister("incoming_rows")
    except duckdb.Error:
        pass


_TYPES = {"alert_id": "BIGINT", "created_at": "TIMESTAMP", "acknowledged_by": "VARCHAR", "acknowledged_at": "TIMESTAMP"}


ACK_MATCH_S = 5.0  # an alert re-raised within this many seconds of a stored one is the same alert


def _carry_acknowledgements(con: duckdb.DuckDBPyConnection, call_id: str, alerts: list[dict]) -> list[dict]:
    """A live call is re-saved as it grows and finalised by a batch pass: an alert a supervisor has
    already seen or acknowledged keeps its id, creation time and acknowledgement when it is raised
    again (same speaker and kind, within ACK_MATCH_S)."""
    old = con.execute("SELECT alert_id, speaker, kind, t_s, created_at, acknowledged_by, acknowledged_at "
                      "FROM alerts WHERE call_id = ?", [call_id]).fetchall()
    taken: set[int] = set()
    out = []
    for alert in alerts:
        near = [o for o in old if o[0] not in taken and o[1] == alert["speaker"] and o[2] == alert["kind"]
                and abs((o[3] or 0.0) - alert["t_s"]) <= ACK_MATCH_S]
        if near:
            o = min(near, key=lambda o: abs((o[3] or 0.0) - alert["t_s"]))
            taken.add(o[0])
            alert = {**alert, "alert_id": o[0], "created_at": o[4], "acknowledged_by": o[5], "acknowledged_at": o[6]}
        out.append(alert)
    return out


ROW_TABLES = ("speakers", "utterances", "emotion_scores", "sarcasm", "risk_scores", "alerts")
_COLUMNS: dict[str, frozenset[str]] = {}


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
    """The real columns of one of our tables, read from the schema once per process (every store is
    migrated to the same schema by connect())."""
    if table not in _COLUMNS:
        rows = con.execute("SELECT column_name FROM information_schema.columns WHERE table_catalog = "
                           "current_database() AND table_schema = 'main' AND table_name = ?", [table]).fetchall()
        _COLUMNS[table] = frozenset(r[0] for r in rows)
    return _COLUMNS[table]


def _check_keys(row: dict, allowed: frozenset[str], table: str) -> None:
    for key in row:
        if not isinstance(key, str) or key not in allowed:
            raise BadRequest(f"unknown column {short(key)} in {table}")


def check_record(con: duckdb.DuckDBPyConnection, record: CallRecord) -> None:
    """Refuse a record unless every key names a real column of its table (rows: one that is also
    written, see SCHEMAS) and every row belongs to the call; BadRequest names the first refusal."""
    call = record.call
    if not isinstance(call, dict) or not isinstance(call.get("call_id"), str) or not call["call_id"]:
        raise BadRequest("a call needs a call_id string")
    _check_keys(call, table_columns(con, "calls"), "calls")
    for table in ROW_TABLES:
        rows = getattr(record, table)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BadRequest(f"{table} must be a list of objects")
        allowed = frozenset(SCHEMAS[table].names) & table_columns(con, table)
        for row in rows:
            _check_keys(row, allowed, table)
            if row.get("call_id") != call["call_id"]:
                raise BadRequest(f"every {table} row needs the call's call_id")
    from emotivoice.storage.scorecards import check_rows  # here: storage.scorecards imports this module

    check_rows(call["call_id"], record.scorecard)


# what went wrong with the caller's data, in our words (DuckDB's own text is logged, not returned)
_DATA_ERRORS = ((duckdb.ConstraintException, "a duplicate key or a missing required value"),
                ((duckdb.ConversionException, duckdb.InvalidInputException, pa.ArrowException, TypeError, ValueError),
                 "a value of the wrong type"),
                (KeyError, "a row without a required field"))


def save_call(con: duckdb.DuckDBPyConnection, record: CallRecord) -> None:
    """Replace everything stored for this call with `record`, atomically (feedback and alert
    acknowledgements survive). Bad data is a BadRequest, any other failure a StorageError; either
    way the previous state of the call is left whole."""
    from emotivoice.storage.scorecards import sync_answers  # here: storage.scorecards imports this module

    check_record(con, record)
    call_id = record.call["call_id"]
    columns = list(record.call)  # checked above: each is a real column of calls
    names = ", ".join(f'"{c}"' for c in columns)
    try:
        con.execute("BEGIN TRANSACTION")
        alerts = _carry_acknowledgements(con, call_id, record.alerts)
        for table in CALL_TABLES:
            con.execute(f"DELETE FROM {table} WHERE call_id = ?", [call_id])
        con.execute(f"INSERT INTO calls ({names}) VALUES ({', '.join('?' * len(columns))})",
                    [record.call[c] for c in columns])
        for table in ROW_TABLES[:-1]:
            _insert(con, table, getattr(record, table))
        for alert in alerts:
            carried = [c for c in ("alert_id", "created_at", "acknowledged_by", "acknowledged_at") if c in alert]
            _insert(con, "alerts", [{k: v for k, v in alert.items() if k not in carried}], extra=carried,
                    values=[alert[c] for c in carried])
        search_index.index_record(con, record)  # the search index changes with the text (migration 011)
        sync_answers(con, call_id, record.scorecard)  # a coach's answers are kept, like feedback
        con.execute("COMMIT")
    except Exception as exc:
        rollback(con)
        _forget_rows(con)
        log.warning("call not stored", extra={"call_id": call_id[:80], "error": first_line(exc)})
        for kinds, what in _DATA_ERRORS:
            if isinstance(exc, kinds):
                raise BadRequest(f"could not store call {call_id[:64]}: {what}") from exc
        raise StorageError(f"could not store call {call_id[:64]}: {first_line(exc)}") from exc
    keep_private_con(con)
