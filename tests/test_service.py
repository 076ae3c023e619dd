"""The inbox analysis service: picks up finished recordings once, and survives bad ones."""

import shutil

import pytest

from analysis.pipeline import CallAnalyzer
from analysis.service import InboxWatcher
from conftest import DEMO
from storage.queries import list_calls

pytestmark = pytest.mark.slow


def test_new_recordings_are_stored_once_and_bad_ones_skipped(settings, tmp_path):
    from dataclasses import replace

    inbox, db = tmp_path / "inbox", tmp_path / "calls.duckdb"
    inbox.mkdir()
    analyzer = CallAnalyzer(replace(settings, transcription=replace(settings.transcription, model="tiny.en")))
    watcher = InboxWatcher(analyzer, inbox, db, poll_s=0)
    (inbox / "broken.wav").write_bytes(b"RIFF....garbage")
    (inbox / "notes.txt").write_text("not audio")
    shutil.copy(DEMO, inbox / "call-1.opus")
    assert watcher.poll_once() == []  # first look: sizes noted, nothing is known to be finished
    stored = watcher.poll_once()
    assert len(stored) == 1 and stored[0].startswith("call-1-")
    assert watcher.poll_once() == []  # handled files are not analysed again
    assert list(list_calls(db).call_id) == stored
