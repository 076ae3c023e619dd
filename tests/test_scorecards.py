"""QA scorecards (issue 16): filled in automatically from the categories and metrics of a call, then
changed by a coach with a note, disputed by the agent and resolved by a coach, all through a real
store service on a real DuckDB file, with every other role refused and every step audited; the
scorecard in `analyze --json` of the assembled demo call; the review page in headless Chromium.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from emotivoice.analysis.conversation import Span, conversation_metrics
from emotivoice.analysis.insight.analytics import annotate
from emotivoice.analysis.insight.rules import load_rules
from emotivoice.analysis.insight.scorecard import ScorecardError, load_scorecard, parse_scorecard, score_call
from emotivoice.analysis.sink import to_record
from emotivoice.config import AnalyticsConfig, load_settings
from emotivoice.storage.access import AccessDenied, Account, Directory
from emotivoice.storage.db import BadRequest
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import ServedStore
from tests.test_analytics import angry_call_that_calms_down, rough_call

ROOT = Path(__file__).resolve().parent.parent
HASH = "pbkdf2_sha256$1$00$00"  # never checked here: the store resolves names, the dashboard checks passwords
USERS = {"boss": Account("boss", HASH, "admin", ()), "sue": Account("sue", HASH, "supervisor", ("blue",)),
         "cody": Account("cody", HASH, "coach", ("blue",)), "rita": Account("rita", HASH, "coach", ("red",)),
         "ann": Account("ann", HASH, "analyst", ()), "al": Account("al", HASH, "agent", (), "a1"),
         "bo": Account("bo", HASH, "agent", (), "a2")}


def measured(call):
    """A constructed call with its conversation metrics, as the pipeline computes them."""
    per, call.metrics = conversation_metrics([Span(u.speaker, u.start, u.end, len(u.words)) for u in call.utterances],
                                             call.duration_s)
    for s in call.speakers:
        s.metrics = per.get(s.label, {})
    return annotate(call)


def answers(card: dict) -> dict[str, float | None]:
    return {a["question_id"]: a["auto_score"] for a in card["answers"]}


def test_the_default_card_is_filled_in_from_categories_and_metrics():
    good = measured(angry_call_that_calms_down())
    assert answers(good.scorecard) == {"greeting": 1.0, "identity": 1.0, "empathy": 1.0, "no_talk_over": 1.0,
                                       "listening": 1.0, "no_long_hold": 1.0, "professional": 1.0, "resolved": None}
    assert good.scorecard["score"] == 100.0 and good.scorecard["pending"] == ["resolved"]
    greeting = good.scorecard["answers"][0]
    assert greeting["auto_note"] == "category 'greeting' found" and greeting["evidence"][0]["start_s"] == 0.5
    listening = next(a for a in good.scorecard["answers"] if a["question_id"] == "listening")
    assert listening["auto_note"].startswith("agent talk_share 0.") and listening["auto_note"].endswith("(below 0.7)")
    assert json.loads(json.dumps(good.to_json()))["scorecard"] == good.scorecard  # in analyze --json

    rough = measured(rough_call())
    assert answers(rough.scorecard) == {"greeting": 0.0, "identity": 0.0, "empathy": 0.0, "no_talk_over": 0.0,
                                        "listening": 1.0, "no_long_hold": 1.0, "professional": 0.0, "resolved": None}
    assert rough.scorecard["score"] == pytest.approx(100 * 20 / 80, abs=0.05)  # 2 of 8 answered weights of 10
    hold = next(a for a in rough.scorecard["answers"] if a["question_id"] == "no_long_hold")
    assert hold["auto_note"] == "longest_silence_s 26.00 (below 60)"


def test_a_metric_question_and_an_unmeasured_one():
    card = parse_scorecard('[[question]]\nid = "hold"\ntext = "Short hold?"\nweight = 1\nmetric = "longest_silence_s"\n'
                           'below = 20\n[[question]]\nid = "wpm"\ntext = "Pace?"\nweight = 3\n'
                           'metric = "words_per_minute"\nbelow = 200\n')
    rough = rough_call()  # no conversation metrics computed: words per minute is not measured
    scored = score_call(annotate(rough), card)
    assert answers(scored) == {"hold": 0.0, "wpm": None} and scored["score"] == 0.0
    assert scored["answers"][1]["auto_note"] == "agent words_per_minute not measured on this call"


@pytest.mark.parametrize("text, message", [
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\n', "question 'a': needs exactly one answer source"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\ncategory = "greeting"\ncoach = true\n',
     "question 'a': needs exactly one answer source: category, metric or coach = true (has category, coach)"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\nmetric = "talk_share"\n', "a metric question needs above"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\nmetric = "talkshare"\nabove = 1\n', "unknown metric 'talkshare'"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = "high"\ncoach = true\n', "question 'a'.weight: expected float"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\ncoach = true\nbelow = 2\n',
     "question 'a'.below: not used by a coach question"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\ncoach = true\n[[question]]\nid = "a"\ntext = "y"\nweight = 1\n'
     'coach = true\n', "question 'a': the id is used twice"),
    ('[[question]]\nid = "a"\ntext = "x"\nweight = 1\ncategory = "greting"\n',
     "question 'a'.category: no category 'greting' in default_rules.toml"),
    ('title = "x"\n', "unknown key 'title'"),
])
def test_a_bad_scorecard_is_refused_naming_the_question_and_the_key(tmp_path, text, message):
    path = tmp_path / "card.toml"
    path.write_text(text)
    with pytest.raises(ScorecardError) as err:
        load_scorecard(path, load_rules())
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_broken_scorecard_file_leaves_the_call_stored_without_one_saying_why(tmp_path):
    path = tmp_path / "card.toml"
    path.write_text('[[question]]\nid = "a"\n')
    call = annotate(rough_call(), AnalyticsConfig(scorecard_file=str(path)))
    assert call.scorecard is None
    assert any(w.startswith("scorecard not filled in: ") and "needs 'text'" in w for w in call.warnings)


# ---- the workflow through the store service ---------------------------------------------------------

@pytest.fixture
def served(tmp_path, monkeypatch):
    """A running store service with two scored calls: c-a1 (agent a1, team blue) and c-a2 (a2, blue),
    and one user of each role; coach rita is of the red team."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dashboard_users.json").write_text(json.dumps({n: a.to_json() for n, a in USERS.items()}))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(data))
    monkeypatch.delenv("EMOTIVOICE_DASHBOARD_USERS", raising=False)
    settings = load_settings()
    with StoreServer(settings.db_path, users=Directory.from_settings(settings)) as server:
        for call_id, agent, make in (("c-a1", "a1", rough_call), ("c-a2", "a2", angry_call_that_calms_down)):
            call = make()
            call.call_id = call_id
            server.save_call(to_record(measured(call), metadata={"agent_id": agent, "team": "blue",
                                                                 "started_at": datetime(2026, 3, 2, 10)}))
        yield server


