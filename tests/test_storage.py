"""DuckDB store: migrations, atomic per-call writes, and feedback that survives re-analysis."""

import pytest

from emotivoice.storage.db import (SCHEMAS, BadRequest, CallRecord, StorageError, connect, migrate, migrations,
                                   save_call, table_columns)
from emotivoice.storage.store import FileStore


def record(call_id="c1", n=3, text="hello"):
    utts = [{"call_id": call_id, "utterance_idx": i, "speaker": "agent", "leg": 0, "start_s": float(i),
             "end_s": i + 0.8, "text": f"{text} {i}", "language": "en",
             "words": [{"word": " hello", "start_s": float(i), "end_s": i + 0.4, "probability": 0.9}],
             "loudness_dbfs": -23.0, "base_emotion": "anger", "base_confidence": 0.6,
             "granular": [{"emotion": "anger", "label": "frustration", "band": "medium", "intensity": 0.6}],
             "complex_emotion": None} for i in range(n)]
    scores = [{"call_id": call_id, "utterance_idx": i, "emotion": e, "probability": p}
              for i in range(n) for e, p in (("anger", 0.6), ("neutral", 0.4))]
    return CallRecord({"call_id": call_id, "source": "x.wav", "duration_s": 10.0, "channels": 2},
                      [{"call_id": call_id, "speaker": "agent", "role": "agent", "leg": 0, "language": "en",
                        "talk_time_s": 2.4, "metrics": '{"talk_share": 1.0, "words_per_minute": 125.0, '
                        '"longest_monologue_s": 2.4, "interruptions_made": 0}'}], utts, scores)


def test_migrations_apply_once(tmp_path):
    con = connect(tmp_path / "a.duckdb")
    version = migrate(con)
    assert version == migrations()[-1][0]
    assert migrate(con) == version
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"calls", "speakers", "utterances", "emotion_scores", "sarcasm", "risk_scores", "alerts",
            "feedback"} <= tables


def test_save_replaces_the_call_and_keeps_feedback(tmp_path):
    db = tmp_path / "a.duckdb"
    con = connect(db)
    save_call(con, record(n=3))
    con.execute("INSERT INTO feedback (call_id, utterance_idx, kind, value, author) "
                "VALUES ('c1', 1, 'emotion', 'sadness', 'coach')")
    save_call(con, record(n=2, text="again"))
    assert con.execute("SELECT count(*) FROM utterances").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM emotion_scores").fetchone()[0] == 4
    assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 1
    words = con.execute("SELECT words[1].word, granular[1].label FROM utterances LIMIT 1").fetchone()
    assert words == (" hello", "frustration")
    con.close()
    assert list(FileStore(db).read("call_utterances", call_id="c1").text) == ["again 0", "again 1"]


def test_failed_write_leaves_previous_state_whole(tmp_path):
    con = connect(tmp_path / "a.duckdb")
    save_call(con, record(n=3))
    broken = record(n=2, text="new")
    broken.emotion_scores.append(dict(broken.emotion_scores[0]))  # duplicate key: fails at the end
    with pytest.raises(StorageError, match="could not store call c1"):
        save_call(con, broken)
    assert [r[0] for r in con.execute("SELECT text FROM utterances ORDER BY utterance_idx").fetchall()] == [
        "hello 0", "hello 1", "hello 2"]
    assert con.execute("SELECT count(*) FROM calls").fetchone()[0] == 1


def test_reader_waits_for_writer_then_reads(tmp_path):
    db = tmp_path / "a.duckdb"
    con = connect(db)
    save_call(con, record())
    con.close()
    assert list(FileStore(db).read("list_calls").call_id) == ["c1"]


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="no database yet"):
        FileStore(tmp_path / "none.duckdb").read("list_calls")


