"""Dashboard queries at contact-center scale: 100,000 calls and 10 million utterances.

Fills a DuckDB file through the real migrations (calls over 26 weeks, 40 agents in 4 teams,
30,000 customers, 100 utterances per call with emotion scores, sarcasm and risk rows), then
times every page's queries through the path the dashboard uses: the store service that owns
the file (storage/server.py, over HTTP with Arrow) and, for comparison, direct file access.
Each query runs with varied parameters; p50 and p95 are reported against the 200 ms target.

Search (issue 16) runs over the same 10 million utterances: Zipf-distributed speech-like text,
indexed by `search reindex`, plus calls stored afterwards through save_call.

    python benchmarks/dashboard_queries.py [--calls 100000] [--per-call 100] [--runs 30] [--tail-calls 300]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import time_reads, write_result  # noqa: E402

ONLY: tuple[str, ...] = ()  # --only: the page prefixes timed
EMOTIONS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


# What the churn reports read besides the per-call summaries (issue 16): categories from the rules on
# every call (a greeting on most, cancellation on some), and a fifth of the calls knowing their
# customer only by the caller's number (AudioHook's ANI) or a custom parameter, as live calls do.
REPORT_FILL = """
    UPDATE calls SET
        categories = list_filter(['greeting', CASE WHEN hash(rowid * 29) % 8 = 0 THEN 'cancellation intent' END,
                                  CASE WHEN hash(rowid * 31) % 6 = 0 THEN 'escalation request' END,
                                  CASE WHEN hash(rowid * 37) % 10 = 0 THEN 'long hold or silence' END],
                                 lambda c: c IS NOT NULL),
        customer_id = CASE WHEN rowid % 10 IN (1, 2) THEN NULL ELSE customer_id END,
        external_ids = CASE WHEN rowid % 10 = 1 THEN '{"external": {"ani": "+44' || (hash(rowid) % 30000) || '"}}'
                            WHEN rowid % 10 = 2 THEN '{"custom": {"crm_customer": "crm-' || (hash(rowid) % 30000)
                                                     || '"}}' END"""
# Speech-like text for search: words drawn by Zipf's law (rank r with probability ~ 1/r) from a
# vocabulary whose head is the stopwords, then contact-center words at plausible ranks, then
# synthetic words; a few stock sentences are mixed in so that phrases have hits.
VOCAB_SIZE = 20_000
PLACED = {50: "okay", 51: "yes", 52: "account", 60: "know", 70: "help", 80: "cancel", 95: "bill", 120: "refund",
          160: "payment", 200: "manager", 300: "internet", 400: "supervisor", 900: "unacceptable", 3000: "lawyer"}
STOCK = ("i want to cancel my account", "can i speak to your manager", "this is completely unacceptable",
         "i was charged twice on my bill")


def vocabulary() -> list[str]:
    from emotivoice.storage.search_index import STOPWORDS

    words = list(STOPWORDS)
    for rank in range(len(words), VOCAB_SIZE):
        words.append(PLACED.get(rank, f"w{rank}"))
    return words


VOCABULARY = "SELECT [" + ", ".join(f"'{w.replace(chr(39), chr(39) * 2)}'" for w in vocabulary()) + "] AS vocab"


def synthetic_text() -> str:
    """SQL for utterance i's text: 6-20 Zipf-drawn words, 1 in 50 led by a stock sentence."""
    words = (f"array_to_string(list_transform(range(6 + (hash(i) % 15)::INT), lambda k: "
             f"v.vocab[floor(pow({VOCAB_SIZE}, (hash(i * 64 + k) % 1000003) / 1000003.0))::INT]), ' ')")
    stock = "[" + ", ".join(f"'{s}'" for s in STOCK) + "]"
    lead = f"{stock}[1 + (hash(i * 31) % 4)::INT] || ' ' || "
    return f"CASE WHEN hash(i * 29) % 50 = 0 THEN {lead}{words} ELSE {words} END"


