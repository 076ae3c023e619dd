"""Full-text search (issue 16) on real DuckDB files, through the real store service and CLI.

The demo call, really analysed (conftest.demo_analysis), must be found by a sentence said in it, at
the time it was said, with and without filters; the role scope is the store's, as the dashboard
meets it (X-Store-User); erasure, re-analysis and live calls keep the index honest; and query
strings that try SQL, LIKE patterns or sheer size are only ever data.
"""

from __future__ import annotations

import json

import pytest

from conftest import DEMO_TRUTH, run_cli
from emotivoice.storage import search
from emotivoice.storage.db import BadRequest, connect, save_call
from emotivoice.storage.store import FileStore
from tests.test_access import as_user, env, served  # noqa: F401  (fixtures: a service with five calls, users)
from tests.test_storage import record


def hits(store, text: str, **filters) -> list[dict]:
    return store.read("search_utterances", search=text, **filters).to_dict("records")


def turn(text: str) -> dict:
    return next(t for t in DEMO_TRUTH["turns"] if t["text"] == text)


# ---- the demo call, analysed for real ------------------------------------------------------------

@pytest.mark.slow
def test_a_sentence_said_in_a_stored_call_is_found_at_its_time(demo_analysis):
    db, _ = demo_analysis
    said = turn("I would like a new alarm clock.")
    found = hits(FileStore(db), '"alarm clock"')
    assert len(found) == 1, found
    hit = found[0]
    assert hit["role"] == "agent" and abs(hit["start_s"] - said["start"]) < 1.0, hit
    assert "«alarm» «clock»" in hit["text"]
    # the same through the shell, with filters that keep it and filters that drop it
    base = ["search", '"alarm clock"', "--db", str(db), "--json"]
    proc = run_cli(*base, "--role", "agent", "--emotion", hit["emotion"])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(h["call_id"], h["utterance_idx"]) for h in lines] == [(hit["call_id"], hit["utterance_idx"])]
    for dropping in (["--role", "customer"], ["--since", "2999-01-01"], ["--category", "no such category"],
                     ["--min-risk", "1.01"]):
        proc = run_cli(*base, *dropping)
        assert proc.returncode == 0 and proc.stdout.strip() == "", (dropping, proc.stdout, proc.stderr)
    customer = turn("The surface is slick.")
    found = hits(FileStore(db), "surface slick", role="customer")
    assert len(found) == 1 and abs(found[0]["start_s"] - customer["start"]) < 1.0, found
    assert hits(FileStore(db), "surface slick", role="agent") == []
    proc = run_cli("search", "surface", "--db", str(db))  # the plain listing: call, m:ss, speaker, snippet
    assert proc.returncode == 0 and "«surface»" in proc.stdout, proc.stdout
    assert any(f"0:{int(customer['start']) + d}" in proc.stdout for d in (0, 1)), proc.stdout


@pytest.mark.slow
def test_reindex_rebuilds_the_same_index(demo_analysis, tmp_path):
    import shutil

    db = tmp_path / "copy.duckdb"
    shutil.copy(demo_analysis[0], db)
    before = hits(FileStore(db), "alarm clock")
    proc = run_cli("search", "reindex", "--db", str(db))
    assert proc.returncode == 0 and "search index rebuilt: 1 calls" in proc.stdout, proc.stdout + proc.stderr
    after = hits(FileStore(db), "alarm clock")
    assert [(h["call_id"], h["utterance_idx"], h["text"]) for h in after] == \
        [(h["call_id"], h["utterance_idx"], h["text"]) for h in before]


# ---- scope, erasure, re-analysis, live calls ------------------------------------------------------

def test_each_role_searches_only_its_calls_and_the_analyst_gets_no_text(served):  # noqa: F811
    every = {c for c in ("c-a1", "c-a2", "c-r1", "c-r2", "c-x")}
    assert {h["call_id"] for h in hits(as_user(served, "boss"), "card")} == every
    assert {h["call_id"] for h in hits(as_user(served, "sue"), "card")} == {"c-a1", "c-a2", "c-x"}
    assert {h["call_id"] for h in hits(as_user(served, "cody"), "card")} == {"c-r1", "c-r2"}
    al = as_user(served, "al")
    assert {h["call_id"] for h in hits(al, "card")} == {"c-a1"}
    assert hits(al, "r1") == [] and hits(al, "card", agent_id="r1") == []  # another agent's call: nothing
    analyst = hits(as_user(served, "ann"), "card")
    assert {h["call_id"] for h in analyst} == every
    assert {h["text"] for h in analyst} == {"[redacted]"}
    assert hits(as_user(served, "boss"), "card", team="red", limit=1)[0]["team"] == "red"
    with pytest.raises(BadRequest, match="may not do search_reindex"):
        as_user(served, "boss").write("search_reindex")


