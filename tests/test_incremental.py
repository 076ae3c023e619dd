"""Incremental live saves (storage/incremental.py) on real DuckDB files, direct and over the store's HTTP.

What a sequence of deltas leaves stored must equal what save_call of the last record stores, with
feedback and alert acknowledgements kept, and nothing a caller sends may become SQL.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace

import pytest

from emotivoice.analysis.insight.risk import Alert
from emotivoice.analysis.results import CallResult, Speaker, Utterance
from emotivoice.analysis.sink import to_record
from emotivoice.storage.db import BadRequest, connect, save_call
from emotivoice.storage.incremental import CallDelta, diff_record, merge, save_deltas
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import FileStore

TABLES = ("calls", "speakers", "utterances", "emotion_scores", "sarcasm", "risk_scores", "alerts")
ORDER = {"calls": "call_id", "speakers": "speaker", "alerts": "t_s"}


def record(n_final: int, interim: bool = False, alerts: int = 0, call_id: str = "c1"):
    speakers = [Speaker("agent", "agent", 0), Speaker("customer", "customer", 1)]
    utts = [Utterance(call_id, i % 2, speakers[i % 2].label, i * 2.0, i * 2.0 + 1.5, -20.0, text=f"word {i}",
                      emotions={"anger": 0.1 * (i % 5), "neutral": 1 - 0.1 * (i % 5)}) for i in range(n_final)]
    if interim:
        utts.append(Utterance(call_id, 0, "agent", n_final * 2.0, n_final * 2.0 + 0.8, -25.0,
                              emotions={"happiness": 1.0}, partial=True))
    result = CallResult(call_id, "siprec:test", n_final * 2.0, 2, "legs", "whisper", "head", True, speakers, utts,
                        alerts=[Alert("customer", 1.0 + i * 10, i, 0.8, {"anger": 1.0}) for i in range(alerts)])
    return to_record(result, mode="live", status="live")


def dump(con, call_id="c1"):
    out = {}
    for table in TABLES:
        key = ORDER.get(table, "utterance_idx")
        drop = {"analyzed_at", "alert_id", "created_at"}
        frame = con.execute(f"SELECT * FROM {table} WHERE call_id = ? ORDER BY {key}", [call_id]).df()
        out[table] = frame.drop(columns=[c for c in drop if c in frame.columns]).to_dict("records")
    return json.loads(json.dumps(out, default=str))


def test_deltas_store_exactly_what_a_whole_call_rewrite_stores(tmp_path):
    steps = [record(0, interim=True), record(1), record(2, interim=True), record(3, alerts=1),
             record(5, interim=True, alerts=2), record(5, alerts=2)]
    con = connect(tmp_path / "delta.duckdb")
    previous, sizes = None, []
    for rec in steps:
        delta = diff_record(previous, rec)
        sizes.append(len(delta.utterances))
        save_deltas(con, [delta])
        previous = rec
    whole = connect(tmp_path / "whole.duckdb")
    save_call(whole, steps[-1])
    assert dump(con) == dump(whole)
    # only what changed travelled: the interim, then the new final utterance (which replaced it)...
    assert sizes[:4] == [1, 1, 2, 1] and sizes[-1] == 0  # the last step only dropped the interim
    assert con.execute("SELECT count(*) FROM utterances WHERE partial").fetchone()[0] == 0


def test_a_refused_delta_merged_with_the_next_stores_both(tmp_path):
    con = connect(tmp_path / "m.duckdb")
    a, b, c = record(2), record(4, interim=True, alerts=1), record(6, alerts=1)
    save_deltas(con, [diff_record(None, a)])
    waiting = merge(diff_record(a, b), diff_record(b, c))  # b's save never went through
    save_deltas(con, [waiting])
    whole = connect(tmp_path / "w.duckdb")
    save_call(whole, c)
    assert dump(con) == dump(whole)


def test_many_calls_in_one_transaction_and_acknowledgements_survive(tmp_path):
    con = connect(tmp_path / "b.duckdb")
    first = [record(2, alerts=1, call_id=f"k{i}") for i in range(3)]
    save_deltas(con, [diff_record(None, r) for r in first])
    con.execute("UPDATE alerts SET acknowledged_by = 'sup' WHERE call_id = 'k1'")
    con.execute("INSERT INTO feedback (call_id, utterance_idx, kind, author, note) "
                "VALUES ('k1', 0, 'note', 'coach', 'good')")
    second = [record(4, alerts=2, call_id=f"k{i}") for i in range(3)]
    save_deltas(con, [diff_record(p, r) for p, r in zip(first, second)])
    assert con.execute("SELECT count(*) FROM utterances").fetchone()[0] == 12
    acked = con.execute("SELECT t_s, acknowledged_by FROM alerts WHERE call_id = 'k1' ORDER BY t_s").fetchall()
    assert acked == [(1.0, "sup"), (11.0, None)]
    assert con.execute("SELECT note FROM feedback WHERE call_id = 'k1'").fetchone()[0] == "good"


def test_bad_deltas_are_refused_before_anything_is_written(tmp_path):
    con = connect(tmp_path / "x.duckdb")
    good = diff_record(None, record(2))
    bad_column = replace(good, utterances=[{**good.utterances[0], "text; DROP TABLE calls": "x"}])
    foreign = replace(good, emotion_scores=[{**good.emotion_scores[0], "call_id": "other"}])
    out_of_range = replace(good, utterance_count=1)
    orphan_child = replace(good, utterances=good.utterances[:1])
    for bad in (bad_column, foreign, out_of_range, orphan_child):
        with pytest.raises(BadRequest):
            save_deltas(con, [diff_record(None, record(1, call_id="fine")), bad])
    assert con.execute("SELECT count(*) FROM calls").fetchone()[0] == 0
    with pytest.raises(BadRequest):
        CallDelta.from_json({"call": {"call_id": "c1"}, "utterance_count": 0, "sql": "x"})


def test_deltas_over_the_store_service_and_direct_file_access(tmp_path):
    db_path = tmp_path / "served.duckdb"
    a, b = record(1), record(3, alerts=1)
    with StoreServer(db_path) as server:
        from emotivoice.storage.store import ServedStore
        client = ServedStore(server.url, server.token)
        client.save_deltas([diff_record(None, a)])
        client.save_deltas([diff_record(a, b)])
        body = json.dumps({"deltas": [{"call": {"call_id": "c1", '"; DROP TABLE calls; --': 1},
                                       "utterance_count": 0}]}).encode()
        request = urllib.request.Request(server.url + "/deltas", data=body, headers={
            "Content-Type": "application/json", "X-Store-Token": server.token})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        assert len(server.read("call_utterances", call_id="c1")) == 3
    FileStore(db_path).save_deltas([diff_record(b, record(4))])
    assert len(FileStore(db_path).read("call_utterances", call_id="c1")) == 4
