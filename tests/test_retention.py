"""Retention (issue 15): audio, transcripts and calls past their policy's days go, audited.

Three finished calls of different ages and one live call, on a real file behind a real store
service; kept audio with old and new mtimes. `emotivoice retention run` (through the service that
owns the file, then with the file opened directly) must take out exactly what the policy says.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from emotivoice.app import cli
from emotivoice.config import load_settings
from emotivoice.app.retention import Periodic, audio_days, run_retention
from emotivoice.storage.access import AccessDenied, Directory
from emotivoice.storage.db import BadRequest
from emotivoice.storage.queries import run_read
from emotivoice.storage.server import StoreServer
from emotivoice.storage.store import FileStore
from tests.test_access import HASH, USERS
from tests.test_storage import record

NOW = datetime(2026, 6, 1, 12, 0, 0)
AGES = {"c-old": 400, "c-mid": 100, "c-new": 5, "c-live": 400}  # days before NOW


def saved(server: StoreServer, call_id: str) -> None:
    rec = record(call_id, n=2, text="my card is four one one one")
    started = (NOW - timedelta(days=AGES[call_id])).isoformat(sep=" ")
    rec.call.update(started_at=started, source=None, status="live" if call_id == "c-live" else "complete",
                    summary=json.dumps({"reason": {"text": "my card is four one one one"}}),
                    summary_headline="Called about: my card is four one one one")
    server.save_call(rec)


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dashboard_users.json").write_text(json.dumps({n: a.to_json() for n, a in USERS.items()} | {"old": HASH}))
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(data))
    monkeypatch.setenv("EMOTIVOICE_RETENTION_TRANSCRIPT_DAYS", "90")
    monkeypatch.setenv("EMOTIVOICE_RETENTION_METADATA_DAYS", "365")
    monkeypatch.setenv("EMOTIVOICE_RETENTION_POLICY_NAME", "pci")
    for name in ("EMOTIVOICE_DB_PATH", "EMOTIVOICE_DASHBOARD_USERS", "EMOTIVOICE_RETENTION_AUDIO_DAYS"):
        monkeypatch.delenv(name, raising=False)
    return load_settings()


def kept_audio(settings, call_id: str, age_days: float) -> list:
    day = settings.live.audio_dir / "2026-01-01"
    day.mkdir(parents=True, exist_ok=True)
    files = [day / f"{call_id}.wav", day / f"{call_id}.json"]
    at = (NOW - timedelta(days=age_days)).replace(tzinfo=timezone.utc).timestamp()
    for f in files:
        f.write_bytes(b"RIFF")
        os.utime(f, (at, at))
    return files


def audit(con) -> list[tuple]:
    return con.execute("SELECT role, action, call_id, detail FROM audit_log ORDER BY audit_id").fetchall()


def test_the_default_policy_keeps_todays_30_days_of_audio_and_everything_else(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert audio_days(settings) == 30 == settings.live.retention_days
    assert (settings.retention.transcript_days, settings.retention.metadata_days) == (0, 0)  # 0: kept


def test_retention_run_takes_out_what_the_policy_says_and_audits_it(env, capsys):
    old_audio = kept_audio(env, "c-mid", 45)  # older than 30 days of audio
    new_audio = kept_audio(env, "c-new", 5)
    erased_audio = kept_audio(env, "c-old", 1)  # recent file of a call past metadata_days: goes with its call
    with StoreServer(env.db_path, users=Directory.from_settings(env)) as server:
        for call_id in AGES:
            saved(server, call_id)
        assert cli.main(["retention", "run", "--now", NOW.isoformat()]) == 0  # through the service
        out = capsys.readouterr().out
        assert "retention policy pci (audio 30 d, transcripts 90 d, metadata 365 d" in out
        assert "4 audio file(s), 1 transcript(s), 1 call(s)" in out

        con = server.con
        calls = dict(con.execute("SELECT call_id, transcript_expired_at FROM calls").fetchall())
        assert set(calls) == {"c-mid", "c-new", "c-live"}  # c-old erased; a live call is never touched
        assert calls["c-mid"] == NOW and calls["c-new"] is None and calls["c-live"] is None
        for table in ("utterances", "speakers", "emotion_scores"):
            assert not con.execute(f"SELECT 1 FROM {table} WHERE call_id = 'c-old'").fetchall(), table
        mid = con.execute("SELECT text, words, phrases FROM utterances WHERE call_id = 'c-mid'").fetchall()
        assert mid and all(v is None for row in mid for v in row)  # what was said, gone
        row = con.execute("SELECT summary, summary_headline, duration_s FROM calls WHERE call_id = 'c-mid'").fetchone()
        assert row[:2] == (None, None) and row[2] == 10.0  # the metadata stays
        emotions = con.execute("SELECT count(*) FROM emotion_scores WHERE call_id = 'c-mid'").fetchone()[0]
        assert emotions == 4
        new = con.execute("SELECT text FROM utterances WHERE call_id = 'c-new'").fetchall()
        assert all("four one one one" in t for (t,) in new)
        assert not any(f.exists() for f in old_audio + erased_audio) and all(f.exists() for f in new_audio)
        # search forgets an expired transcript and an erased call (its postings are keyed apart from call_id)
        assert {c for (c,) in con.execute("SELECT call_id FROM search_calls").fetchall()} == {"c-new"}
        assert set(run_read(con, "search_utterances", {"search": "card"}).call_id) == {"c-new"}

        rows = [r for r in audit(con) if r[1] == "retention"]
        assert ("service", "retention", "c-mid", "policy pci: transcript older than 90 days removed") in rows
        assert ("service", "retention", "c-old", "policy pci: call older than 365 days erased") in rows
        run_row = [r for r in rows if r[2] is None]
        assert len(run_row) == 1 and "2 audio file(s) removed" in run_row[0][3]  # by age; c-old's with its call
        assert not any("four one one one" in str(r) for r in audit(con))

        # a second run finds nothing more due, and says so in the audit log
        again = run_retention(env, server, now=NOW.isoformat())
        assert (again.audio_files, again.transcripts, again.calls) == (0, 0, 0)
        assert len([r for r in audit(con) if r[1] == "retention" and r[2] is None]) == 2

    # no user may ask for it through the store; the file opened directly works as the service did
    with pytest.raises(AccessDenied):
        FileStore(env.db_path, user="boss").write("expire_calls", transcript_days=1)
    with pytest.raises(BadRequest, match="transcript_days must be a whole number"):
        FileStore(env.db_path).write("expire_calls", transcript_days="1; DROP TABLE calls")
    later = (NOW + timedelta(days=3000)).isoformat()
    assert cli.main(["retention", "run", "--now", later]) == 0
    left = FileStore(env.db_path).read("find_calls")
    assert set(left.call_id) == {"c-live"}


def test_a_service_applies_retention_at_start_and_every_period(env, monkeypatch):
    runs = []
    monkeypatch.setattr("emotivoice.app.retention.run_retention", lambda s, store: runs.append(store))
    clock = iter([0.0, 10.0, 3599.0, 3601.0, 3700.0, 7300.0])
    periodic = Periodic(env, "the-store", lambda: next(clock))
    for _ in range(6):
        periodic.tick()
    assert runs == ["the-store"] * 3  # at 0, at 3601 and at 7300 s


def test_a_failed_run_does_not_stop_the_service(env, monkeypatch, caplog):
    def fail(settings, store):
        raise OSError("disk gone")

    monkeypatch.setattr("emotivoice.app.retention.run_retention", fail)
    Periodic(env, None, time.monotonic).tick()
    assert "retention run failed" in caplog.text
