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
        ("phrases", pa.string()), ("partial", pa.bool_())]),
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
    """Insert rows as one Arrow table; `extra` columns take the same `values` in every row."""
    if not rows:
        return
    arrow = pa.Table.from_pylist(rows, schema=SCHEMAS[table])  # noqa: F841 (read by DuckDB by name)
    more = "".join(f", ?::{_TYPES[c]} AS {c}" for c in extra)
    con.execute(f"INSERT INTO {table} BY NAME SELECT *{more} FROM arrow", list(values))


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


def save_call(con: duckdb.DuckDBPyConnection, record: CallRecord) -> None:
    """Replace everything stored for this call with `record`, atomically (feedback and alert
    acknowledgements survive)."""
    call_id = record.call["call_id"]
    columns = list(record.call)
    con.execute("BEGIN TRANSACTION")
    try:
        alerts = _carry_acknowledgements(con, call_id, record.alerts)
        for table in CALL_TABLES:
            con.execute(f"DELETE FROM {table} WHERE call_id = ?", [call_id])
        con.execute(f"INSERT INTO calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [record.call[c] for c in columns])
        _insert(con, "speakers", record.speakers)
        _insert(con, "utterances", record.utterances)
        _insert(con, "emotion_scores", record.emotion_scores)
        _insert(con, "sarcasm", record.sarcasm)
        _insert(con, "risk_scores", record.risk_scores)
        for alert in alerts:
            carried = [c for c in ("alert_id", "created_at", "acknowledged_by", "acknowledged_at") if c in alert]
            _insert(con, "alerts", [{k: v for k, v in alert.items() if k not in carried}], extra=carried,
                    values=[alert[c] for c in carried])
        con.execute("COMMIT")
    except Exception as exc:
        con.execute("ROLLBACK")
        raise StorageError(f"could not store call {call_id}: {str(exc).splitlines()[0]}") from exc