def test_locked_file_is_a_clear_error_after_waiting(tmp_path):
    import subprocess
    import sys
    db = tmp_path / "a.duckdb"
    connect(db).close()
    hold = f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('x', flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", hold],
                              stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        with pytest.raises(StorageError, match="lock"):
            connect(db, read_only=True, wait_s=0.3)
    finally:
        holder.kill()


def test_threads_of_one_process_take_turns_reading_and_writing(tmp_path):
    """A read while another thread of the process holds the file read-write (the dashboard auditing
    a view while the browser fetches the call's recording) waits for it instead of failing with
    DuckDB's ConnectionException; without waiting it is a StorageError, and the reverse holds too."""
    import threading

    db = tmp_path / "a.duckdb"
    con = connect(db)
    save_call(con, record())
    with pytest.raises(StorageError, match="different configuration"):
        connect(db, read_only=True)
    threading.Timer(0.3, con.close).start()
    reader = connect(db, read_only=True, wait_s=5.0)
    assert reader.execute("SELECT count(*) FROM calls").fetchone()[0] == 1
    with pytest.raises(StorageError, match="different configuration"):
        connect(db)
    threading.Timer(0.3, reader.close).start()
    connect(db, wait_s=5.0).close()


def test_store_service_refuses_bad_requests_and_keeps_serving(tmp_path):
    import json
    import urllib.error
    import urllib.request

    from emotivoice.storage.server import StoreServer
    from emotivoice.storage.store import ServedStore, open_store

    db = tmp_path / "s.duckdb"
    with StoreServer(db) as server:
        def post(body: bytes, token: str) -> int:
            req = urllib.request.Request(server.url + "/read", data=body, headers={"X-Store-Token": token})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code
        assert post(json.dumps({"query": "list_calls"}).encode(), "wrong") == 403
        assert post(b"{not json", server.token) == 400
        assert post(json.dumps({"query": "drop_everything"}).encode(), server.token) == 400
        store = open_store(db)
        assert isinstance(store, ServedStore)
        with pytest.raises(BadRequest, match="unknown column 'no_such_column' in calls"):
            store.save_call(CallRecord({"call_id": "bad", "no_such_column": 1}))
        store.save_call(record("c1"))
        assert list(store.read("list_calls").call_id) == ["c1"]  # still serving, the good call stored


def test_acknowledged_alert_survives_the_call_being_saved_again(tmp_path):
    """A live call is re-saved as it grows and then finalised: a supervisor's acknowledgement stays."""
    from emotivoice.storage.queries import writer

    con = connect(tmp_path / "a.duckdb")

    def with_alerts(*times):
        rec = record(n=3)
        rec.alerts = [{"call_id": "c1", "speaker": "customer", "t_s": t, "kind": "escalation", "score": 0.6,
                       "factors": "{}", "utterance_idx": 1} for t in times]
        return rec

    save_call(con, with_alerts(12.0))
    alert_id, created = con.execute("SELECT alert_id, created_at FROM alerts").fetchone()
    writer("acknowledge_alert")(con, alert_id=alert_id, user="sup")
    save_call(con, with_alerts(12.4, 40.0))  # the same alert, re-timed by the final pass, and a new one
    rows = con.execute("SELECT alert_id, t_s, created_at, acknowledged_by FROM alerts ORDER BY t_s").fetchall()
    assert rows[0] == (alert_id, 12.4, created, "sup")
    assert rows[1][0] != alert_id and rows[1][3] is None


def test_only_real_columns_are_stored_and_values_stay_parameters(tmp_path):
    """A record's keys become column names, so each must be a real column of its table (finding 2:
    a crafted key ran SQL); a refused record changes nothing."""
    db = tmp_path / "a.duckdb"
    store = FileStore(db)
    store.save_call(record("c1"))
    sneaky = 'source) VALUES (1, 2); CREATE TABLE pwn(x INT); INSERT INTO pwn (x'
    bad = [CallRecord({"call_id": "c1", sneaky: 1}),
           CallRecord({"call_id": "c1"}, utterances=[dict(record().utterances[0], **{sneaky: 1})]),
           CallRecord({"call_id": "c1"}, speakers=[dict(record().speakers[0], call_id="other")]),
           CallRecord({"call_id": "c1"}, alerts="not a list"),
           CallRecord({"call_id": 7}), CallRecord(["call_id"])]
    for rec in bad:
        with pytest.raises(BadRequest):
            store.save_call(rec)
    with pytest.raises(BadRequest, match="unknown field"):
        CallRecord.from_json({"call": {"call_id": "c1"}, "speakers": [], "extra": 1})
    store.save_call(CallRecord({"call_id": "c2", "source": "'); DROP TABLE calls; --"}))  # a value is only a value
    con = connect(db)
    assert "pwn" not in {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert con.execute("SELECT call_id, source FROM calls ORDER BY 1").fetchall() == [
        ("c1", "x.wav"), ("c2", "'); DROP TABLE calls; --")]
    assert con.execute("SELECT count(*) FROM utterances WHERE call_id = 'c1'").fetchone()[0] == 3
    for table, schema in SCHEMAS.items():  # every column save_call writes is a real one
        assert set(schema.names) <= table_columns(con, table), table


class CommitRace:
    """The store's connection, except that just before COMMIT another connection commits a call
    with the same id: DuckDB's COMMIT then really fails, and DuckDB has already rolled back."""

    def __init__(self, con, call_id):
        self.con, self.call_id, self.other = con, call_id, con.cursor()

    def execute(self, sql, *params):
        if sql == "COMMIT":
            self.other.execute("INSERT INTO calls (call_id, source) VALUES (?, 'other')", [self.call_id])
        return self.con.execute(sql, *params)

    def __getattr__(self, name):
        return getattr(self.con, name)


def test_a_failed_commit_is_a_storage_error_and_the_store_keeps_working(tmp_path):
    """Issue 12: after a failed COMMIT, ROLLBACK raised "no transaction is active", which is no
    StorageError, and the live engine's saving thread died."""
    con = connect(tmp_path / "a.duckdb")
    save_call(con, record("c1"))
    with pytest.raises(StorageError, match="could not store call c2") as caught:
        save_call(CommitRace(con, "c2"), record("c2"))
    assert "no transaction is active" not in str(caught.value)
    assert con.execute("SELECT call_id, source FROM calls ORDER BY 1").fetchall() == [("c1", "x.wav"), ("c2", "other")]
    assert con.execute("SELECT count(*) FROM utterances WHERE call_id = 'c2'").fetchone()[0] == 0
    save_call(con, record("c3"))  # the connection is usable: no transaction left open
    assert con.execute("SELECT count(*) FROM utterances WHERE call_id = 'c3'").fetchone()[0] == 3


def test_a_failed_migration_is_a_storage_error_and_leaves_the_version(tmp_path, monkeypatch):
    import emotivoice.storage.db

    con = connect(tmp_path / "a.duckdb")
    version = migrate(con)
    broken = [*migrations(), (version + 1, "ALTER TABLE nope ADD x INT")]
    monkeypatch.setattr(emotivoice.storage.db, "migrations", lambda: broken)
    with pytest.raises(StorageError, match=f"could not apply migration {version + 1}"):
        migrate(con)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == version


def test_named_queries_refuse_unknown_names_and_parameters(tmp_path):
    store = FileStore(tmp_path / "a.duckdb")
    store.save_call(record("c1"))
    cases = [(lambda: store.read("drop_everything"), "no read query named 'drop_everything'"),
             (lambda: store.read("list_calls", bogus=1), "list_calls takes no parameter 'bogus'"),
             (lambda: store.read("call_speakers"), "call_speakers needs call_id"),
             (lambda: store.read("list_calls", limit="ten"), "wrong type"),
             (lambda: store.write("acknowledge_alert", alert_id="x", user="u"), "wrong type"),
             (lambda: store.write("acknowledge_alert", alert_id=99, user="u"), "no alert 99"),
             (lambda: store.write("add_feedback", call_id="c1", kind="rant", author="a"), "feedback kind"),
             (lambda: store.write("no_such_action"), "no write action named")]
    for call, message in cases:
        with pytest.raises(BadRequest, match=message):
            call()
    assert list(store.read("list_calls").call_id) == ["c1"]


def test_database_and_wal_are_owner_only_whatever_the_umask(tmp_path):
    """DuckDB makes its files as the umask says, and the WAL anew after every checkpoint."""
    import os

    old = os.umask(0o022)
    try:
        db = tmp_path / "new" / "a.duckdb"
        con = connect(db)
        con.execute("SET checkpoint_threshold = '1KB'")  # every save checkpoints and starts a new WAL
        for call_id in ("c1", "c2", "c1"):
            save_call(con, record(call_id))
            assert {p.name: p.stat().st_mode & 0o777 for p in db.parent.iterdir()} == {
                "a.duckdb": 0o600, "a.duckdb.wal": 0o600}
        con.close()
        assert db.parent.stat().st_mode & 0o777 == 0o700
        os.chmod(db, 0o644)  # a file from before this fix is tightened when opened for writing
        FileStore(db).write("add_feedback", call_id="c1", kind="note", author="a")
        assert db.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_source_ids_are_stored_as_data_beside_our_own_call_id(tmp_path):
    """A hostile Call-ID is kept only as JSON data: our call_id names the row, the wire's id is searchable."""
    import json

    from emotivoice.analysis.results import CallResult
    from emotivoice.analysis.sink import to_record

    hostile = "../../../tmp/x/victim"
    result = CallResult(call_id="sip-20261202T000000-0123456789ab", source="", duration_s=1.0, channels=1,
                        diarization="one leg", asr_model="-", emotion_model="-", emotion_provisional=False)
    record = to_record(result, mode="live", metadata={"external": {"sip_call_id": hostile}, "agent_id": "a1"})
    con = connect(tmp_path / "a.duckdb")
    save_call(con, record)
    call_id, external = con.execute("SELECT call_id, external_ids FROM calls").fetchone()
    assert call_id == "sip-20261202T000000-0123456789ab"
    assert json.loads(external) == {"external": {"sip_call_id": hostile}}