def as_user(server: StoreServer, name: str | None) -> ServedStore:
    return ServedStore(server.url, server.token, user=name, client="10.0.0.9")


def card_of(store, call_id: str = "c-a1") -> dict[str, tuple]:
    frame = store.read("call_scorecard", call_id=call_id)
    return {r.question_id: tuple(None if pd.isna(v) else v for v in (r.source, r.score, r.note, r.changed_by))
            for r in frame.itertuples()}


def score_of(store, call_id: str = "c-a1") -> float:
    return float(store.read("call_scorecard", call_id=call_id).scorecard_score.iloc[0])


def audit(server: StoreServer) -> list[tuple]:
    log = server.read("audit_log")
    return [(r.user_name, r.role, r.action, r.call_id, r.detail) for r in log.itertuples()
            if r.action.startswith("scorecard")][::-1]


def test_coach_edits_agent_disputes_coach_resolves_and_every_step_is_audited(served):
    cody, al = as_user(served, "cody"), as_user(served, "al")
    assert card_of(al)["greeting"] == ("auto", 0.0, None, None)  # the agent reads their own scorecard
    assert score_of(al) == 25.0 and card_of(al)["resolved"] == ("auto", None, None, None)

    # a coach of the agent's team answers the coach question and overrides an automatic one, each with a note
    with pytest.raises(BadRequest, match="a note is required"):
        cody.write("set_scorecard_answer", call_id="c-a1", question_id="resolved", answer="yes", note="  ")
    done = cody.write("set_scorecard_answer", call_id="c-a1", question_id="resolved", answer="yes",
                      note="account closed as asked", by="someone else")  # `by` is the signed-in user, always
    assert done["call_score"] == 40.0  # (20 + 20) of 100 answered
    cody.write("set_scorecard_answer", call_id="c-a1", question_id="greeting", answer="partly",
               note="'Acme billing, Sam speaking' is a greeting of sorts")
    assert card_of(al)["greeting"] == ("coach", 0.5, "'Acme billing, Sam speaking' is a greeting of sorts", "cody")
    assert score_of(al) == 45.0
    with pytest.raises(BadRequest, match="an answer is one of yes, partly, no, n/a"):
        cody.write("set_scorecard_answer", call_id="c-a1", question_id="resolved", answer="maybe", note="hm")
    with pytest.raises(BadRequest, match="no scorecard question 'nope'"):
        cody.write("set_scorecard_answer", call_id="c-a1", question_id="nope", answer="yes", note="hm")

    # the agent disputes one answer of their own call, with a reason; once open, not twice
    with pytest.raises(BadRequest, match="a reason is required"):
        al.write("dispute_scorecard", call_id="c-a1", question_id="empathy", reason="")
    dispute = al.write("dispute_scorecard", call_id="c-a1", question_id="empathy",
                       reason="I said 'right, well' to calm them down")["dispute_id"]
    with pytest.raises(BadRequest, match="already disputed"):
        al.write("dispute_scorecard", call_id="c-a1", question_id="empathy", reason="again")
    whole = al.write("dispute_scorecard", call_id="c-a1", reason="the call was fine overall")["dispute_id"]
    disputes = cody.read("call_scorecard_disputes", call_id="c-a1")
    about = [q if isinstance(q, str) else None for q in disputes.question_id]  # NULL arrives as NaN
    assert list(zip(disputes.dispute_id, about, disputes.status, disputes.raised_by)) == [
        (dispute, "empathy", "open", "al"), (whole, None, "open", "al")]

    # a coach resolves them: accepting one with a changed answer, rejecting the other
    with pytest.raises(BadRequest, match="a note is required"):
        cody.write("resolve_scorecard_dispute", call_id="c-a1", dispute_id=dispute, decision="accept", note="")
    with pytest.raises(BadRequest, match="only by accepting a dispute of that answer"):
        cody.write("resolve_scorecard_dispute", call_id="c-a1", dispute_id=whole, decision="reject", note="no",
                   answer="yes")
    done = cody.write("resolve_scorecard_dispute", call_id="c-a1", dispute_id=dispute, decision="accept",
                      note="fair: calming words count", answer="partly")
    assert done["status"] == "accepted" and done["call_score"] == 52.5
    cody.write("resolve_scorecard_dispute", call_id="c-a1", dispute_id=whole, decision="reject",
               note="three questions missed")
    with pytest.raises(BadRequest, match=f"dispute {whole} is already rejected"):
        cody.write("resolve_scorecard_dispute", call_id="c-a1", dispute_id=whole, decision="accept", note="x")
    disputes = al.read("call_scorecard_disputes", call_id="c-a1")
    assert list(zip(disputes.status, disputes.resolved_by, disputes.resolution)) == [
        ("accepted", "cody", "fair: calming words count"), ("rejected", "cody", "three questions missed")]
    assert card_of(al)["empathy"] == ("coach", 0.5, "fair: calming words count", "cody")

    assert [row[:4] for row in audit(served)] == [
        ("cody", "coach", "scorecard_edit", "c-a1"), ("cody", "coach", "scorecard_edit", "c-a1"),
        ("al", "agent", "scorecard_dispute", "c-a1"), ("al", "agent", "scorecard_dispute", "c-a1"),
        ("cody", "coach", "scorecard_resolve", "c-a1"), ("cody", "coach", "scorecard_resolve", "c-a1")]
    details = [row[4] for row in audit(served)]
    assert details[0] == "resolved: yes (account closed as asked)"
    assert details[4] == f"dispute #{dispute} accepted, empathy now partly: fair: calming words count"

    # re-analysis replaces the automatic answers and keeps the coach's (and the score follows them)
    call = rough_call()
    call.call_id = "c-a1"
    served.save_call(to_record(measured(call), metadata={"agent_id": "a1", "team": "blue",
                                                         "started_at": datetime(2026, 3, 2, 10)}))
    assert card_of(al)["greeting"][:2] == ("coach", 0.5) and card_of(al)["identity"][:2] == ("auto", 0.0)
    assert score_of(al) == 52.5


