"""Issue 16's reports and rules editor at the store: the churn trend, reasons and customers on a
small real store, and the rules editor's queries, which only an admin may run, enforced by the
store service itself (storage/access.py), with the save atomic, owner-only and audited.

Nine calls over three weeks, their scores worked out by hand below (0.35 peak risk + 0.30 end
negativity + 0.20 churn phrase + 0.15 repeat calls): customers known by id, by the caller's
number (AudioHook's ANI) and by a custom call parameter, and two calls of nobody known.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from emotivoice.analysis.insight.rules import default_rules_text
from emotivoice.config import load_settings
from emotivoice.storage import rules_file
from emotivoice.storage.access import AccessDenied, Account, Directory
from emotivoice.storage.db import BadRequest, StorageError
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import ServedStore
from tests.test_storage import record

HASH = "pbkdf2_sha256$1$00$00"
WEEKS = ("2026-03-02", "2026-03-09", "2026-03-16")  # Mondays
# call: (week, team, customer_id, external_ids, peak_risk, customer_end_negative, churn_phrases, categories, score)
CALLS = {
    "c1": (0, "blue", "cust-1", None, 0.8, 0.6, ["cancel"], ["greeting", "cancellation intent"], 0.81),
    "c2": (1, "blue", "cust-1", None, 0.6, 0.5, [], ["greeting", "escalation request"], 0.51),
    "c3": (2, "blue", "cust-1", None, 0.2, 0.1, [], ["greeting"], 0.25),
    "c4": (0, "blue", "cust-2", None, 0.1, 0.0, [], ["greeting"], 0.035),
    "c5": (1, "red", None, {"external": {"ani": "+4412"}}, 0.9, 0.8, ["switch"],
           ["greeting", "cancellation intent"], 0.83),
    "c6": (2, "red", None, {"external": {"ani": "+4412"}}, 0.3, 0.2, [], ["greeting"], 0.24),
    "c7": (2, "red", None, {"custom": {"crm_customer": "crm-9"}}, 0.5, 0.5, [],
           ["greeting", "escalation request"], 0.325),
    "c8": (0, "red", None, None, 0.7, 0.7, [], [], 0.455),  # nobody known: never a repeat caller
    "c9": (1, "red", None, None, 0.0, 0.0, [], [], 0.0),
}
PERIOD = {"date_from": "2026-03-01", "date_to": "2026-03-22"}
USERS = {"boss": Account("boss", HASH, "admin", ()), "sue": Account("sue", HASH, "supervisor", ("blue",)),
         "ann": Account("ann", HASH, "analyst", ()), "old": Account("old", HASH)}  # old: a supervisor of all


def churn_record(call_id: str):
    week, team, customer, external, peak, end_negative, phrases, categories, _ = CALLS[call_id]
    rec = record(call_id, n=2, text="I want a refund" if call_id == "c2" else "hello")
    rec.call.update(started_at=f"{WEEKS[week]} 10:00:00", team=team, agent_id=f"agent-{team}", customer_id=customer,
                    external_ids=json.dumps(external) if external else None, peak_risk=peak,
                    customer_end_negative=end_negative, churn_phrases=phrases, categories=categories, source=None)
    return rec


@pytest.fixture
def served(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dashboard_users.json").write_text(json.dumps({n: a.to_json() for n, a in USERS.items()}))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(data))
    for var in ("EMOTIVOICE_DASHBOARD_USERS", "EMOTIVOICE_DB_PATH", "EMOTIVOICE_ANALYTICS_RULES_FILE"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    monkeypatch.setattr(rules_file, "_configured", None)
    rules_file.configure(settings)
    with StoreServer(settings.db_path, users=Directory.from_settings(settings)) as server:
        for call_id in CALLS:
            server.save_call(churn_record(call_id))
        yield server


def as_user(server: StoreServer, name: str | None) -> ServedStore:
    return ServedStore(server.url, server.token, user=name, client="10.0.0.9")


def test_every_churn_query_scores_a_call_the_same(served):
    calls = as_user(served, "ann").read("churn_risk", **PERIOD)
    assert dict(zip(calls.call_id, calls.churn_score.round(4))) == {c: v[-1] for c, v in CALLS.items()}
    assert dict(zip(calls.call_id, calls.customer.fillna("nobody"))) == {
        "c1": "cust-1", "c2": "cust-1", "c3": "cust-1", "c4": "cust-2", "c5": "+4412", "c6": "+4412", "c7": "crm-9",
        "c8": "nobody", "c9": "nobody"}
    # two calls of nobody known are no repeat calls of each other (before: 0.075 each from the NULL group)
    assert calls.set_index("call_id").calls_in_period.to_dict()["c9"] == 1


def test_the_trend_counts_calls_at_risk_per_week(served):
    trend = as_user(served, "boss").read("churn_trend", **PERIOD)
    assert [str(w.date()) for w in trend.week] == list(WEEKS)
    assert trend.calls.tolist() == [3, 3, 3]
    assert trend.at_risk_calls.tolist() == [2, 2, 1]  # c1 c8 | c2 c5 | c7 (at 0.3 and above)
    assert trend.mean_churn_score.tolist() == pytest.approx([(0.81 + 0.035 + 0.455) / 3, (0.51 + 0.83) / 3,
                                                             (0.25 + 0.24 + 0.325) / 3])
    stricter = as_user(served, "boss").read("churn_trend", **PERIOD, at_risk=0.6)
    assert stricter.at_risk_calls.tolist() == [1, 1, 0]
    one_team = as_user(served, "boss").read("churn_trend", **PERIOD, team="blue")
    assert one_team.calls.tolist() == [2, 1, 1]


def test_the_reasons_rank_what_comes_with_risk_above_what_every_call_has(served):
    reasons = as_user(served, "ann").read("churn_reasons", **PERIOD)
    rows = [(r.kind, r.reason, r.at_risk_calls) for r in reasons.itertuples()]
    assert rows == [("signal", "customer negative at the end", 5), ("signal", "escalated (peak risk at least 0.55)", 4),
                    ("category", "cancellation intent", 2), ("category", "escalation request", 2),
                    ("phrase", "cancel", 1), ("phrase", "switch", 1), ("signal", "repeat caller", 3),
                    ("category", "greeting", 4)]  # greeting: 4 of 5 at-risk calls, but 3 of the 4 others too
    greeting = reasons[reasons.reason == "greeting"].iloc[0]
    assert (greeting.at_risk_share, greeting.other_share) == pytest.approx((0.8, 0.75))
    assert len(as_user(served, "ann").read("churn_reasons", **PERIOD, limit=3)) == 3


def test_customers_are_ranked_across_their_calls(served):
    customers = as_user(served, "old").read("churn_customers", **PERIOD)
    assert customers.customer.tolist() == ["cust-1", "+4412", "crm-9", "cust-2"]  # nobody known: not listed
    assert customers.customer_risk.tolist() == pytest.approx([1 - 0.19 * 0.49 * 0.75, 1 - 0.17 * 0.76, 0.325, 0.035])
    first = customers.iloc[0]
    assert (first.calls, first.at_risk_calls, first.worst_call_score) == (3, 2, pytest.approx(0.81))
    assert str(first.last_call.date()) == WEEKS[2] and first.last_agent == "agent-blue"
    assert list(first.categories) == ["cancellation intent", "escalation request", "greeting"]
    assert customers.known_by.tolist() == ["customer id", "caller number", "call parameter", "customer id"]
    # a supervisor of one team ranks that team's customers from that team's calls only
    assert as_user(served, "sue").read("churn_customers", **PERIOD).customer.tolist() == ["cust-1", "cust-2"]



def test_the_weights_are_the_settings_bound_as_parameters(served):
    """The churn and coaching weights are the settings' reports section (issue 11): the defaults give
    the scores above, other weights change them through the same store path, and anything that is
    not a field of that section with a finite number is refused before any SQL runs."""
    from dataclasses import asdict, replace

    from emotivoice.config import ReportsConfig

    ann = as_user(served, "ann")
    same = ann.read("churn_risk", **PERIOD, weights=asdict(ReportsConfig()))
    assert dict(zip(same.call_id, same.churn_score.round(4))) == {c: v[-1] for c, v in CALLS.items()}
    only_risk = asdict(replace(ReportsConfig(), churn_w_peak_risk=1.0, churn_w_end_negative=0.0,
                               churn_w_churn_phrase=0.0, churn_w_repeat_calls=0.0, churn_reason_peak_risk=0.85))
    scored = ann.read("churn_risk", **PERIOD, weights=only_risk)
    assert dict(zip(scored.call_id, scored.churn_score.round(4))) == {c: v[4] for c, v in CALLS.items()}
    reasons = ann.read("churn_reasons", **PERIOD, weights=only_risk, at_risk=0.6)
    assert ("signal", "escalated (peak risk at least 0.85)", 1) in [
        (r.kind, r.reason, r.at_risk_calls) for r in reasons.itertuples()]  # c5 only
    default = as_user(served, "boss").read("coaching_opportunities", **PERIOD)
    escalation_only = as_user(served, "boss").read("coaching_opportunities", **PERIOD, weights={
        "coaching_w_escalation": 1.0, "coaching_w_worsening": 0.0})
    assert len(default) == len(escalation_only) > 0
    for bad in ({"w_peak_risk; DROP TABLE calls": 1.0}, {"churn_w_peak_risk": "0.35"},
                {"churn_w_peak_risk": float("nan")}, {"churn_repeat_calls_full": 1.5}, [0.35]):
        with pytest.raises(BadRequest, match="weights"):
            ann.read("churn_risk", **PERIOD, weights=bad)

BROKEN = '\n[[category]]\nname = "refund talk"\n[[category.condition]]\nphrasez = ["refund*"]\n'
REFUND = '\n[[category]]\nname = "refund talk"\n[[category.condition]]\nspeaker = "any"\nphrases = ["refund*"]\n'


def test_only_an_admin_may_read_check_save_or_rerun_the_rules(served):
    target = Path(load_settings().analytics.editor_target())
    for name in ("sue", "ann", "old"):
        store = as_user(served, name)
        with pytest.raises(AccessDenied, match="may not read rules_editor"):
            store.read("rules_editor")
        with pytest.raises(AccessDenied, match="may not read check_rules"):
            store.read("check_rules", text=default_rules_text())
        with pytest.raises(AccessDenied, match="may not do save_rules"):
            store.write("save_rules", text=default_rules_text() + REFUND)
        with pytest.raises(AccessDenied, match="may not do rerun_rules"):
            store.write("rerun_rules")
    assert not target.exists()
    assert rules_file.wait_for_rerun(served.db_path, 0).state == "never"
    # churn reports are for leads and analysts, never for a coach or an agent: unchanged
    assert as_user(served, "sue").read("churn_trend", **PERIOD).calls.sum() == 4


def test_an_admin_edits_checks_saves_and_reruns_the_rules(served):
    boss = as_user(served, "boss")
    editor = boss.read("rules_editor").iloc[0]
    assert editor.shipped and editor.active_file == "" and editor.rules_toml == default_rules_text()
    target = Path(editor.target_file)
    assert target == Path(load_settings().data_dir) / "rules.toml"  # the shipped file is never written over
    # checked by the rules loader itself; its error names the category, the condition and the key
    verdict = boss.read("check_rules", text=editor.rules_toml + BROKEN).iloc[0]
    assert not verdict.ok and verdict.message == "rules.toml: category 'refund talk' condition 1: unknown key 'phrasez'"
    bad_toml = boss.read("check_rules", text="[[category]\n").iloc[0]
    assert not bad_toml.ok and "not valid TOML" in bad_toml.message and "line 1" in bad_toml.message
    with pytest.raises(BadRequest, match="unknown key 'phrasez'"):
        boss.write("save_rules", text=editor.rules_toml + BROKEN, expected_digest=editor.digest)
    assert not target.exists()
    ok = boss.read("check_rules", text=editor.rules_toml + REFUND).iloc[0]
    assert ok.ok and "9 categories" in ok.message

    saved = boss.write("save_rules", text=editor.rules_toml + REFUND, expected_digest=editor.digest)
    assert saved["path"] == str(target) and target.read_text() == editor.rules_toml + REFUND
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []  # temp file renamed
    now = boss.read("rules_editor").iloc[0]
    assert not now.shipped and now.active_file == str(target) and "refund talk" in now.rules_toml
    assert load_settings().analytics.active_rules_file() == str(target)  # what every analysis now loads
    # a save from an editor opened before that one is refused, not silently lost
    with pytest.raises(BadRequest, match="the rules changed since you opened them"):
        boss.write("save_rules", text=editor.rules_toml, expected_digest=editor.digest)
    audit = served.read("audit_log", action="rules_save")
    assert audit.user_name.tolist() == ["boss"] and str(target) in audit.detail.iloc[0]
    assert f"sha256 {editor.digest} -> {now.digest}" in audit.detail.iloc[0]

    # the re-run judges every stored call again with the saved rules (`emotivoice rules run`)
    started = boss.write("rerun_rules")
    assert started["started"] and started["rules"] == str(target)
    run = rules_file.wait_for_rerun(served.db_path, 120)
    assert run.state == "done", run.summary
    assert run.summary.startswith("9 call(s) re-categorised") and run.started_by == "boss"
    categories = dict(served.con.execute("SELECT call_id, categories FROM calls").fetchall())
    assert "refund talk" in categories["c2"] and "refund talk" not in categories["c1"]
    shown = boss.read("rules_editor").iloc[0]
    assert shown.rerun_state == "done" and shown.rerun_summary == run.summary
    assert served.read("audit_log", action="rules_run").user_name.tolist() == ["boss"]


def test_the_rules_text_is_bounded_and_must_be_text(served):
    boss = as_user(served, "boss")
    with pytest.raises(BadRequest, match="text must be a string"):
        boss.write("save_rules", text=["not", "text"])
    with pytest.raises(BadRequest, match="at most 200000 characters"):
        boss.write("save_rules", text="#" * 200_001)
    with pytest.raises((BadRequest, StorageError), match="no write action|takes no parameter"):
        boss.write("save_rules", text="", path="/etc/passwd")  # where it goes is the service's, never the caller's
