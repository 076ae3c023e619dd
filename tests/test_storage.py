"""DuckDB store: migrations, atomic per-call writes, and feedback that survives re-analysis."""

import pytest

from storage.db import CallRecord, StorageError, connect, migrate, migrations, save_call
from storage.store import FileStore


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
    con.execute("INSERT INTO feedback (call_id, utterance_idx, kind, value, author) VALUES ('c1', 1, 'emotion', 'sadness', 'coach')")
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
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('x', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        with pytest.raises(StorageError, match="lock"):
            connect(db, read_only=True, wait_s=0.3)
    finally:
        holder.kill()


def test_store_service_refuses_bad_requests_and_keeps_serving(tmp_path):
    import json
    import urllib.error
    import urllib.request

    from storage.server import StoreServer
    from storage.store import ServedStore, open_store

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
        with pytest.raises(StorageError, match="could not store call"):
            store.save_call(CallRecord({"call_id": "bad", "no_such_column": 1}))
        store.save_call(record("c1"))
        assert list(store.read("list_calls").call_id) == ["c1"]  # still serving, the good call stored


def test_acknowledged_alert_survives_the_call_being_saved_again(tmp_path):
    """A live call is re-saved as it grows and then finalised: a supervisor's acknowledgement stays."""
    from storage.queries import writer

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
