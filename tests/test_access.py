"""Roles, scope, the audit trail and erasure (issue 15), through a real store service on a real file.

Five calls of two teams, three agents and two customers; one user of each role (and one of the
old, role-less form). Every client acts for a user over HTTP the way the dashboard does
(X-Store-User), so what is checked is what the service itself enforces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from emotivoice.app import cli
from emotivoice.config import load_settings
from emotivoice.storage import queries
from emotivoice.storage.access import AccessDenied, Account, Directory
from emotivoice.storage.db import BadRequest, CallRecord
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import FileStore, ServedStore
from tests.test_storage import record

HASH = "pbkdf2_sha256$1$00$00"  # never checked here: the store resolves names, the dashboard checks passwords
CALLS = {  # call_id: (agent_id, team, customer_id)
    "c-a1": ("a1", "blue", "cust-1"), "c-a2": ("a2", "blue", "cust-2"), "c-r1": ("r1", "red", "cust-1"),
    "c-r2": ("r1", "red", "cust-2"), "c-x": ("a2", "blue", None),  # c-x: cust-1 only among the source's ids
}
USERS = {"boss": Account("boss", HASH, "admin", ()), "sue": Account("sue", HASH, "supervisor", ("blue",)),
         "cody": Account("cody", HASH, "coach", ("red",)), "ann": Account("ann", HASH, "analyst", ()),
         "al": Account("al", HASH, "agent", (), "a1")}


def call_record(call_id: str) -> CallRecord:
    agent, team, customer = CALLS[call_id]
    rec = record(call_id, n=2, text=f"my card is 4111 for {call_id}")
    rec.call.update(agent_id=agent, team=team, customer_id=customer, started_at="2026-03-02 10:00:00",
                    source=None, peak_risk=0.5, alert_count=1,
                    external_ids=json.dumps({"custom": {"crm_customer": "cust-1"}}) if call_id == "c-x" else None)
    rec.alerts = [{"call_id": call_id, "speaker": "agent", "t_s": 1.0, "kind": "escalation", "score": 0.8,
                   "factors": "{}", "utterance_idx": 1}]
    return rec


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The data dir of a real service: user file (new and old entries), calls, kept audio."""
    data = tmp_path / "data"
    data.mkdir()
    entries = {name: a.to_json() for name, a in USERS.items()} | {"old": HASH}  # "old": no role, as before
    (data / "dashboard_users.json").write_text(json.dumps(entries))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(data))
    monkeypatch.delenv("EMOTIVOICE_DASHBOARD_USERS", raising=False)
    monkeypatch.delenv("EMOTIVOICE_DB_PATH", raising=False)
    return load_settings()


@pytest.fixture
def served(env):
    with StoreServer(env.db_path, users=Directory.from_settings(env)) as server:
        for call_id in CALLS:
            server.save_call(call_record(call_id))
        yield server


def as_user(server: StoreServer, name: str | None) -> ServedStore:
    return ServedStore(server.url, server.token, user=name, client="10.0.0.9")


def seen(store, query: str = "find_calls", **params) -> set[str]:
    return set(store.read(query, **params).call_id)


def test_each_role_sees_exactly_its_scope(served):
    every = set(CALLS)
    assert seen(as_user(served, None)) == every  # a service or the CLI: today's full access
    assert seen(as_user(served, "old")) == every  # an old entry without a role: a supervisor of all teams
    assert seen(as_user(served, "boss")) == every
    assert seen(as_user(served, "ann")) == every
    assert seen(as_user(served, "sue")) == {"c-a1", "c-a2", "c-x"}
    assert seen(as_user(served, "cody")) == {"c-r1", "c-r2"}
    assert seen(as_user(served, "al")) == {"c-a1"}
    # the same scope on every list: the live floor, alerts, reports, agents and teams
    assert seen(as_user(served, "sue"), "live_calls") == {"c-a1", "c-a2", "c-x"}
    assert seen(as_user(served, "sue"), "open_alerts") == {"c-a1", "c-a2", "c-x"}
    assert seen(as_user(served, "ann"), "churn_risk", date_from="2026-03-01", date_to="2026-03-03") == every
    assert set(as_user(served, "al").read("agent_weekly", date_from="2026-03-01", date_to="2026-03-03")
               .agent_id) == {"a1"}
    assert set(as_user(served, "cody").read("coaching_opportunities", date_from="2026-03-01",
                                            date_to="2026-03-03").agent_id) == {"r1"}
    assert list(as_user(served, "sue").read("teams").team) == ["blue"]
    assert list(as_user(served, "al").read("agent_ids").agent_id) == ["a1"]
    # what a role may not use at all
    for name, query, params in [("al", "live_calls", {}), ("cody", "open_alerts", {}),
                                ("cody", "churn_risk", {"date_from": "2026-03-01", "date_to": "2026-03-03"}),
                                ("sue", "audit_log", {}), ("ann", "playback_source", {"call_id": "c-a1"}),
                                ("boss", "unfinished_calls", {})]:
        with pytest.raises(AccessDenied, match=f"may not read {query}"):
            as_user(served, name).read(query, **params)
    # an analyst reads every transcript redacted: no text, no words, whatever the query
    text = as_user(served, "ann").read("call_utterances", call_id="c-a1").text
    assert set(text) == {"[redacted]"}
    redacted = as_user(served, "ann").read("call_utterances", call_id="c-r1")
    assert not any("4111" in str(v) for v in redacted.to_numpy().ravel())
    assert "4111" in as_user(served, "sue").read("call_utterances", call_id="c-a1").text.iloc[0]