def test_every_other_role_is_refused_and_nothing_is_written(served):
    refused = [
        ("sue", "set_scorecard_answer", "c-a1", "a supervisor may not do set_scorecard_answer"),
        ("ann", "set_scorecard_answer", "c-a1", "an analyst may not do set_scorecard_answer"),
        ("al", "set_scorecard_answer", "c-a1", "an agent may not do set_scorecard_answer"),
        ("rita", "set_scorecard_answer", "c-a1", "call 'c-a1' is not one rita may see"),  # another team's coach
        ("cody", "dispute_scorecard", "c-a1", "a coach may not do dispute_scorecard"),
        ("sue", "dispute_scorecard", "c-a1", "a supervisor may not do dispute_scorecard"),
        ("bo", "dispute_scorecard", "c-a1", "call 'c-a1' is not one bo may see"),  # another agent's call
        ("al", "resolve_scorecard_dispute", "c-a1", "an agent may not do resolve_scorecard_dispute"),
        ("sue", "resolve_scorecard_dispute", "c-a1", "a supervisor may not do resolve_scorecard_dispute"),
        ("rita", "resolve_scorecard_dispute", "c-a1", "call 'c-a1' is not one rita may see"),
        ("boss", "rescore_call", "c-a1", "an admin may not do rescore_call"),  # the services' own
    ]
    params = {"set_scorecard_answer": {"question_id": "resolved", "answer": "yes", "note": "n"},
              "dispute_scorecard": {"reason": "r"},
              "resolve_scorecard_dispute": {"dispute_id": 1, "decision": "accept", "note": "n"},
              "rescore_call": {"scorecard": [], "scorecard_name": "x"}}
    for user, action, call_id, message in refused:
        with pytest.raises(AccessDenied, match=message):
            as_user(served, user).write(action, call_id=call_id, **params[action])
    with pytest.raises(AccessDenied, match="call 'c-a1' is not one bo may see"):
        as_user(served, "bo").read("call_scorecard", call_id="c-a1")
    assert set(card_of(served).values()) <= {("auto", 0.0, None, None), ("auto", 1.0, None, None),
                                              ("auto", None, None, None)}
    assert served.read("call_scorecard_disputes", call_id="c-a1").empty and audit(served) == []
    # an admin may do a coach's part
    as_user(served, "boss").write("set_scorecard_answer", call_id="c-a1", question_id="resolved", answer="no",
                                  note="customer left")
    assert card_of(served)["resolved"] == ("coach", 0.0, "customer left", "boss")


