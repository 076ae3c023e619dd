"""Who may read and write what: roles, each user's scope of calls, and the audit trail.

The dashboard holds the store's token and names the acting user with each request (X-Store-User,
storage/server.py; `FileStore(user=...)` when no service runs). That name is the dashboard's
claim; the store resolves it against the user file itself (`<data_dir>/dashboard_users.json`,
the same one dashboard/auth.py signs people in with) and decides here:

- admin: everything, the audit log and erasure included; supervisor: the live floor, reviews,
  acknowledgements, feedback and reports for the calls of their teams; coach: reviews, feedback
  and scorecards for their teams; analyst: reports and exports over all calls, with every
  transcript redacted (no utterance text or words leave the store) and no playback; agent: their
  own calls (calls.agent_id = their agent_id) and scorecards, read only.
- A user entry of the old form (`"name": "hash"`, or `dashboard.users` in config) has no role:
  it is a supervisor of all teams, which is exactly what every login could do before roles
  existed (live floor, reviews, feedback, reports), and nothing it could not (the audit log,
  erasure, user administration are admin's).
- A request with no user (the analysis service, the CLI) keeps full access.

A query that lists calls takes a `scope` (storage.queries.Scope) and is filtered in its SQL; one
that takes a `call_id` is refused (AccessDenied, HTTP 403) unless that call is in scope; a
restricted user may run no other kind. Refusals name neither the call's owner nor whether it
exists. Reads of a call's transcript, playbacks, exports, sign-ins, acknowledgements, feedback and
erasures are written to `audit_log` (migration 009), which is only ever inserted into.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from emotivoice.config import Settings
from emotivoice.storage import queries, retention  # retention registers its write action, expire_calls
from emotivoice.storage.db import BadRequest, keep_private_con, rollback, short
from emotivoice.storage.queries import FULL, Scope

log = logging.getLogger(__name__)

ROLES = ("admin", "supervisor", "coach", "analyst", "agent")
ALL_TEAMS = "*"
LEGACY_ROLE = "supervisor"  # an entry without a role: what every login could do before (see above)
SERVICE_ROLE = "service"  # what the audit trail says for a request with no user
REDACTED = "[redacted]"
REDACTED_COLUMNS = ("text", "words")  # any result column of these names, for a redacted role
AUDIT_REPEAT_S = 300.0  # a user's views (and playbacks) of one call are recorded once per this long
USERS_FILE = "dashboard_users.json"

EVERYONE = frozenset(ROLES)
LEADS = frozenset({"admin", "supervisor"})
READ_ROLES: dict[str, frozenset[str]] = {
    "live_calls": LEADS, "open_alerts": LEADS,
    "find_calls": EVERYONE, "list_calls": EVERYONE, "agent_ids": EVERYONE, "teams": EVERYONE,
    "call_speakers": EVERYONE, "call_utterances": EVERYONE, "call_emotion_scores": EVERYONE,
    "call_alerts": EVERYONE, "call_source": EVERYONE, "call_feedback": EVERYONE, "agent_vs_team": EVERYONE,
    "agent_weekly": EVERYONE, "coaching_opportunities": EVERYONE,
    "churn_risk": frozenset({"admin", "supervisor", "analyst"}),
    "playback_source": frozenset({"admin", "supervisor", "coach", "agent"}),
    "audit_log": frozenset({"admin"}), "emotion_corrections": frozenset({"admin"}),
    "stored_call_ids": frozenset(), "unfinished_calls": frozenset(),  # the services' own
    "search_utterances": EVERYONE,  # scoped to the user's calls; an analyst's hits come without text
}
REPORT_ROLES = frozenset({"admin", "supervisor", "analyst"})  # the churn page (issue 16), as churn_risk
ADMIN = frozenset({"admin"})
READ_ROLES |= {"churn_trend": REPORT_ROLES, "churn_reasons": REPORT_ROLES, "churn_customers": REPORT_ROLES,
               "rules_editor": ADMIN, "check_rules": ADMIN}  # the rules editor: storage/rules_file.py
WRITE_ROLES: dict[str, frozenset[str]] = {
    "acknowledge_alert": LEADS, "add_feedback": frozenset({"admin", "supervisor", "coach"}),
    "record_event": EVERYONE, "erase_calls": frozenset({"admin"}),
    "mark_interrupted": frozenset(), "finish_interrupted": frozenset(),
    "save_rules": ADMIN, "rerun_rules": ADMIN,
    "search_reindex": frozenset(),  # the CLI's, through the service
    "expire_calls": frozenset(),  # retention: the services' and the CLI's own (storage/retention.py)
}
# a query or action this table does not name (added later) is open to these roles, checked by
# what it takes: a call_id in scope, a scope, or else only users who see every call
OTHER_READS, OTHER_WRITES = EVERYONE, LEADS
AUDITED_READS = {"call_utterances": "view", "playback_source": "playback"}
AUDITED_WRITES = {"acknowledge_alert": "acknowledge", "add_feedback": "feedback", "erase_calls": "delete",
                  "record_event": None,  # None: the event names its own action
                  "save_rules": "rules_save", "rerun_rules": "rules_run", "expire_calls": "retention"}
ACTOR_PARAMS = {"acknowledge_alert": "user", "add_feedback": "author",
                "rerun_rules": "started_by"}  # set to the acting user's name


class AccessDenied(BadRequest):
    """The acting user may not do this (HTTP 403); the message is safe to show them."""


# ---- users ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    """One entry of the user file: the password hash and what the user may see."""

    name: str
    password_hash: str
    role: str = LEGACY_ROLE
    teams: tuple[str, ...] = (ALL_TEAMS,)
    agent_id: str | None = None

    def to_json(self) -> dict:
        return {"hash": self.password_hash, "role": self.role, "teams": list(self.teams), "agent_id": self.agent_id}


def account_from_json(name: str, entry: object) -> Account | None:
    """An entry of either form (a bare hash string: the old form, a supervisor of all teams), or None."""
    if isinstance(entry, str):
        return Account(name, entry)
    if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
        return None
    role = entry.get("role", LEGACY_ROLE)
    teams = entry.get("teams", [ALL_TEAMS] if role == LEGACY_ROLE and "role" not in entry else [])
    agent_id = entry.get("agent_id")
    if role not in ROLES or not isinstance(teams, list) or not all(isinstance(t, str) for t in teams) \
            or not (agent_id is None or isinstance(agent_id, str)):
        log.warning("user entry ignored: bad role, teams or agent_id", extra={"user_name": name[:64]})
        return None
    return Account(name, entry["hash"], role, tuple(teams), agent_id)


def users_path(settings: Settings) -> Path:
    return settings.data_dir / USERS_FILE


def read_accounts(path: Path, config_users: str = "") -> dict[str, Account]:
    """Every valid account: the user file, then `dashboard.users` ("name:hash,...", the old form)."""
    accounts: dict[str, Account] = {}
    if path.is_file():
        for name, entry in json.loads(path.read_text()).items():
            if (found := account_from_json(name, entry)) is not None:
                accounts[name] = found
    for entry in filter(None, (e.strip() for e in config_users.split(","))):
        name, _, encoded = entry.partition(":")
        accounts[name] = Account(name, encoded)
    return accounts


class Directory:
    """The accounts the store resolves acting users against; re-read when the file changes."""

    def __init__(self, path: Path, config_users: str = ""):
        self.path, self.config_users = Path(path), config_users
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._accounts: dict[str, Account] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Directory:
        return cls(users_path(settings), settings.dashboard.users)

    def accounts(self) -> dict[str, Account]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp or not self._accounts:
                self._accounts, self._stamp = read_accounts(self.path, self.config_users), stamp
            return self._accounts

    def principal(self, name: str, client: str | None = None) -> Principal:
        """Who a request acts for; AccessDenied for a name the user file does not hold."""
        account = self.accounts().get(name) if isinstance(name, str) else None
        if account is None:
            raise AccessDenied(f"unknown user {short(name)}")
        return Principal(account.name, account.role, account.teams, account.agent_id, client)


# ---- scope ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """The user a request acts for, as the store resolved them."""

    name: str
    role: str
    teams: tuple[str, ...] = ()
    agent_id: str | None = None
    client: str | None = None

    @property
    def scope(self) -> Scope:
        if self.role in ("admin", "analyst") or (self.role in ("supervisor", "coach") and ALL_TEAMS in self.teams):
            return FULL
        if self.role == "agent":
            return Scope(all=False, agent_id=self.agent_id or None)
        return Scope(all=False, teams=self.teams)

    @property
    def redacted(self) -> bool:
        return self.role == "analyst"


def _takes(fn: Callable) -> set[str]:
    return set(list(inspect.signature(fn).parameters)[1:])


def _in_scope(con: duckdb.DuckDBPyConnection, principal: Principal, call_id: object) -> None:
    if not isinstance(call_id, str):
        raise BadRequest("call_id must be a string")
    scope = principal.scope
    if scope.all:
        return
    row = con.execute(f"SELECT 1 FROM calls WHERE call_id = ? AND {queries.in_scope()}",
                      [call_id, *scope.params()]).fetchone()
    if row is None:  # the same answer for another agent's call and for no call at all
        raise AccessDenied(f"call {short(call_id)} is not one {principal.name} may see")


def _check(con: duckdb.DuckDBPyConnection, principal: Principal, kind: str, name: str, fn: Callable,
           params: dict, call_id: object) -> None:
    table, other = (READ_ROLES, OTHER_READS) if kind == "read" else (WRITE_ROLES, OTHER_WRITES)
    if principal.role not in table.get(name, other):
        article = "an" if principal.role[0] in "aeiou" else "a"
        raise AccessDenied(f"{article} {principal.role} may not {'read' if kind == 'read' else 'do'} {name}")
    if call_id is not None:
        _in_scope(con, principal, call_id)
    elif "call_id" not in _takes(fn) and not (kind == "read" and queries.takes_scope(fn)) \
            and name != "record_event" and not principal.scope.all:
        raise AccessDenied(f"{name} is only for users who see every call")


@dataclass
class ReadPlan:
    """A read the access check let through: the scope to pass and what to audit after it."""

    scope: Scope | None
    audit: str | None = None
    call_id: str | None = None


def plan_read(con: duckdb.DuckDBPyConnection, principal: Principal | None, name: str, params: object) -> ReadPlan:
    """Check a read for `principal` (None: a service, full access); AccessDenied when refused."""
    fn = queries.reader(name)
    call_id = params.get("call_id") if isinstance(params, dict) and "call_id" in _takes(fn) else None
    if principal is None:  # a service's own reads are not a person's views
        return ReadPlan(None)
    if isinstance(params, dict) and "call_id" in _takes(fn) and "call_id" not in params:
        call_id = None  # run_read says it is missing
    _check(con, principal, "read", name, fn, params if isinstance(params, dict) else {}, call_id)
    return ReadPlan(principal.scope, AUDITED_READS.get(name), call_id)


def redact(frame: pd.DataFrame, principal: Principal | None) -> pd.DataFrame:
    """What a redacted role gets: every transcript column replaced."""
    if principal is None or not principal.redacted:
        return frame
    out = frame.copy()
    for column in REDACTED_COLUMNS:
        if column in out.columns:
            out[column] = REDACTED if column == "text" else None
    return out


# ---- audit ---------------------------------------------------------------------------------------

@dataclass
class _Recent:
    """Views and playbacks recorded lately, so a page that re-reads a call every run (the live
    floor refreshes every 2 s) is one row per user and call per AUDIT_REPEAT_S, not thousands."""

    seen: dict[tuple, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self, key: tuple, now: float) -> bool:
        with self.lock:
            if now - self.seen.get(key, -AUDIT_REPEAT_S - 1) < AUDIT_REPEAT_S:
                return False
            if len(self.seen) > 10_000:
                self.seen = {k: t for k, t in self.seen.items() if now - t < AUDIT_REPEAT_S}
            return True

    def done(self, key: tuple, now: float) -> None:
        with self.lock:
            self.seen[key] = now


RECENT = _Recent()


def audit_due(principal: Principal, action: str, call_id: str | None, db: str) -> tuple | None:
    """The key to record a read under, or None when the same one was recorded moments ago."""
    key = (db, principal.name, action, call_id)
    return key if RECENT.due(key, time.monotonic()) else None


def audit_done(key: tuple) -> None:
    RECENT.done(key, time.monotonic())


def record(con: duckdb.DuckDBPyConnection, principal: Principal | None, action: str, call_id: str | None = None,
           detail: str | None = None) -> None:
    """Append one row to the audit trail (the only statement that ever touches it)."""
    con.execute("INSERT INTO audit_log (logged_at, user_name, role, action, call_id, detail, client) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [datetime.now(timezone.utc).replace(tzinfo=None), principal.name if principal else None,
                 principal.role if principal else SERVICE_ROLE, action, call_id,
                 None if detail is None else str(detail)[:500],
                 principal.client[:64] if principal and isinstance(principal.client, str) else None])


def record_read(con: duckdb.DuckDBPyConnection, principal: Principal, plan: ReadPlan) -> None:
    """The audit row of a read (a view, a playback); the file and its WAL stay 0600 after it."""
    record(con, principal, plan.audit or "view", plan.call_id)
    keep_private_con(con)


def run_write(con: duckdb.DuckDBPyConnection, principal: Principal | None, name: str, params: object) -> dict:
    """A named write action for `principal`, checked, and with its audit row in the same transaction."""
    fn = queries.writer(name)
    if not isinstance(params, dict):
        raise BadRequest("params must be an object")
    call_id = params.get("call_id") if "call_id" in _takes(fn) else None
    if name == "acknowledge_alert" and "alert_id" in params:
        call_id = _alert_call(con, params["alert_id"])
    if principal is not None:
        _check(con, principal, "write", name, fn, params, call_id)
        if name in ACTOR_PARAMS:
            params = {**params, ACTOR_PARAMS[name]: principal.name}
    if name not in AUDITED_WRITES:
        return queries.run_write(con, name, params)
    con.execute("BEGIN TRANSACTION")
    try:
        result = queries.run_write(con, name, params)
        for action, audited_call, detail in _audit_rows(name, params, result, call_id):
            record(con, principal, action, audited_call, detail)
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    if name in ("erase_calls", "expire_calls"):
        _checkpoint(con)
    return result


def _alert_call(con: duckdb.DuckDBPyConnection, alert_id: object) -> str:
    try:
        row = con.execute("SELECT call_id FROM alerts WHERE alert_id = ?", [int(alert_id)]).fetchone()
    except (TypeError, ValueError, duckdb.Error):
        raise BadRequest("acknowledge_alert: a parameter has the wrong type") from None
    return row[0] if row else ""  # no such alert: for a restricted user, refused like a call out of scope


def _audit_rows(name: str, params: dict, result: dict,
                call_id: str | None) -> list[tuple[str, str | None, str | None]]:
    """(action, call_id, detail) rows for a write that went through."""
    if name == "record_event":
        return [(params["event"], call_id, params.get("detail"))]
    if name == "acknowledge_alert":
        return [("acknowledge", call_id or None, f"alert {result.get('alert_id')}")]
    if name == "expire_calls":
        return retention.audit_rows(result)
    if name == "add_feedback":
        return [("feedback", call_id, f"{params.get('kind')} feedback #{result.get('feedback_id')}")]
    if name == "save_rules":  # which file, and the text's digests before and after
        return [("rules_save", None, f"{result['path']}: sha256 {result['before']} -> {result['after']} "
                                     f"({result['summary']})")]
    if name == "rerun_rules":
        return [("rules_run", None, f"re-run on stored calls with {result['rules']}")]
    if name in SCORECARD_AUDIT:
        return [(SCORECARD_AUDIT[name], call_id, result.get("detail"))]
    # erase_calls: one row per call erased; never the customer id, which is what is being erased
    who = f" requested by {params['requested_by']}" if params.get("requested_by") else ""
    how = "customer erasure" if params.get("customer_id") is not None else "call erasure"
    ids = result.get("erased_ids") or []
    if not ids:
        return [("delete", None, f"{how}: nothing stored{who}")]
    return [("delete", c, f"{how}: {result['rows']} rows of {len(ids)} call(s){who}") for c in ids]


def _checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Write the erasure into the file and drop the WAL that still holds the erased rows."""
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:  # another transaction is open: DuckDB checkpoints on its own later
        log.warning("checkpoint after erasure deferred", extra={"error": str(exc)[:200]})


# ---- QA scorecards (storage/scorecards.py) -------------------------------------------------------
# A coach of the call's team (or an admin) changes answers and resolves disputes; the agent disputes
# their own call's scorecard (the call_id scope check makes it their own); nobody else may. The
# reads (call_scorecard, scorecard_weekly, ...) are open to every role within its scope.
SCORECARD_AUDIT = {"set_scorecard_answer": "scorecard_edit", "dispute_scorecard": "scorecard_dispute",
                   "resolve_scorecard_dispute": "scorecard_resolve"}
WRITE_ROLES.update({"set_scorecard_answer": frozenset({"admin", "coach"}), "dispute_scorecard": frozenset({"agent"}),
                    "resolve_scorecard_dispute": frozenset({"admin", "coach"}),
                    "rescore_call": frozenset()})  # the services' own
AUDITED_WRITES.update(SCORECARD_AUDIT)
ACTOR_PARAMS.update(dict.fromkeys(SCORECARD_AUDIT, "by"))
