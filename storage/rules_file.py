"""The admin rules editor's side of the store: read the active rules TOML, check it, save it, and
re-run the rules on stored calls (dashboard/views/rules.py; issue 16).

The rules file is the store service's to write, like the database: the page names these queries
and actions, and storage/access.py lets only an admin run them (the page is hidden from the
others too, but that is not what keeps them out). Where the file is comes from this process's own
settings (`configure()`, called by the services, else the configured defaults), never from a
request: the request carries only the TOML text.

Checking uses the rules loader itself (analysis/insight/rules.py), which this layer may not
import: it runs `emotivoice rules check -` with the text on stdin (a fixed command, about 0.25 s),
so the dashboard, the CLI and the analysis agree on what a valid file is, and its errors name the
category and the key. A save checks again, then writes atomically and owner-only (temp file,
rename, 0600); analysis picks the new file up by its mtime, live calls at their next utterance.
A re-run is `emotivoice rules run` in a background process (it stores through the service that
owns the file, or the file itself), one at a time per database, its outcome kept for the page.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from emotivoice.config import REPO_ROOT, Settings, load_settings, shipped_rules
from emotivoice.storage.db import BadRequest
from emotivoice.storage.files import private_dir, write_private
from emotivoice.storage.queries import read_query, write_action

log = logging.getLogger(__name__)

MAX_RULES_CHARS = 200_000  # a rules file is a few KB; anything near this is not one
CHECK_TIMEOUT_S = 30.0
RERUN_TIMEOUT_S = 6 * 3600.0
CLI = [sys.executable, "-m", "emotivoice.app", "--log-level", "ERROR", "rules"]

_configured: Settings | None = None


def configure(settings: Settings) -> None:
    """Use these settings (the running service's, from its --config) for where the rules file is."""
    global _configured
    _configured = settings


def _settings() -> Settings:
    return _configured or load_settings()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _text_param(text: object) -> str:
    if not isinstance(text, str):
        raise BadRequest("text must be a string")
    if len(text) > MAX_RULES_CHARS:
        raise BadRequest(f"a rules file is at most {MAX_RULES_CHARS} characters")
    return text


def check_text(text: str, name: str) -> str:
    """The loader's verdict on `text`: its one-line summary, or BadRequest with the loader's error
    (which names the file, the category and the key, or the TOML line)."""
    try:
        proc = subprocess.run([*CLI, "check", "-", "--name", name], input=text, capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT_S, cwd=REPO_ROOT, env=_child_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadRequest(f"the rules could not be checked ({type(exc).__name__})") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        message = lines[-1].removeprefix("error: ") if lines else f"the rules check exited with {proc.returncode}"
        raise BadRequest(message[:600])
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "usable"


def _child_env() -> dict[str, str]:
    return {**os.environ, "EMOTIVOICE_DATA_DIR": str(_settings().data_dir)}


# ---- re-runs ------------------------------------------------------------------------------------

@dataclass
class Rerun:
    """The latest `emotivoice rules run` of one database, as the page shows it."""

    state: str = "never"  # never | running | done | failed
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str = ""
    started_by: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)


_RERUNS: dict[str, Rerun] = {}
_RERUN_LOCK = threading.Lock()


def _db_file(con: duckdb.DuckDBPyConnection) -> str:
    """The file this connection has open (the store's own, not a name from the request)."""
    return con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _watch(db: str, run: Rerun) -> None:
    """Wait for a re-run to end and keep its outcome (its last line: "N call(s) re-categorised, M changed")."""
    try:
        out, err = run.proc.communicate(timeout=RERUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        out, err = run.proc.communicate()
        err = f"stopped after {RERUN_TIMEOUT_S:.0f} s\n{err}"
    lines = [line for line in (out if run.proc.returncode == 0 else err).splitlines() if line.strip()]
    with _RERUN_LOCK:
        run.state = "done" if run.proc.returncode == 0 else "failed"
        run.summary = (lines[-1] if lines else f"exited with {run.proc.returncode}").removeprefix("error: ")[:300]
        run.finished_at = _utc_now()
        run.proc = None
    log.info("rules re-run finished", extra={"db": db, "state": run.state, "summary": run.summary})


def _active_text() -> str:
    """The text of the rules in use ("" when their file cannot be read: the analysis says why)."""
    active = _settings().analytics.active_rules_file()
    path = Path(active) if active else shipped_rules()
    try:
        return path.read_text()
    except OSError as exc:
        log.warning("rules file unreadable", extra={"path": str(path), "error": exc.strerror})
        return ""


# ---- the named queries and actions (admin only: storage/access.py) -----------------------------

@read_query
def rules_editor(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The active rules as text, where a save goes, and the latest re-run on this database."""
    config = _settings().analytics
    active = config.active_rules_file()
    text = _active_text()
    with _RERUN_LOCK:
        run = _RERUNS.get(_db_file(con), Rerun())
        row = {"active_file": active or "", "shipped": not active, "target_file": str(config.editor_target()),
               "rules_toml": text, "digest": _digest(text), "rerun_state": run.state, "rerun_summary": run.summary,
               "rerun_started_at": run.started_at, "rerun_finished_at": run.finished_at,
               "rerun_started_by": run.started_by}
    return pd.DataFrame([row])


@read_query
def check_rules(con: duckdb.DuckDBPyConnection, text: str) -> pd.DataFrame:
    """Whether `text` would load: ok and the loader's summary, or not ok and its error (a 200 either way)."""
    target = _settings().analytics.editor_target()
    try:
        return pd.DataFrame([{"ok": True, "message": check_text(_text_param(text), target.name)}])
    except BadRequest as exc:
        return pd.DataFrame([{"ok": False, "message": str(exc)}])


@write_action
def save_rules(con: duckdb.DuckDBPyConnection, text: str, expected_digest: str | None = None) -> dict:
    """Check `text` with the loader and, if it loads, replace the rules file with it (temp file,
    rename, 0600). `expected_digest` (what the editor started from) refuses a save over a file
    someone changed meanwhile. storage/access.py records it in the audit log."""
    text = _text_param(text)
    target = _settings().analytics.editor_target()
    before = _digest(_active_text())
    if expected_digest is not None and expected_digest != before:
        raise BadRequest("the rules changed since you opened them; reload the page to see the new version")
    summary = check_text(text, target.name)
    private_dir(target.parent)
    write_private(target, text)
    log.info("rules saved", extra={"path": str(target), "before": before, "after": _digest(text)})
    return {"path": str(target), "summary": summary, "before": before, "after": _digest(text)}


@write_action
def rerun_rules(con: duckdb.DuckDBPyConnection, started_by: str | None = None) -> dict:
    """Start `emotivoice rules run` on every stored call with the active rules, in the background;
    refused while one runs on this database. The page reads its outcome from rules_editor."""
    db = _db_file(con)
    active = _settings().analytics.active_rules_file() or str(shipped_rules())
    with _RERUN_LOCK:
        run = _RERUNS.get(db)
        if run is not None and run.state == "running":
            raise BadRequest("the rules are already being re-run on the stored calls")
        proc = subprocess.Popen([*CLI, "run", active, "--db", db], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, cwd=REPO_ROOT, env=_child_env())
        run = _RERUNS[db] = Rerun("running", _utc_now(), None, "", str(started_by or "")[:64], proc)
    threading.Thread(target=_watch, args=(db, run), name="rules-rerun", daemon=True).start()
    log.info("rules re-run started", extra={"db": db, "rules": active, "pid": proc.pid})
    return {"started": True, "rules": active, "pid": proc.pid}


def wait_for_rerun(db: Path | str, timeout_s: float = 120.0) -> Rerun:
    """The re-run of `db` once it is no longer running (for tests and the CLI), or as it is at the timeout."""
    deadline = time.monotonic() + timeout_s
    key = str(Path(db).resolve())
    while True:
        with _RERUN_LOCK:
            run = next((r for k, r in _RERUNS.items() if str(Path(k).resolve()) == key), Rerun())
            if run.state != "running" or time.monotonic() > deadline:
                return run
        time.sleep(0.1)