def test_erasure_and_reanalysis_take_the_words_out_of_the_index(served):  # noqa: F811
    boss = as_user(served, "boss")
    keys = served.con.execute("SELECT call_key FROM search_calls WHERE call_id = 'c-a1'").fetchall()
    assert hits(boss, "a1") and keys
    boss.write("erase_calls", call_id="c-a1")
    assert hits(boss, "a1") == []
    for table in ("search_postings", "search_docs", "search_calls"):
        left = served.con.execute(f"SELECT count(*) FROM {table} WHERE call_key = ?", [keys[0][0]]).fetchone()[0]
        assert left == 0, table
    again = record("c-a2", n=2, text="please refund me")  # re-analysed: the old words leave with the old text
    again.call.update(agent_id="a2", team="blue")
    served.save_call(again)
    assert "c-a2" not in {h["call_id"] for h in hits(boss, "card")}
    assert [h["utterance_idx"] for h in hits(boss, "refund", agent_id="a2")] == [0, 1]


def test_a_live_call_is_searchable_once_its_final_pass_or_recovery_stores_it(tmp_path):
    db = tmp_path / "live.duckdb"
    con = connect(db)
    live = record("c-live", n=2, text="my internet is down")
    live.call["status"] = "live"
    save_call(con, live)
    assert search.search_utterances(con, "internet").empty
    con.execute("UPDATE calls SET status = 'interrupted' WHERE call_id = 'c-live'")
    from emotivoice.storage.queries import run_write

    run_write(con, "finish_interrupted", {"call_id": "c-live", "warnings": []})
    assert list(search.search_utterances(con, "internet").utterance_idx) == [0, 1]
    live.call["status"] = "complete"
    save_call(con, live)  # the batch pass again: indexed once, not twice
    assert len(search.search_utterances(con, "internet")) == 2
    con.close()


def test_phrases_rank_and_mark(tmp_path):
    con = connect(tmp_path / "p.duckdb")
    rec = record("c-p", n=1, text="x")
    rec.utterances = [
        {**rec.utterances[0], "utterance_idx": 0, "start_s": 1.0, "text": "I want to cancel my account today"},
        {**rec.utterances[0], "utterance_idx": 1, "start_s": 5.0, "text": "my account, I do not want to cancel it"},
        {**rec.utterances[0], "utterance_idx": 2, "start_s": 9.0, "text": "Card [CREDIT_CARD] on the account"}]
    rec.emotion_scores = []
    save_call(con, rec)
    assert list(search.search_utterances(con, "cancel account").utterance_idx) == [0, 1]
    assert list(search.search_utterances(con, '"cancel my account"').utterance_idx) == [0]
    assert list(search.search_utterances(con, '"cancel the account"').utterance_idx) == []  # stopword differs
    assert search.search_utterances(con, "credit").empty  # a redaction placeholder is not a word
    assert search.search_utterances(con, '"cancel my account"').text[0] == "I want to «cancel» my «account» today"
    con.close()


# ---- hostile queries ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["'; DROP TABLE calls; --", "%", "_%_", "\\", '"', '""', "card' OR '1'='1",
                                  "card%", "the of and", "ÄÖÜ ☃ 卡", "\x00card", "[CREDIT_CARD]"])
def test_hostile_query_strings_are_only_data(served, text):  # noqa: F811
    boss = as_user(served, "boss")
    found = hits(boss, text)
    assert all(set(h) >= {"call_id", "start_s", "text"} for h in found)
    assert served.con.execute("SELECT count(*) FROM calls").fetchone()[0] == 5


def test_oversized_or_mistyped_queries_are_refused(served):  # noqa: F811
    boss = as_user(served, "boss")
    for params, message in (({"search": "card " * 200}, "at most 500 characters"),
                            ({"search": " ".join(f"w{i}" for i in range(9))}, "at most 8 different words"),
                            ({"search": ["card"]}, "must be a string"),
                            ({"search": "card", "limit": "all"}, "limit must be an integer"),
                            ({"search": "card", "date_from": "yesterday'--"}, "wrong type"),
                            ({"search": "card", "scope": {"all": True}}, "takes no parameter")):
        with pytest.raises(BadRequest, match=message):
            boss.read("search_utterances", **params)
    assert len(hits(boss, "card", limit=10**9)) == 10  # a huge limit is capped, not an error
    assert served.con.execute("SELECT count(*) FROM calls").fetchone()[0] == 5
