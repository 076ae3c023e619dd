"""Call audio kept per leg while the call runs, assembled into one WAV when it ends.

Each leg streams to its own raw file as frames arrive (memory stays flat for any call length)
and is flushed to the OS at least every FLUSH_S, so a service killed mid-call (kill -9, the OOM
killer) loses at most that much of it. Beside the legs a manifest (`<call_id>.json`: legs in
order with their roles, rate, start, the sidecar's metadata) says how to put them together, so
a later process can assemble what a dead one recorded (analysis/live/recovery.py). At hang-up
the legs become one WAV beside a sidecar JSON (agent, customer, start time), which is exactly
what `emotivoice analyze` reads, so the final batch pass runs on it unchanged. A write error (a
full disk) stops the recording, not the live analysis, and is reported on the call.

Every name here is ours: the call id must pass storage.files.check_call_id (a connector makes
it with new_call_id; a source's own id never reaches this module) and legs are numbered, not
named. Each path is resolved and checked to lie inside the audio dir before it is opened; files
are created 0600 without following a planted symlink, directories 0700.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
import wave
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from emotivoice.storage.files import (UnsafePath, check_call_id, inside, open_private, private_dir, remove_kept,
                                      replacing_private, write_private)

log = logging.getLogger(__name__)

PARTIAL = ".partial"  # legs of calls still running (or left by a crash), under the audio dir
FLUSH_S = 0.25  # a leg's written audio reaches the OS at least this often (what a kill -9 can cost)
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # conditions an operator clears: worth waiting out


@dataclass(frozen=True)
class Manifest:
    """How a call's partial legs become its WAV and sidecar, written when the recording starts."""

    call_id: str
    day: str  # the <audio_dir>/<day>/ the WAV goes to
    rate: int
    legs: tuple[str, ...]  # the legs' own names (data from the source), in channel order
    roles: tuple[str, ...]  # each leg's speaker role: agent | customer | unknown
    started_at: str
    metadata: dict = field(default_factory=dict)  # what the sidecar gets

    @classmethod
    def parse(cls, text: str) -> Manifest:
        """A manifest read back from disk; ValueError (or UnsafePath) unless it is one of ours."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        legs, roles, rate = data.get("legs"), data.get("roles"), data.get("rate")
        if not (isinstance(legs, list) and isinstance(roles, list) and len(legs) == len(roles) >= 1
                and all(isinstance(x, str) for x in legs + roles)):
            raise ValueError("legs and roles must be lists of strings of one length")
        if not isinstance(rate, int) or not 1000 <= rate <= 192000:
            raise ValueError("bad rate")
        if not isinstance(data.get("day"), str) or not DAY.match(data["day"]):
            raise ValueError("bad day")
        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        return cls(check_call_id(data.get("call_id")), data["day"], rate, tuple(legs), tuple(roles),
                   str(data.get("started_at", "")), metadata)


class CallRecorder:
    """One call's legs on disk. Raises UnsafePath for a call id this service did not make."""

    def __init__(self, audio_dir: Path, call_id: str, legs: list[str], rate: int, day: str | None = None,
                 open_legs: bool = True):
        self.call_id = check_call_id(call_id)
        self.legs, self.rate = list(legs), rate
        self.audio_dir = Path(audio_dir)
        self.day = day or datetime.now(timezone.utc).strftime("%Y-%m-%d")
        self.error: str | None = None
        self.assembly_error: str | None = None  # finish() met a full disk: the legs wait for room
        self._files = {}
        self._flushed = time.monotonic()
        if not open_legs:
            return
        try:
            private_dir(self.audio_dir)
            private_dir(inside(self.audio_dir, PARTIAL))
            for leg in self.legs:  # one at a time, so a failure still closes and removes the earlier legs
                self._files[leg] = open_private(self._raw(leg), "wb")
        except (OSError, UnsafePath) as exc:  # UnsafePath: a symlink planted in the audio dir
            self._fail(exc)

    @classmethod
    def left_by_crash(cls, audio_dir: Path, manifest: Manifest) -> CallRecorder:
        """The recorder of a call whose service died, over the legs it left: `finish` assembles
        them exactly as at a hang-up, `discard` removes them."""
        return cls(audio_dir, manifest.call_id, list(manifest.legs), manifest.rate, manifest.day, open_legs=False)

    def _raw(self, leg: str) -> Path:
        """A leg's raw file: numbered by its place in the call, never named after the wire's label."""
        return inside(self.audio_dir, f"{PARTIAL}/{self.call_id}.{self.legs.index(leg)}.raw")

    def _native(self, leg: str) -> Path:
        """A leg pjmedia records itself (connector.media_path = "native"), beside its raw file."""
        return native_leg_path(self.audio_dir, self.call_id, self.legs.index(leg))

    def take_native_tails(self) -> int:
        """Crash recovery: append to each raw leg what its native WAV holds beyond it (the tailer
        hands a native leg on in pieces, so the raw file trails it by up to a piece and a flush).
        The raw leg is the native one, decimated, up to its end. Returns the legs extended."""
        from emotivoice.analysis.live.nativewav import read_leg

        extended = 0
        for leg in self.legs:
            native = self._native(leg)
            if native.is_symlink() or not native.is_file():
                continue
            audio = read_leg(native, self.rate)
            raw = self._raw(leg)
            have = raw.stat().st_size // 2 if raw.is_file() and not raw.is_symlink() else 0
            if len(audio) <= have:
                continue
            if not have:
                write_private(raw, audio.tobytes())
            else:
                fd = os.open(raw, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
                try:
                    os.ftruncate(fd, have * 2)  # a cut sample at its end goes
                    os.write(fd, audio[have:].tobytes())
                finally:
                    os.close(fd)
            extended += 1
        return extended

    def _manifest(self) -> Path:
        return inside(self.audio_dir, f"{PARTIAL}/{self.call_id}.json")

    def write_manifest(self, roles: list[str], metadata: dict) -> None:
        """Say how these legs become the call's WAV and sidecar, for a process that outlives this one."""
        if self.error:
            return
        try:
            self.put_manifest(roles, metadata)
        except (OSError, UnsafePath) as exc:
            self._fail(exc)

    def put_manifest(self, roles: list[str], metadata: dict) -> None:
        """write_manifest that raises, for a caller that retries a full disk (the recording front)."""
        manifest = Manifest(self.call_id, self.day, self.rate, tuple(self.legs), tuple(roles),
                            str(metadata.get("started_at", "")), metadata)
        write_private(self._manifest(), json.dumps(asdict(manifest), default=str))

    def _fail(self, exc: OSError | UnsafePath) -> None:
        self.error = f"call audio not kept: {getattr(exc, 'strerror', None) or exc}"
        log.error("call recording stopped", extra={"call_id": self.call_id, "error": str(exc)})
        self.discard()

    def write(self, leg: str, pcm: bytes) -> None:
        if self.error or leg not in self._files:
            return
        try:
            self._files[leg].write(pcm)
            now = time.monotonic()
            if now - self._flushed >= FLUSH_S:  # every leg, so a kill costs each at most FLUSH_S
                for f in self._files.values():
                    f.flush()
                self._flushed = now
        except OSError as exc:
            self._fail(exc)

    # ---- the recording front's path (analysis/live/recording.py): its writer thread opens the
    # legs when it can and appends batched audio with raw writes, so a failed write (ENOSPC) says
    # exactly what reached the file and the rest can be written again once there is room

    def open_legs(self) -> None:
        """Create every leg's file not yet open. OSError (a full or faulted disk) leaves the rest
        to a later attempt; UnsafePath (a symlink planted in the audio dir) is final."""
        private_dir(self.audio_dir)
        private_dir(inside(self.audio_dir, PARTIAL))
        for leg in self.legs:
            if leg not in self._files:
                self._files[leg] = open_private(self._raw(leg), "wb")

    def append(self, leg: str, data: bytes | memoryview) -> int:
        """Write what the OS takes of `data` to the leg's file at once (no buffer of ours in
        between); the bytes written. OSError when nothing could be written."""
        return os.write(self._files[leg].fileno(), data)

    def close_legs(self) -> None:
        """The recording is complete: close the legs (finish or discard come later)."""
        for f in self._files.values():
            f.close()

    def fail(self, exc: OSError | UnsafePath) -> None:
        """Give the recording up for good (reported on the call) and remove what it had."""
        self._fail(exc)

    def _leg_audio(self, leg: str) -> np.ndarray:
        """A leg's samples; a leg a crash left without a file, or cut mid-sample, keeps what is whole."""
        try:
            data = self._raw(leg).read_bytes()
        except FileNotFoundError:
            if self._files:  # a running recorder opened every leg: a missing one is an error
                raise
            data = b""
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")

    def has_sound(self) -> bool:
        """Whether any leg holds a non-zero sample (connectors send digital silence without media)."""
        try:
            return any(self._leg_audio(leg).any() for leg in self.legs)
        except (OSError, UnsafePath):
            return False

    def finish(self, metadata: dict) -> Path | None:
        """Close the legs and write `<day>/<call_id>.wav` (one channel per leg) and its sidecar.
        The legs are removed only once both are written, so a crash before then leaves them to
        be assembled again (analysis/live/recovery.py).

        A disk that is full (or read-only) now costs nothing: the legs stay, `assembly_error`
        says why, and finish() may be called again once there is room (the finaliser does,
        analysis/live/writer.py). Any other failure ends the recording (`error`)."""
        if self.error:
            return None
        self.assembly_error = None
        for f in self._files.values():
            f.close()
        try:
            legs = [self._leg_audio(leg) for leg in self.legs]
            n = max((len(x) for x in legs), default=0)
            if n == 0:
                self.discard()
                return None
            frames = np.zeros((n, len(legs)), dtype="<i2")
            for i, x in enumerate(legs):
                frames[: len(x), i] = x
            private_dir(inside(self.audio_dir, self.day))
            path = inside(self.audio_dir, f"{self.day}/{self.call_id}.wav")
            with replacing_private(path) as f, wave.open(f, "wb") as w:  # whole or not at all
                w.setnchannels(len(legs))
                w.setsampwidth(2)
                w.setframerate(self.rate)
                w.writeframes(frames.tobytes())
            write_private(inside(self.audio_dir, f"{self.day}/{self.call_id}.json"),
                          json.dumps(metadata, default=str))
        except OSError as exc:
            if exc.errno in DISK_FULL:  # the legs are whole on disk: try again when there is room
                self.assembly_error = f"kept WAV not written yet: {exc.strerror or exc}"
                log.error("call recording not assembled; its legs are kept and it is tried again",
                          extra={"call_id": self.call_id, "error": str(exc)})
                return None
            self._fail(exc)
            return None
        except UnsafePath as exc:
            self._fail(exc)
            return None
        self.discard()
        return path

    def discard(self) -> None:
        """Close and remove the legs, the manifest first: legs without one are never assembled."""
        for f in self._files.values():
            f.close()
        try:
            self._manifest().unlink(missing_ok=True)
        except (OSError, UnsafePath) as exc:
            log.warning("call recording manifest not removed", extra={"call_id": self.call_id, "error": str(exc)})
        for leg in self.legs:
            for path in (self._raw, self._native):
                try:
                    path(leg).unlink(missing_ok=True)
                except (OSError, UnsafePath) as exc:
                    log.warning("call recording leg not removed", extra={"call_id": self.call_id, "error": str(exc)})


def native_leg_path(audio_dir: Path, call_id: str, index: int) -> Path:
    """Where pjmedia records a call's leg number `index` (connector.media_path = "native")."""
    return inside(Path(audio_dir), f"{PARTIAL}/{check_call_id(call_id)}.{int(index)}.wav")


def create_native_leg(audio_dir: Path, call_id: str, index: int) -> Path:
    """Create the leg's native WAV, empty, owner-only (0600, no symlink followed), for pjmedia to
    open: it opens with fopen("wb"), which keeps an existing file's mode. OSError, UnsafePath."""
    private_dir(Path(audio_dir))
    private_dir(inside(Path(audio_dir), PARTIAL))
    path = native_leg_path(audio_dir, call_id, index)
    with open_private(path, "wb"):
        pass
    return path


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
    """Delete kept call audio (and sidecars) older than `days`, and legs (and manifests) of calls
    that never finished (a crash) older than that; 0 keeps everything. Only regular files that resolve
    inside `audio_dir` are touched: a symlink planted there is never followed. Returns files removed."""
    if days <= 0 or not audio_dir.is_dir():
        return 0
    cutoff = (now or time.time()) - timedelta(days=days).total_seconds()
    removed = 0
    for path in audio_dir.glob("*/*"):
        partial = path.parent.name == PARTIAL  # legs (raw, and native WAVs) and manifests of unfinished calls
        kept = path.suffix in ((".raw", ".json", ".wav") if partial else (".wav", ".json"))
        if not kept or path.is_symlink() or path.parent.is_symlink() or not path.is_file():
            continue
        try:
            if path.stat().st_mtime < cutoff:
                removed += remove_kept(audio_dir, path)  # as `emotivoice delete` removes a call's audio
        except (OSError, UnsafePath) as exc:
            log.warning("retention skipped a file", extra={"path": str(path), "error": str(exc)})
    for day in audio_dir.iterdir():
        if day.is_dir() and not day.is_symlink() and day.name != PARTIAL and not any(day.iterdir()):
            day.rmdir()
    if removed:
        log.info("call audio past retention deleted", extra={"files": removed, "days": days})
    return removed