def test_scores_per_agent_and_team_by_week_within_the_users_scope(served):
    period = {"date_from": "2026-03-01", "date_to": "2026-03-08"}
    agents = as_user(served, "cody").read("scorecard_weekly", **period)
    assert list(zip(agents.who, agents.calls, agents.score)) == [("a1", 1, 25.0), ("a2", 1, 100.0)]
    teams = as_user(served, "sue").read("scorecard_weekly", **period, by="team")
    assert list(zip(teams.who, teams.calls, teams.score)) == [("blue", 2, 62.5)]
    own = as_user(served, "al").read("scorecard_weekly", **period)
    assert list(own.who) == ["a1"]  # an agent sees their own scores only
    assert as_user(served, "rita").read("scorecard_weekly", **period).empty


@pytest.mark.slow
def test_rescore_after_the_card_changes_keeps_the_coach_answers(served, tmp_path):
    from conftest import run_cli

    as_user(served, "cody").write("set_scorecard_answer", call_id="c-a1", question_id="greeting", answer="yes",
                                  note="a greeting of sorts")
    card = tmp_path / "card.toml"
    card.write_text('name = "Short card"\n[[question]]\nid = "greeting"\ntext = "Greeted?"\nweight = 1\n'
                    'category = "greeting"\n[[question]]\nid = "hold"\ntext = "No hold over 20 s?"\nweight = 1\n'
                    'metric = "longest_silence_s"\nbelow = 20\n')
    proc = run_cli("scorecard", "check", str(card))
    assert proc.returncode == 0, proc.stderr
    assert "'Short card', 2 questions (1 from categories, 1 from metrics, 0 for the coach)" in proc.stdout
    proc = run_cli("scorecard", "rescore", str(card), "--db", str(served.db_path))  # through the running service
    assert proc.returncode == 0, proc.stderr
    assert "c-a1: 37.5 -> 50" in proc.stdout and "c-a2: 100 -> 100" not in proc.stdout
    assert "2 call(s) rescored, 1 changed" in proc.stdout
    assert card_of(served) == {"greeting": ("coach", 1.0, "a greeting of sorts", "cody"),
                               "hold": ("auto", 0.0, None, None)}  # the 26 s hold
    bad = tmp_path / "bad.toml"
    bad.write_text('[[question]]\nid = "x"\ntext = "x"\nweight = 1\ncategory = "nope"\n')
    proc = run_cli("scorecard", "check", str(bad))
    assert proc.returncode == 2 and "question 'x'.category: no category 'nope'" in proc.stderr