def test_an_agent_asking_for_another_agents_call_is_refused(served):
    al = as_user(served, "al")
    assert len(al.read("call_utterances", call_id="c-a1")) == 2  # their own
    for query in ("call_utterances", "call_speakers", "call_alerts", "call_feedback", "agent_vs_team", "call_source"):
        with pytest.raises(AccessDenied, match="call 'c-a2' is not one al may see"):
            al.read(query, call_id="c-a2")
    with pytest.raises(AccessDenied, match="'no-such-call' is not one al may see"):  # the same for no call
        al.read("call_utterances", call_id="no-such-call")
    # on the wire: 403 with our message, and nothing of the call
    status, body = _as(served, "al", {"query": "call_utterances", "params": {"call_id": "c-a2"}})
    assert status == 403 and json.loads(body)["error"] == "call 'c-a2' is not one al may see"
    # writes outside the scope or the role: refused, nothing written
    with pytest.raises(AccessDenied, match="an? agent may not do add_feedback"):
        al.write("add_feedback", call_id="c-a1", kind="note", author="al", note="mine")
    with pytest.raises(AccessDenied, match="call 'c-a1' is not one cody may see"):
        as_user(served, "cody").write("add_feedback", call_id="c-a1", kind="note", author="cody", note="not mine")
    blue_alert = int(served.read("call_alerts", call_id="c-a1").alert_id.iloc[0])
    with pytest.raises(AccessDenied):
        as_user(served, "cody").write("acknowledge_alert", alert_id=blue_alert, user="cody")
    assert served.con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 0
    # a coach's feedback on their team's call is stored under their own name, whatever the client says
    as_user(served, "cody").write("add_feedback", call_id="c-r1", kind="note", author="sue", note="well handled")
    assert served.con.execute("SELECT author FROM feedback").fetchone()[0] == "cody"
    ack = as_user(served, "sue").write("acknowledge_alert", alert_id=blue_alert, user="boss")
    assert ack["acknowledged_by"] == "sue"
    # unknown users and users storing calls are refused; so is a user that is not in the file
    with pytest.raises(AccessDenied, match="unknown user 'mallory'"):
        as_user(served, "mallory").read("find_calls")
    status, body = _as(served, "al", call_record("c-a1").__dict__, path="/calls")
    assert status == 403 and json.loads(body)["error"] == "calls are stored by the services, not for a user"


def _as(server: StoreServer, user: str, body: dict, path: str = "/read") -> tuple[int, bytes]:
    from tests.test_attacks_store import raw

    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Store-Token: {server.token}\r\nX-Store-User: {user}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    return raw(server, head + data)


def audit(server: StoreServer) -> list[tuple]:
    return server.con.execute("SELECT user_name, role, action, call_id, detail, client FROM audit_log "
                              "ORDER BY audit_id").fetchall()


def test_the_audit_trail_records_a_view_a_playback_and_an_export(served):
    sue = as_user(served, "sue")
    sue.write("record_event", event="sign_in")
    sue.read("call_utterances", call_id="c-a1")
    sue.read("call_utterances", call_id="c-a1")  # the page's next run: the same view, recorded once
    sue.read("call_speakers", call_id="c-a1")  # the rest of the page is no further view
    sue.read("playback_source", call_id="c-a1")
    sue.write("record_event", event="export", detail="churn-risk.csv (3 rows)")
    as_user(served, "al").read("call_utterances", call_id="c-a1")
    with pytest.raises(AccessDenied):
        as_user(served, "al").read("call_utterances", call_id="c-a2")  # a refusal shows nothing: no view
    assert audit(served) == [("sue", "supervisor", "sign_in", None, None, "10.0.0.9"),
                             ("sue", "supervisor", "view", "c-a1", None, "10.0.0.9"),
                             ("sue", "supervisor", "playback", "c-a1", None, "10.0.0.9"),
                             ("sue", "supervisor", "export", None, "churn-risk.csv (3 rows)", "10.0.0.9"),
                             ("al", "agent", "view", "c-a1", None, "10.0.0.9")]
    with pytest.raises(BadRequest, match="an event is one of"):
        sue.write("record_event", event="view")  # a client reports only what the store cannot see
    # only an admin reads it; nothing a client can send changes or removes a row
    log = as_user(served, "boss").read("audit_log")
    assert list(log.action)[::-1] == ["sign_in", "view", "playback", "export", "view"]
    assert "audit_log" not in queries.call_tables(served.con)
    source = "".join(Path(p).read_text() for p in ("storage/queries.py", "storage/access.py", "storage/db.py",
                                                   "storage/incremental.py", "storage/server.py", "storage/audit.py",
                                                   "storage/pages.py", "storage/recovery.py"))
    assert not re.search(r"(UPDATE|DELETE FROM|TRUNCATE|DROP TABLE)\s+\"?audit_log", source, re.I)


