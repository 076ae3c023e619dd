"""Call audio kept per leg while the call runs, assembled into one WAV when it ends.

Each leg streams to its own raw file as frames arrive (memory stays flat for any call length).
At hang-up the legs become one WAV beside a sidecar JSON (agent, customer, start time), which is
exactly what `emotivoice analyze` reads, so the final batch pass runs on it unchanged. A write
error (a full disk) stops the recording, not the live analysis, and is reported on the call.
"""

from __future__ import annotations

import json
import logging
import time
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class CallRecorder:
    def __init__(self, audio_dir: Path, call_id: str, legs: list[str], rate: int):
        self.call_id, self.legs, self.rate = call_id, legs, rate
        self.day_dir = audio_dir / datetime.now(timezone.utc).strftime("%Y-%m-%d")
        self.partial_dir = audio_dir / ".partial"
        self.error: str | None = None
        self._files = {}
        try:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
            self._files = {leg: open(self._raw(leg), "wb") for leg in legs}
        except OSError as exc:
            self._fail(exc)

    def _raw(self, leg: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in leg)
        return self.partial_dir / f"{self.call_id}.{safe}.raw"

    def _fail(self, exc: OSError) -> None:
        self.error = f"call audio not kept: {exc.strerror or exc}"
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
            self.day_dir.mkdir(parents=True, exist_ok=True)
            path = self.day_dir / f"{self.call_id}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(len(legs))
                w.setsampwidth(2)
                w.setframerate(self.rate)
                w.writeframes(frames.tobytes())
            path.with_suffix(".json").write_text(json.dumps(metadata, default=str))
        except OSError as exc:
            self._fail(exc)
            return None
        self.discard()
        return path

    def discard(self) -> None:
        for f in self._files.values():
            f.close()
        for leg in self.legs:
            self._raw(leg).unlink(missing_ok=True)


def apply_retention(audio_dir: Path, days: int, now: float | None = None) -> int:
    """Delete kept call audio (and sidecars) older than `days`; 0 keeps everything. Returns files removed."""
    if days <= 0 or not audio_dir.is_dir():
        return 0
    cutoff = (now or time.time()) - timedelta(days=days).total_seconds()
    removed = 0
    for path in audio_dir.glob("*/*"):
        if path.parent.name == ".partial" or not path.is_file() or path.suffix not in (".wav", ".json"):
            continue
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    for day in audio_dir.iterdir():
        if day.is_dir() and day.name != ".partial" and not any(day.iterdir()):
            day.rmdir()
    if removed:
        log.info("call audio past retention deleted", extra={"files": removed, "days": days})
    return removed