# ---- the assembled demo call, and the review page -----------------------------------------------------

@pytest.mark.slow
def test_analyze_json_carries_the_scorecard_and_stores_it(demo_analysis):
    db, doc = demo_analysis
    call = doc["calls"][0]
    card = call["scorecard"]
    assert card["name"] == "Default QA scorecard" and len(card["answers"]) == 8
    found = {m["category"] for m in call["categories"]}
    for a in card["answers"]:  # each category answer follows what the rules found on this very call
        if a["answer_kind"] == "category":
            category = a["auto_note"].split("'")[1]
            expect = a["question_id"] not in ("no_talk_over", "professional")
            assert a["auto_score"] == float((category in found) == expect), a
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT question_id, auto_score, source FROM scorecard_answers ORDER BY position").fetchall()
        stored = con.execute("SELECT scorecard_score, scorecard_name FROM calls").fetchone()
    assert rows == [(a["question_id"], a["auto_score"], "auto") for a in card["answers"]]
    assert stored == (card["score"], card["name"])


PASSWORD = "correct horse battery"


def _write_users(data: Path) -> None:
    from emotivoice.dashboard.auth import hash_password

    hashed = hash_password(PASSWORD)
    data.mkdir(parents=True, exist_ok=True)
    (data / "dashboard_users.json").write_text(json.dumps({
        "cody": Account("cody", hashed, "coach", ("blue",)).to_json(),
        "al": Account("al", hashed, "agent", (), "agent-7").to_json()}))


@pytest.mark.slow
@pytest.mark.skipif(__import__("browser").browser_missing() is not None, reason="no Chromium here")
def test_review_page_coach_changes_an_answer_of_a_disputed_scorecard(demo_analysis, tmp_path):
    from browser import (choose, click_button, headless_chrome, login, open_page, page_text, screenshot,
                         start_dashboard_server, stop_dashboard_server, wait_for_text, wait_until_idle)
    from selenium.webdriver.common.by import By
    from emotivoice.storage.store import FileStore

    db = tmp_path / "calls.duckdb"
    shutil.copy(demo_analysis[0], db)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE calls SET started_at = now()::TIMESTAMP - INTERVAL 1 HOUR, agent_id = 'agent-7', "
                    "team = 'blue'")
        call_id = con.execute("SELECT call_id FROM calls").fetchone()[0]
    data = tmp_path / "data"
    _write_users(data)
    env = {"EMOTIVOICE_DATA_DIR": str(data), "EMOTIVOICE_DASHBOARD_USERS": ""}
    agent = FileStore(db, user="al", users=Directory(data / "dashboard_users.json"))
    agent.write("dispute_scorecard", call_id=call_id, question_id="empathy",
                reason="I apologised at 0:20, the rules missed it")
    proc, url = start_dashboard_server(db, env)
    driver = None
    try:
        driver = headless_chrome(1600, 2400)
        login(driver, url, "cody", PASSWORD)
        open_page(driver, "Call review")
        for text in ("QA scorecard", "Score (Default QA scorecard)", "waiting for the coach",
                     "I apologised at 0:20, the rules missed it", "Change an answer", "Resolve a dispute"):
            wait_for_text(driver, text)
        choose(driver, "Question", "Was the customer's issue resolved, or a clear next step agreed?")
        note = driver.find_element(By.CSS_SELECTOR, 'textarea[aria-label="Note (required: why you changed it)"]')
        note.send_keys("The customer got a refund: resolved")
        driver.execute_script("arguments[0].blur()", note)
        wait_until_idle(driver)
        click_button(driver, "Save answer")
        wait_for_text(driver, "Answer to 'resolved' saved.")
        wait_for_text(driver, "coach cody")
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), page_text(driver)
        heading = driver.find_element(By.XPATH, "//h3[contains(., 'QA scorecard')]")
        driver.execute_script("arguments[0].scrollIntoView()", heading)
        wait_until_idle(driver)
        screenshot(driver, tmp_path / "scorecard.png")
        screenshot(driver, ROOT / "docs" / "screenshots" / "scorecard.png")
    finally:
        if driver is not None:
            driver.quit()
        stop_dashboard_server(proc)
    stored = FileStore(db).read("call_scorecard", call_id=call_id)
    resolved = stored[stored.question_id == "resolved"].iloc[0]
    assert (resolved.source, resolved.score, resolved.note, resolved.changed_by) == (
        "coach", 1.0, "The customer got a refund: resolved", "cody")