def fill(db: Path, calls: int, per_call: int) -> dict:
    from emotivoice.storage.db import connect

    con = connect(db)
    t0 = time.perf_counter()
    steps = [
        ("calls", f"""INSERT INTO calls (call_id, source, mode, status, started_at, analyzed_at, duration_s, channels,
                diarization, asr_model, emotion_model, emotion_provisional, agent_id, customer_id, team, metrics,
                peak_risk, final_risk, alert_count, customer_start_negative, customer_end_negative,
                customer_final_emotion, sarcasm_count, churn_phrases, agent_empathy, categories)
            SELECT 'call-' || lpad(i::VARCHAR, 7, '0'), '/recordings/' || i || '.wav', 'batch', 'complete',
                   TIMESTAMP '2026-05-25' + to_seconds((i * 157)::BIGINT % (182 * 86400)),
                   current_timestamp::TIMESTAMP - to_seconds((({calls} - i) * 60)::BIGINT), 300 + i % 600, 2,
                   'channel-per-speaker (stereo)', 'faster-whisper:base', 'whisper-base-emotion7', false,
                   'agent-' || (i % 40), 'cust-' || (hash(i) % 30000), 'team-' || (i % 40 % 4),
                   '{{"overlap_s": ' || (i % 13) || '}}', (hash(i * 7) % 1000) / 1000.0, (hash(i * 11) % 1000) / 1000.0,
                   (hash(i * 3) % 10 = 0)::INT, (hash(i * 5) % 100) / 100.0, (hash(i * 13) % 100) / 100.0,
                   ['anger','neutral','happiness','sadness'][(1 + hash(i) % 4)::BIGINT],
                   (hash(i * 17) % 20 = 0)::INT, CASE WHEN hash(i * 19) % 25 = 0 THEN ['cancel'] ELSE [] END,
                   (hash(i * 23) % 100) / 100.0,
                   CASE WHEN hash(i * 37) % 5 = 0 THEN ['cancellation intent'] ELSE ['greeting'] END
            FROM range({calls}) t(i)"""),
        ("speakers", f"""INSERT INTO speakers (call_id, speaker, role, leg, language, talk_time_s, metrics,
                role_confidence, role_source)
            SELECT 'call-' || lpad(i::VARCHAR, 7, '0'), r, r, (r = 'customer')::INT, 'en', 100 + i % 50,
                   '{{"talk_share": 0.5, "interruptions_made": ' || (i % 4) || ', "words_per_minute": 150}}',
                   1.0, 'channel'
            FROM range({calls}) t(i), (VALUES ('agent'), ('customer')) s(r)"""),
        ("utterances", f"""INSERT INTO utterances (call_id, utterance_idx, speaker, leg, start_s, end_s, text, language,
                loudness_dbfs, base_emotion, base_confidence, granular, complex_emotion, sentiment, interrupts)
            SELECT 'call-' || lpad((i // {per_call})::VARCHAR, 7, '0'), (i % {per_call})::INT,
                   CASE WHEN i % 2 = 0 THEN 'agent' ELSE 'customer' END, (i % 2)::INT,
                   (i % {per_call}) * 3.0, (i % {per_call}) * 3.0 + 2.5, {synthetic_text()}, 'en',
                   -25.0, ['anger','neutral','happiness','sadness'][(1 + i % 4)::BIGINT], 0.6,
                   [{{'emotion': 'neutral', 'label': 'calm', 'band': 'medium', 'intensity': 0.6}}], NULL, 0.1, false
            FROM range({calls * per_call}) t(i), ({VOCABULARY}) v"""),
        ("emotion_scores", f"""INSERT INTO emotion_scores
            SELECT 'call-' || lpad((i // {per_call})::VARCHAR, 7, '0'), (i % {per_call})::INT, e, 1.0 / 7
            FROM range({calls * per_call}) t(i), (VALUES {', '.join(f"('{e}')" for e in EMOTIONS)}) s(e)"""),
        ("sarcasm", f"""INSERT INTO sarcasm SELECT 'call-' || lpad((i // {per_call})::VARCHAR, 7, '0'),
                   (i % {per_call})::INT, false, 0.0, 'words not positive', false
                   FROM range({calls * per_call}) t(i)"""),
        ("risk_scores", f"""INSERT INTO risk_scores SELECT 'call-' || lpad((i // {per_call})::VARCHAR, 7, '0'),
                   (i % {per_call})::INT, CASE WHEN i % 2 = 0 THEN 'agent' ELSE 'customer' END,
                   (i % {per_call}) * 3.0 + 2.5,
                   (hash(i) % 1000) / 1000.0, '{{"negative emotion": 1.2}}' FROM range({calls * per_call}) t(i)"""),
        ("alerts", f"""INSERT INTO alerts (call_id, speaker, t_s, kind, score, factors, utterance_idx)
            SELECT 'call-' || lpad(i::VARCHAR, 7, '0'), 'customer', 120.0, 'escalation', 0.7, '{{}}', 40
            FROM range({calls}) t(i) WHERE hash(i * 3) % 10 = 0"""),
    ]
    for table, sql in tqdm(steps, desc="filling", unit="table"):
        con.execute(sql)
    con.execute(REPORT_FILL)
    con.execute("CHECKPOINT")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t, _ in steps}
    con.close()
    return {"fill_s": round(time.perf_counter() - t0, 1), "rows": counts, "file_mb": round(db.stat().st_size / 2**20)}


