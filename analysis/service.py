"""The batch analysis service: watches an inbox folder and analyses each new recording.

Recording systems drop finished calls into a folder; this picks each one up once it has stopped
growing, analyses it and stores it. `emotivoice watch` runs it inside the process that owns
the database file (storage/server.py), so the dashboard reads live data through that process.
A file that fails is reported once and not retried until it changes. With redaction on, a
recording here is redacted before its call is stored (analysis/redaction/keep.py): a WAV in
place, anything else as a WAV under `redacted/` (not watched) with the original removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from emotivoice.analysis.audio import AudioError
from emotivoice.analysis.pipeline import CallAnalyzer, make_call_id
from emotivoice.analysis.sink import analyze_and_store, known_call_ids
from emotivoice.storage.db import StorageError
from emotivoice.storage.store import Store

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".mp3", ".ogg", ".opus", ".flac", ".m4a", ".aac", ".wma", ".webm", ".mka", ".au"}


class InboxWatcher:
    def __init__(self, analyzer: CallAnalyzer, inbox: Path, store: Store, poll_s: float = 2.0):
        self.analyzer, self.inbox, self.store, self.poll_s = analyzer, inbox, store, poll_s
        self._sizes: dict[Path, int] = {}  # size seen last poll: a file is ready when it stops growing
        self._seen: dict[Path, tuple[float, int]] = {}  # (mtime, size) of files already handled

    def ready_files(self) -> list[Path]:
        ready = []
        for path in sorted(self.inbox.iterdir()):
            if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            stat = path.stat()
            if self._seen.get(path) == (stat.st_mtime, stat.st_size):
                continue
            if self._sizes.get(path) == stat.st_size:
                ready.append(path)
            self._sizes[path] = stat.st_size
        return ready

    def poll_once(self) -> list[str]:
        """Analyse every ready, not yet stored file; return the call ids stored."""
        stored_ids = []
        ready = self.ready_files()
        known = known_call_ids(self.store) if ready else set()
        for path in ready:
            stat = path.stat()
            self._seen[path] = (stat.st_mtime, stat.st_size)
            if make_call_id(path) in known:
                continue
            try:
                result = analyze_and_store(self.analyzer, path, self.store)
            except (AudioError, StorageError) as exc:
                log.error("recording not analysed", extra={"path": str(path), "error": str(exc)})
                continue
            if path.exists():  # rewritten in place by redaction: that is not a new recording
                stat = path.stat()
                self._seen[path], self._sizes[path] = (stat.st_mtime, stat.st_size), stat.st_size
            log.info("call stored", extra={"path": str(path), "call_id": result.call_id,
                                           "utterances": len(result.utterances)})
            stored_ids.append(result.call_id)
        return stored_ids

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        while not stop():
            self.poll_once()
            time.sleep(self.poll_s)
