"""The DuckDB store: connection, versioned migrations, and the per-call transactional write.

A call is written in one transaction: its old rows (if re-analysed) are deleted and the new ones
inserted as Arrow tables, so a crash or a full disk mid-write leaves the previous state whole
and never half a call that looks complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

# feedback is a person's work and survives re-analysis; everything derived is replaced.
CALL_TABLES = ("alerts", "risk_scores", "sarcasm", "emotion_scores", "utterances", "speakers", "calls")


class StorageError(Exception):
    """The store could not be opened or written; the message says why, in one line."""


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for every file in storage/migrations, in order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
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
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        current = version
    return current


def connect(path: Path | str, read_only: bool = False, wait_s: float = 0.0) -> duckdb.DuckDBPyConnection:
    """Open the store (creating and migrating it when writable).

    DuckDB lets one process hold a file for writing; `wait_s` retries while another holds it,
    which is how short-lived readers and writers take turns.
    """
    path = Path(path)
    if read_only and not path.is_file():
        raise StorageError(f"{path}: no database yet (analyse a call first)")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise StorageError(f"{path}: {str(exc).splitlines()[0]}") from exc
            time.sleep(0.05)
    if not read_only:
        migrate(con)
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
        ("phrases", pa.string())]),
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


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    arrow = pa.Table.from_pylist(rows, schema=SCHEMAS[table])  # noqa: F841 (read by DuckDB by name)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM arrow")


def save_call(con: duckdb.DuckDBPyConnection, record: CallRecord) -> None:
    """Replace everything stored for this call with `record`, atomically."""
    call_id = record.call["call_id"]
    columns = list(record.call)
    con.execute("BEGIN TRANSACTION")
    try:
        for table in CALL_TABLES:
            con.execute(f"DELETE FROM {table} WHERE call_id = ?", [call_id])
        con.execute(f"INSERT INTO calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [record.call[c] for c in columns])
        _insert(con, "speakers", record.speakers)
        _insert(con, "utterances", record.utterances)
        _insert(con, "emotion_scores", record.emotion_scores)
        _insert(con, "sarcasm", record.sarcasm)
        _insert(con, "risk_scores", record.risk_scores)
        _insert(con, "alerts", record.alerts)
        con.execute("COMMIT")
    except Exception as exc:
        con.execute("ROLLBACK")
        raise StorageError(f"could not store call {call_id}: {str(exc).splitlines()[0]}") from exc