def build_search_index(db: Path, tail_calls: int, per_call: int) -> dict:
    """The index as `emotivoice search reindex` builds it (sorted by term), then `tail_calls` more
    calls stored one by one through save_call, as the services store them: their postings land
    unsorted at the end, as a store's do between reindexes. Both are timed."""
    from emotivoice.storage.db import CallRecord, connect, save_call
    from emotivoice.storage.search_index import reindex

    con = connect(db)
    built = reindex(con)
    rng = random.Random(11)
    words = vocabulary()
    saves = []
    for n in range(tail_calls):
        call_id = f"tail-{n:05d}"
        utterances = [{"call_id": call_id, "utterance_idx": k, "speaker": ("agent", "customer")[k % 2], "leg": k % 2,
                       "start_s": k * 3.0, "end_s": k * 3.0 + 2.5, "base_emotion": EMOTIONS[k % 7],
                       "text": " ".join(words[int(VOCAB_SIZE ** rng.random())] for _ in range(6 + rng.randrange(15)))}
                      for k in range(per_call)]
        record = CallRecord({"call_id": call_id, "started_at": "2026-11-20 10:00:00", "agent_id": f"agent-{n % 40}",
                             "team": f"team-{n % 4}", "status": "complete", "peak_risk": 0.5},
                            [{"call_id": call_id, "speaker": r, "role": r, "leg": i}
                             for i, r in enumerate(("agent", "customer"))], utterances)
        t0 = time.perf_counter()
        save_call(con, record)
        saves.append((time.perf_counter() - t0) * 1000)
    con.execute("CHECKPOINT")
    postings = con.execute("SELECT count(*) FROM search_postings").fetchone()[0]
    con.close()
    return {"reindex": built, "postings": postings, "tail_calls_saved": tail_calls,
            "save_call_with_index_ms": {"p50": round(float(np.percentile(saves, 50)), 1),
                                        "p95": round(float(np.percentile(saves, 95)), 1)} if saves else None,
            "file_mb_with_index": round(db.stat().st_size / 2**20)}


