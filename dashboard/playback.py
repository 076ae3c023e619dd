"""Which recordings the dashboard may play: only recordings inside the directories it keeps them in.

A call's `source` is a path stored in the database, and the database is not to be trusted with
paths (finding 3 of issue 10: a planted row made the dashboard serve /etc/hostname). So a source
plays only if, resolved with every symlink followed, it lies inside `live.audio_dir`, the inbox or
a directory named in `dashboard.recording_dirs`, is a regular file and has an audio suffix.
Everything else (a file elsewhere on disk, a symlink out of those dirs, a directory, a missing
file) counts as "the audio of this call is not kept".
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from emotivoice.config import Settings
from emotivoice.storage.files import UnsafePath, inside

log = logging.getLogger(__name__)

NOT_KEPT = "The audio of this call is not kept, so it cannot be played."


AUDIO_SUFFIXES = {".wav", ".mp3", ".ogg", ".opus", ".flac", ".m4a"}  # what browsers play and analyze reads


def recording_roots(settings: Settings) -> list[Path]:
    """Where playable recordings may lie: the live service's audio dir, the recordings inbox, and
    the directories an admin named in `dashboard.recording_dirs` (where batch recordings live)."""
    extra = [Path(d.strip()).expanduser() for d in settings.dashboard.recording_dirs.split(",") if d.strip()]
    return [Path(settings.live.audio_dir), Path(settings.inbox_dir), *extra]


def kept_recording(settings: Settings, source: str | None) -> Path | None:
    """The resolved path of a kept recording for `source`, or None when it may not be played."""
    if not source or not isinstance(source, str) or "\x00" in source:
        return None
    for root in recording_roots(settings):
        try:
            path = inside(root, source)
            st = os.stat(path, follow_symlinks=False)  # resolved: no symlink left anywhere in it
        except (UnsafePath, OSError, RuntimeError):
            continue
        if stat.S_ISREG(st.st_mode) and path.suffix.lower() in AUDIO_SUFFIXES:
            return path
    log.info("recording not played", extra={"event": "audio_refused", "reason": "not a recording in a playable dir"})
    return None


def call_source(db, call_id: str, query: str = "call_source") -> str | None:
    """The stored source of a call (read through the store; "playback_source" when it is to be played), or None."""
    rows = db.read(query, call_id=call_id)
    if rows.empty or rows.source.iloc[0] is None:
        return None
    value = rows.source.iloc[0]
    return value if isinstance(value, str) else None
