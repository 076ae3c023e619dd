"""QA scorecards at contact-center scale: filling one in per call, and the pages' scorecard queries
over 100,000 scored calls (800,000 answers, 40 agents in 4 teams, 26 weeks, a dispute on 2 %).

Times, through the store service the dashboard uses (storage/server.py, HTTP + Arrow): the Agents
page's scores per agent and per team over 12 weeks, and the call review's scorecard and disputes
of a random call, each p50/p95 against the 200 ms target; and score_call() on a 720-utterance call
(the default card over the default rules' matches), which annotate() adds to every call.

    python benchmarks/scorecards.py [--calls 100000] [--runs 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import time_reads, write_result  # noqa: E402

QUESTIONS = 8


def fill(db: Path, calls: int) -> dict:
    from emotivoice.storage.db import connect

    con = connect(db)
    t0 = time.perf_counter()
    con.execute(f"""INSERT INTO calls (call_id, started_at, duration_s, agent_id, team, scorecard_name, scorecard_score)
        SELECT 'call-' || lpad(i::VARCHAR, 7, '0'),
               TIMESTAMP '2026-05-25' + to_seconds((i * 157)::BIGINT % (182 * 86400)),
               300 + i % 600, 'agent-' || (i % 40), 'team-' || (i % 40 % 4), 'Default QA scorecard',
               (hash(i) % 1001) / 10.0
        FROM range({calls}) t(i)""")
    con.execute(f"""INSERT INTO scorecard_answers (call_id, question_id, position, question, weight, answer_kind,
                                                   auto_score, auto_note, evidence, source, score)
        SELECT 'call-' || lpad((i // {QUESTIONS})::VARCHAR, 7, '0'), 'q' || (i % {QUESTIONS}), (i % {QUESTIONS})::INT,
               'Question ' || (i % {QUESTIONS}), 10, 'category', (hash(i) % 2)::DOUBLE, 'category found', '[]', 'auto',
               (hash(i) % 2)::DOUBLE
        FROM range({calls * QUESTIONS}) t(i)""")
    con.execute(f"""INSERT INTO scorecard_disputes (call_id, question_id, reason, raised_by, raised_at)
        SELECT 'call-' || lpad(i::VARCHAR, 7, '0'), 'q1', 'I did greet them', 'agent', TIMESTAMP '2026-06-01'
        FROM range({calls}) t(i) WHERE hash(i * 3) % 50 = 0""")
    con.execute("CHECKPOINT")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("calls", "scorecard_answers", "scorecard_disputes")}
    con.close()
    return {"fill_s": round(time.perf_counter() - t0, 1), "rows": counts}


def time_queries(store, calls: int, runs: int) -> dict:
    rng = random.Random(7)

    def window(days: int) -> dict:
        start = np.datetime64("2026-05-25") + rng.randrange(0, 182 - days)
        return {"date_from": str(start), "date_to": str(start + days)}

    workload = {
        "agents: scorecard_weekly per agent (12 weeks)": lambda: ("scorecard_weekly", {**window(84)}),
        "agents: scorecard_weekly per team (12 weeks)": lambda: ("scorecard_weekly", {**window(84), "by": "team"}),
        "review: call_scorecard": lambda: ("call_scorecard", {"call_id": f"call-{rng.randrange(calls):07d}"}),
        "review: call_scorecard_disputes": lambda: ("call_scorecard_disputes",
                                                    {"call_id": f"call-{rng.randrange(calls):07d}"}),
    }
    return time_reads(store, workload.items(), runs)


def scoring_cost() -> dict:
    """score_call() on a long call (the analytics benchmark's 720-utterance call), categories given."""
    from emotivoice.analysis.insight.rulematch import evaluate
    from emotivoice.analysis.insight.rules import load_rules
    from emotivoice.analysis.insight.scorecard import load_scorecard, score_call
    from benchmarks.analytics import call_of

    call = call_of(80)  # 720 utterances, 107 minutes
    rules = load_rules()
    card = load_scorecard(None, rules)
    categories = evaluate(call, rules)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        score_call(call, card, categories)
        times.append((time.perf_counter() - t0) * 1000)
    return {"utterances": len(call.utterances), "questions": len(card.questions),
            "median_ms": round(statistics.median(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    from emotivoice.storage.server import StoreServer
    from emotivoice.storage.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "scorecards.duckdb"
        filled = fill(db, args.calls)
        with StoreServer(db):
            served = time_queries(open_store(db), args.calls, args.runs)
    worst = max(v["p95_ms"] for v in served.values())
    write_result("scorecards", {"scale": {"calls": args.calls, "answers": args.calls * QUESTIONS}, **filled,
                                "target_p95_ms": 200, "worst_p95_ms_served": worst, "meets_target": worst < 200,
                                "served_by_store_service": served, "score_call": scoring_cost()})


if __name__ == "__main__":
    main()
