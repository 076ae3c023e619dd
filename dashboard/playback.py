"""Which recordings the dashboard may play: only WAVs the service kept inside its audio dir.

A call's `source` is a path stored in the database, and the database is not to be trusted with
paths (finding 3 of issue 10: a planted row made the dashboard serve /etc/hostname). So a source
plays only if, resolved with every symlink followed, it lies inside `live.audio_dir`, is a regular
file and ends in .wav. Everything else (a batch-analysed file elsewhere on disk, a symlink out of
the audio dir, a directory, a missing file) counts as "the audio of this call is not kept".
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from emotivoice.config import Settings
from storage.files import UnsafePath, inside

log = logging.getLogger(__name__)

NOT_KEPT = "The audio of this call is not kept, so it cannot be played."


def kept_recording(settings: Settings, source: str | None) -> Path | None:
    """The resolved path of a kept recording for `source`, or None when it may not be played."""
    if not source or not isinstance(source, str) or "\x00" in source:
        return None
    root = Path(settings.live.audio_dir)
    try:
        path = inside(root, source)
        st = os.stat(path, follow_symlinks=False)  # resolved: no symlink left anywhere in it
    except (UnsafePath, OSError, RuntimeError) as exc:
        log.info("recording not played", extra={"event": "audio_refused", "reason": type(exc).__name__})
        return None
    if not stat.S_ISREG(st.st_mode) or path.suffix.lower() != ".wav":
        log.info("recording not played", extra={"event": "audio_refused", "reason": "not a wav file"})
        return None
    return path


def call_source(db, call_id: str) -> str | None:
    """The stored source of a call (read through the store), or None."""
    rows = db.read("call_source", call_id=call_id)
    if rows.empty or rows.source.iloc[0] is None:
        return None
    value = rows.source.iloc[0]
    return value if isinstance(value, str) else None