def test_an_erasure_leaves_nothing_of_the_customer_behind(served, env, capsys):
    audio, inbox = env.live.audio_dir, env.inbox_dir
    kept = {}
    for call_id, where in (("c-r1", audio / "2026-03-02" / "c-r1.wav"), ("c-a2", audio / "2026-03-02" / "c-a2.wav"),
                           ("c-a1", inbox / "a1-call.wav")):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(b"RIFF")
        where.with_suffix(".json").write_text(json.dumps({"customer_id": CALLS[call_id][2]}))
        kept[call_id] = where
    (audio / ".partial").mkdir()
    (audio / ".partial" / "c-x.0.raw").write_bytes(b"\0\0")  # an unfinished leg of a cust-1 call
    served.con.execute("UPDATE calls SET source = ? WHERE call_id = 'c-a1'", [str(kept["c-a1"])])
    served.con.execute("UPDATE calls SET source = ? WHERE call_id = 'c-r1'", [str(kept["c-r1"])])
    as_user(served, "cody").write("add_feedback", call_id="c-r1", kind="note", author="cody", note="cust-1 again")
    as_user(served, "sue").read("call_utterances", call_id="c-a1")  # a view before the erasure stays audited

    assert cli.main(["delete", "--customer", "cust-1"]) == 0  # through the running service (it owns the file)
    assert "erased 3 call(s)" in capsys.readouterr().out

    erased = {"c-a1", "c-r1", "c-x"}
    for table in [r[0] for r in served.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]:
        rows = [str(r) for r in served.con.execute(f'SELECT * FROM "{table}"').fetchall()]
        assert not any("cust-1" in r for r in rows), table  # the customer id nowhere, the audit log included
        if table != "audit_log":
            assert not any(c in r for r in rows for c in erased), table
    left = [p.name for p in audio.rglob("*") if p.is_file()] + [p.name for p in inbox.rglob("*") if p.is_file()]
    assert sorted(left) == ["c-a2.json", "c-a2.wav"]  # the other customer's audio is untouched
    assert seen(as_user(served, None)) == {"c-a2", "c-r2"}
    assert len(served.read("call_utterances", call_id="c-a2")) == 2
    deletions = [r for r in audit(served) if r[2] == "delete"]
    assert {r[3] for r in deletions} == erased and all(r[1] == "service" for r in deletions)
    assert all("customer erasure" in r[4] and "emotivoice delete" in r[4] for r in deletions)
    assert ("sue", "supervisor", "view", "c-a1", None, "10.0.0.9") in audit(served)

    # one call by its id, with the store file opened directly (no service); an admin may do it too
    served.close()
    assert cli.main(["delete", "--call", "c-r2"]) == 0
    store = FileStore(env.db_path)
    assert set(store.read("find_calls").call_id) == {"c-a2"}
    with pytest.raises(AccessDenied, match="a supervisor may not do erase_calls"):
        FileStore(env.db_path, user="sue").write("erase_calls", call_id="c-a2")
    FileStore(env.db_path, user="boss").write("erase_calls", call_id="c-a2")
    assert store.read("find_calls").empty
    assert [r for r in FileStore(env.db_path, user="boss").read("audit_log").itertuples()
            if r.action == "delete" and r.user_name == "boss"]


def test_users_get_roles_and_old_entries_keep_working(env, capsys):
    from emotivoice.dashboard.auth import add_user, load_accounts, set_role, verify_password

    add_user(env, "newcoach", "correct horse battery", "coach", ["red", "green"])
    with pytest.raises(ValueError, match="an agent needs --agent-id"):
        add_user(env, "x", "correct horse battery", "agent")
    with pytest.raises(ValueError, match="a supervisor needs --team"):
        set_role(env, "newcoach", "supervisor")
    set_role(env, "old", "agent", agent_id="a9")  # the password stays
    accounts = load_accounts(env)
    assert (accounts["newcoach"].role, accounts["newcoach"].teams) == ("coach", ("red", "green"))
    assert (accounts["old"].role, accounts["old"].agent_id, accounts["old"].password_hash) == ("agent", "a9", HASH)
    assert verify_password("correct horse battery", accounts["newcoach"].password_hash)
    raw = json.loads((env.data_dir / "dashboard_users.json").read_text())
    assert raw["boss"]["role"] == "admin"
    assert cli.main(["users", "list"]) == 0
    assert "newcoach\tcoach\tteams=red,green" in capsys.readouterr().out