def workload(calls: int, rng: random.Random) -> dict[str, callable]:
    """Each page's queries, as the pages call them, with varied parameters."""
    def call_id() -> str:
        return f"call-{rng.randrange(calls):07d}"

    def window(days: int) -> dict:
        start = np.datetime64("2026-05-25") + rng.randrange(0, 182 - days)
        return {"date_from": str(start), "date_to": str(start + days)}
    return {
        "live floor: live_calls": lambda: ("live_calls", {}),
        "live floor: open_alerts": lambda: ("open_alerts", {}),
        "review: find_calls (90 days, agent, min risk)": lambda: ("find_calls", {
            **window(90), "agent_id": f"agent-{rng.randrange(40)}", "min_risk": 0.5}),
        "review: find_calls (no filter)": lambda: ("find_calls", {}),
        "review: call_utterances": lambda: ("call_utterances", {"call_id": call_id()}),
        "review: call_emotion_scores": lambda: ("call_emotion_scores", {"call_id": call_id()}),
        "review: call_speakers": lambda: ("call_speakers", {"call_id": call_id()}),
        "review: call_alerts": lambda: ("call_alerts", {"call_id": call_id()}),
        "review: agent_vs_team": lambda: ("agent_vs_team", {"call_id": call_id()}),
        "agents: agent_weekly (12 weeks)": lambda: ("agent_weekly", {**window(84), "team": None}),
        "agents: coaching_opportunities (12 weeks)": lambda: ("coaching_opportunities",
                                                              {**window(84), "team": "team-1"}),
        "churn: churn_risk (30 days)": lambda: ("churn_risk", {**window(30), "team": None}),
        "churn: churn_trend (12 weeks)": lambda: ("churn_trend", {**window(84), "team": None}),
        "churn: churn_reasons (12 weeks)": lambda: ("churn_reasons", {**window(84), "team": None}),
        "churn: churn_customers (12 weeks)": lambda: ("churn_customers", {**window(84), "team": None}),
        "churn: churn_customers (12 weeks, one team)": lambda: ("churn_customers", {**window(84), "team": "team-2"}),
        "search: a rare word": lambda: ("search_utterances", {"search": f"w{rng.randrange(1000, VOCAB_SIZE)}"}),
        "search: the commonest word (okay)": lambda: ("search_utterances", {"search": "okay"}),
        "search: two words": lambda: ("search_utterances", {"search": f"refund w{rng.randrange(100, 2000)}"}),
        "search: a phrase": lambda: ("search_utterances", {"search": rng.choice(
            ['"cancel my account"', '"speak to your manager"', '"charged twice"'])}),
        "search: word, customer, agent, 90 days": lambda: ("search_utterances", {
            "search": rng.choice(["cancel", "manager", "bill", "lawyer"]), "role": "customer",
            "agent_id": f"agent-{rng.randrange(40)}", **window(90)}),
        "search: word, category, emotion, min risk": lambda: ("search_utterances", {
            "search": rng.choice(["cancel", "refund", "supervisor"]), "category": "cancellation intent",
            "emotion": "anger", "min_risk": 0.5}),
    }


def time_queries(store, calls: int, runs: int) -> dict:
    rng = random.Random(7)
    chosen = [(name, make) for name, make in workload(calls, rng).items() if not ONLY or name.startswith(ONLY)]
    return time_reads(store, tqdm(chosen, desc="queries", unit="query"), runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--per-call", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--tail-calls", type=int, default=300,
                        help="calls stored through save_call after the index is built (unsorted postings)")
    parser.add_argument("--db", help="keep the filled file here (default: a temporary folder)")
    parser.add_argument("--only", nargs="+", default=(), metavar="PAGE",
                        help="time only these pages' queries (e.g. churn), into dashboard_queries_<pages>.json")
    parser.add_argument("--reuse", action="store_true", help="time the queries on the file --db already holds "
                        "(filled and indexed by an earlier run with the same --calls and --tail-calls)")
    args = parser.parse_args()
    global ONLY
    ONLY = tuple(f"{page}:" for page in args.only)
    from emotivoice.storage.server import StoreServer
    from emotivoice.storage.store import FileStore

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "scale.duckdb"
        if args.reuse:  # the file a previous run filled and indexed (--db): its fill figures are carried over
            import json

            before = json.loads((ROOT / "benchmarks" / "results" / "dashboard_queries.json").read_text())
            filled = {k: before[k] for k in ("fill_s", "rows", "file_mb", "search_index")}
            filled["filled_by_run_of"] = before.get("filled_by_run_of", before["when"])
        else:
            filled = fill(db, args.calls, args.per_call)
            filled["search_index"] = build_search_index(db, args.tail_calls, args.per_call)
        direct = time_queries(FileStore(db), args.calls, args.runs)
        with StoreServer(db):
            from emotivoice.storage.store import open_store
            served = time_queries(open_store(db), args.calls, args.runs)
    worst = max(v["p95_ms"] for v in served.values())
    write_result("_".join(["dashboard_queries", *args.only]), {
        "scale": {"calls": args.calls + args.tail_calls, "utterances": (args.calls + args.tail_calls) * args.per_call},
        **filled,
        "target_p95_ms": 200, "worst_p95_ms_served": worst, "meets_target": worst < 200,
        "served_by_store_service": served, "direct_file_access": direct,
    })


if __name__ == "__main__":
    main()
