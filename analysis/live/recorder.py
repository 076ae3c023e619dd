"""Call audio kept per leg while the call runs, assembled into one WAV when it ends.

Each leg streams to its own raw file as frames arrive (memory stays flat for any call length).
At hang-up the legs become one WAV beside a sidecar JSON (agent, customer, start time), which is
exactly what `emotivoice analyze` reads, so the final batch pass runs on it unchanged. A write
error (a full disk) stops the recording, not the live analysis, and is reported on the call.

Every name here is ours: the call id must pass storage.files.check_call_id (a connector makes
it with new_call_id; a source's own id never reaches this module) and legs are numbered, not
named. Each path is resolved and checked to lie inside the audio dir before it is opened; files
are created 0600 without following a planted symlink, directories 0700.
"""

from __future__ import annotations

import json
import logging
import time
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from storage.files import UnsafePath, check_call_id, inside, open_private, private_dir, write_private

log = logging.getLogger(__name__)

PARTIAL = ".partial"  # legs of calls still running (or left by a crash), under the audio dir


class CallRecorder:
    """One call's legs on disk. Raises UnsafePath for a call id this service did not make."""

    def __init__(self, audio_dir: Path, call_id: str, legs: list[str], rate: int):
        self.call_id = check_call_id(call_id)
        self.legs, self.rate = list(legs), rate
        self.audio_dir = Path(audio_dir)
        self.day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        self.error: str | None = None
        self._files = {}
        try:
            private_dir(self.audio_dir)
            private_dir(inside(self.audio_dir, PARTIAL))
            for leg in self.legs:  # one at a time, so a failure still closes and removes the earlier legs
                self._files[leg] = open_private(self._raw(leg), "wb")
        except (OSError, UnsafePath) as exc:  # UnsafePath: a symlink planted in the audio dir
            self._fail(exc)

    def _raw(self, leg: str) -> Path:
        """A leg's raw file: numbered by its place in the call, never named after the wire's label."""
        return inside(self.audio_dir, f"{PARTIAL}/{self.call_id}.{self.legs.index(leg)}.raw")

    def _fail(self, exc: OSError | UnsafePath) -> None:
        self.error = f"call audio not kept: {getattr(exc, 'strerror', None) or exc}"
        log.error("call recording stopped", extra={"call_id": self.call_id, "error": str(exc)})
        self.discard()

    def write(self, leg: str, pcm: bytes) -> None:
        if self.error or leg not in self._files:
            return
        try:
            self._files[leg].write(pcm)
        except OSError as exc:
            self._fail(exc)

    def finish(self, metadata: dict) -> Path | None:
        """Close the legs and write `<day>/<call_id>.wav` (one channel per leg) and its sidecar."""
        if self.error:
            return None
        for f in self._files.values():
            f.close()
        try:
            legs = [np.fromfile(self._raw(leg), dtype="<i2") for leg in self.legs]
            n = max((len(x) for x in legs), default=0)
            if n == 0:
                self.discard()
                return None
            frames = np.zeros((n, len(legs)), dtype="<i2")
            for i, x in enumerate(legs):
                frames[: len(x), i] = x
            private_dir(inside(self.audio_dir, self.day))
            path = inside(self.audio_dir, f"{self.day}/{self.call_id}.wav")
            with open_private(path, "wb") as f, wave.open(f, "wb") as w:
                w.setnchannels(len(legs))
                w.setsampwidth(2)
                w.setframerate(self.rate)
                w.writeframes(frames.tobytes())
            write_private(inside(self.audio_dir, f"{self.day}/{self.call_id}.json"),
                          json.dumps(metadata, default=str))
        except (OSError, UnsafePath) as exc:
            self._fail(exc)
            return None
        self.discard()
        return path

    def discard(self) -> None:
        for f in self._files.values():
            f.close()
        for leg in self.legs:
            try:
                self._raw(leg).unlink(missing_ok=True)
            except (OSError, UnsafePath) as exc:
                log.warning("call recording leg not removed", extra={"call_id": self.call_id, "error": str(exc)})


def open_recorder(audio_dir: Path, call_id: str, legs: list[str],
                  rates: set[int]) -> tuple[CallRecorder | None, str | None]:
    """A call's recorder, or None and the reason to show on the call. A call id that is not
    one of ours gets no recording (and never a path): its analysis goes on without one."""
    if len(rates) != 1:
        return None, "legs at different sample rates: call audio not kept"
    try:
        recorder = CallRecorder(audio_dir, call_id, legs, next(iter(rates)))
    except UnsafePath as exc:
        log.error("call audio not kept: the call id is not one this service made",
                  extra={"call_id": str(call_id)[:80], "error": str(exc)})
        return None, "the call id is not one this service made: call audio not kept"
    return recorder, recorder.error


def apply_retention(audio_dir: Path, days: int, now: float | None = None) -> int:
    """Delete kept call audio (and sidecars) older than `days`, and legs of calls that never
    finished (a crash) older than that; 0 keeps everything. Only regular files that resolve
    inside `audio_dir` are touched: a symlink planted there is never followed. Returns files removed."""
    if days <= 0 or not audio_dir.is_dir():
        return 0
    cutoff = (now or time.time()) - timedelta(days=days).total_seconds()
    removed = 0
    for path in audio_dir.glob("*/*"):
        kept = path.suffix in (".wav", ".json") if path.parent.name != PARTIAL else path.suffix == ".raw"
        if not kept or path.is_symlink() or path.parent.is_symlink() or not path.is_file():
            continue
        try:
            inside(audio_dir, path)
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        except (OSError, UnsafePath) as exc:
            log.warning("retention skipped a file", extra={"path": str(path), "error": str(exc)})
    for day in audio_dir.iterdir():
        if day.is_dir() and not day.is_symlink() and day.name != PARTIAL and not any(day.iterdir()):
            day.rmdir()
    if removed:
        log.info("call audio past retention deleted", extra={"files": removed, "days": days})
    return removed
