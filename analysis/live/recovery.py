"""Crash recovery: at start, finish what a service that died (kill -9, the OOM killer, a power
cut) left behind, as well as the audio it had recorded allows.

The process that owns the store is the only one that writes calls, so at its start every call
still 'live' was left by a dead one. `Recovery.survey()` (before the listeners open) marks each
'interrupted' with the time it was cut and lists what is on disk for it; `start()` then works
through the list in a niced background thread, so the service takes new calls at once:

- legs under `<audio_dir>/.partial/` with their manifest (the service died mid-call; the
  recording front, analysis/live/recording.py, writes both for every call before analysis sees
  its audio, each leg at least every live.record_flush_s, and its disk probes are `.tmp` files
  removed here like write_private's, and like the kept WAV's half-written temp in its day
  folder when the process died assembling it; a native SIP leg's pjmedia WAV beside its raw leg, its
  header never completed by the killed writer, is read by size and adds what the raw leg had not
  yet been handed, CallRecorder.take_native_tails): assembled
  by CallRecorder.finish, exactly as at a hang-up, into the kept WAV and sidecar; then the batch
  pass (the finaliser `serve` uses) and the call is 'complete' with a warning that says where it
  was cut ("interrupted: the service stopped 23.4 s into the call at ...; audio up to then
  analysed");
- a finished WAV and no legs (it died during the batch pass: a call stays 'live' until that pass
  stores it): the batch pass is run again;
- no audio at all: the call stays 'interrupted', with a warning saying so.

Partial legs of a call that has no unfinished row are recovered the same way when they have a
manifest and some sound (the service died before the call's first save), and removed otherwise
(silence, no manifest to say how to put them together, or a call already stored complete).
Every name read from the directory must be one of ours (check_call_id) and every path lies
inside the audio dir; symlinks are never followed. A stale `<db>.server.json` of a dead process
is removed (`clear_stale_announcement`) before the store is served again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from emotivoice.analysis.live.finalize import Finalizer, FinishedCall, roles_to_channels
from emotivoice.analysis.live.nativewav import wav_layout
from emotivoice.analysis.live.recorder import DAY, PARTIAL, CallRecorder, Manifest
from emotivoice.config import LiveConfig
from emotivoice.storage.db import BadRequest, StorageError
from emotivoice.storage.files import UnsafePath, check_call_id, inside
from emotivoice.storage.store import Store, announcement

log = logging.getLogger(__name__)

# what CallRecorder writes (.raw), and pjmedia for a native SIP leg (.wav, connector/nativeleg.py)
PARTIAL_NAME = re.compile(r"^(?P<id>[^.]+)\.(?:(?P<leg>\d{1,3})\.(?P<kind>raw|wav)|json)$")


@dataclass
class Leftover:
    """One call a dead service left: its row (if any) and what is on disk for it."""

    call_id: str
    status: str | None = None  # 'live' | 'interrupted' | None: no unfinished row
    manifest: Manifest | None = None
    legs: list[Path] = field(default_factory=list)  # its partial leg files (raw, and native WAVs)
    files: list[Path] = field(default_factory=list)  # every partial file of it (legs, manifest)
    wav: Path | None = None  # a finished WAV: the batch pass was pending
    cut_at: datetime | None = None  # when audio last reached its legs (or the row was last stored)
    recorded_s: float = 0.0
    warning: str = ""  # "interrupted: ..." as stored when it was marked

    @property
    def assemble(self) -> bool:
        return self.manifest is not None and bool(self.legs)


def _leg_seconds(path: Path, size: int, rate: int) -> float:
    """Seconds a partial leg holds: a raw leg at the call's rate, a native WAV (its header's sizes
    never written by a killed writer) at the rate its header names, by file size."""
    if path.suffix != ".wav":
        return size // 2 / rate
    try:
        with open(path, "rb") as f:
            layout = wav_layout(f.read(4096))
    except (OSError, ValueError):
        layout = None
    return (size - layout[0]) // 2 / layout[1] if layout and size > layout[0] else 0.0


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _naive(when: datetime) -> str:
    """A timestamp as the store keeps them: naive UTC."""
    return str(when.astimezone(timezone.utc).replace(tzinfo=None))


def _pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:][:1] != "Z"
    except (OSError, ValueError):
        return True


def clear_stale_announcement(db_path: Path) -> bool:
    """Remove `<db>.server.json` when the process it names is gone (or is this one, which has
    not served the store yet: a restarted container often gets the dead one's pid back), so no
    client tries a service that is not there. True when one was removed."""
    note = announcement(db_path)
    try:
        pid = int(json.loads(note.read_text())["pid"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        pid = -1  # unreadable: nobody can use it either
    if pid > 0 and pid != os.getpid() and _pid_alive(pid):
        return False
    try:
        note.unlink()
    except OSError as exc:
        log.warning("stale store announcement not removed", extra={"path": str(note), "error": str(exc)})
        return False
    log.warning("stale store announcement removed (its process is gone)", extra={"path": str(note), "pid": pid})
    return True


class Recovery:
    """Finds and finishes the calls a dead service left (see the module docstring)."""

    def __init__(self, cfg: LiveConfig, store: Store, finalizer: Finalizer | None,
                 on_done: Callable[[str, str], None] | None = None):
        self.cfg, self.store, self.finalizer = cfg, store, finalizer
        self.audio_dir = Path(cfg.audio_dir)
        self.on_done = on_done or (lambda call_id, outcome: None)
        self.pending: list[Leftover] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- survey: synchronous, before the listeners (and new calls' legs) appear ----------------

    def survey(self) -> list[Leftover]:
        """Mark every unfinished call 'interrupted', clean what cannot be used, and return the
        calls that have audio to recover (also kept in `pending` for `start`)."""
        rows = self.store.read("unfinished_calls")
        found = self._partials()
        stored: set[str] | None = None
        leftovers = []
        for row in rows.itertuples():
            item = found.pop(row.call_id, None) or Leftover(row.call_id)
            item.status = row.status
            self._locate(item, row)
            leftovers.append(item)
        for call_id, item in found.items():  # legs of a call with no unfinished row
            if stored is None:
                stored = set(self.store.read("stored_call_ids").call_id)
            if item.manifest is None or call_id in stored:
                self._remove(item, "no manifest to assemble them by" if item.manifest is None
                             else "the call was stored complete")
                continue
            self._locate(item, None)
            leftovers.append(item)
        for item in leftovers:
            if item.status is not None:
                self._mark(item)
        self.pending = [i for i in leftovers if i.assemble or i.wav is not None]
        return self.pending

    def _partials(self) -> dict[str, Leftover]:
        """What `.partial/` holds, by call id; write_private's temp files left by a crash are removed."""
        partial = self.audio_dir / PARTIAL
        if partial.is_symlink() or not partial.is_dir():
            return {}
        found: dict[str, Leftover] = {}
        for path in sorted(partial.iterdir()):
            if path.is_symlink() or not path.is_file():
                log.warning("recovery left an unknown entry alone", extra={"path": str(path)})
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                self._unlink(path)
                continue
            match = PARTIAL_NAME.match(path.name)
            try:
                call_id = check_call_id(match["id"]) if match else None
                path = inside(self.audio_dir, path)
            except UnsafePath:
                call_id = None
            if call_id is None:
                log.warning("recovery left a file it did not make alone", extra={"path": str(path)})
                continue
            item = found.setdefault(call_id, Leftover(call_id))
            item.files.append(path)
            if match["leg"] is not None:
                item.legs.append(path)
            else:
                item.manifest = self._manifest(path, call_id)
        return found

    @staticmethod
    def _manifest(path: Path, call_id: str) -> Manifest | None:
        try:
            manifest = Manifest.parse(path.read_text())
        except (OSError, ValueError, UnsafePath) as exc:
            log.warning("recording manifest unreadable", extra={"call_id": call_id, "error": str(exc)})
            return None
        return manifest if manifest.call_id == call_id else None

    def _locate(self, item: Leftover, row) -> None:
        """Find the finished WAV and when and how far in the call was cut."""
        if item.manifest is not None:
            self._remove_day_temps(item.call_id, item.manifest.day)
        if item.assemble:
            stats = [(p, p.stat()) for p in item.legs]
            item.cut_at = _utc(max(s.st_mtime for _, s in stats))
            item.recorded_s = max(_leg_seconds(p, s.st_size, item.manifest.rate) for p, s in stats)
            return
        item.wav = self._finished_wav(item.call_id, item.manifest)
        if item.wav is not None:
            item.cut_at = _utc(item.wav.stat().st_mtime)
        elif row is not None:  # no audio: the last live save is the best account of the cut
            item.cut_at = pd.Timestamp(row.analyzed_at).to_pydatetime().replace(tzinfo=timezone.utc)
            item.recorded_s = float(row.duration_s) if pd.notna(row.duration_s) else 0.0
        if item.files:  # legs that cannot be assembled (no manifest, or a manifest and no leg)
            self._remove(item, "nothing to assemble")

    def _finished_wav(self, call_id: str, manifest: Manifest | None) -> Path | None:
        """`<day>/<call_id>.wav` as a regular file inside the audio dir, newest day first."""
        if manifest is not None:
            days = [manifest.day]
        elif self.audio_dir.is_dir():
            days = sorted((d.name for d in self.audio_dir.iterdir() if DAY.match(d.name)), reverse=True)
        else:
            days = []
        for day in days:
            try:
                path = inside(self.audio_dir, f"{day}/{call_id}.wav")
            except UnsafePath:
                continue
            candidate = self.audio_dir / day / f"{call_id}.wav"
            if not candidate.is_symlink() and path.is_file():
                return path
        return None

    def _mark(self, item: Leftover) -> None:
        at = item.cut_at or datetime.now(timezone.utc)
        if item.assemble:
            item.warning = (f"interrupted: the service stopped {item.recorded_s:.1f} s into the call at {_iso(at)}; "
                            "recovering the audio recorded up to then")
        elif item.wav is not None:
            item.warning = (f"interrupted: the service stopped before the final batch pass finished "
                            f"(the call had ended by {_iso(at)}); the pass is re-run")
        else:
            item.warning = (f"interrupted: the service stopped {item.recorded_s:.1f} s into the call at about "
                            f"{_iso(at)}; no call audio was kept, the live results stored up to then are all "
                            "there is")
        try:
            self.store.write("mark_interrupted", call_id=item.call_id, at=_naive(at), warning=item.warning)
        except StorageError as exc:
            log.error("unfinished call not marked interrupted", extra={"call_id": item.call_id, "error": str(exc)})
            return
        log.warning("call left unfinished by a stopped service", extra={
            "call_id": item.call_id, "cut_at": _iso(at), "recorded_s": round(item.recorded_s, 1),
            "recovery": "assemble" if item.assemble else "batch pass" if item.wav else "none (no audio)"})

    # ---- recovery: in the background --------------------------------------------------------

    def start(self) -> Recovery:
        if self.pending:
            self._thread = threading.Thread(target=self.run, name="live-recovery", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Recover no further call (the one in progress is re-done at the next start)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # after every live call's work
        except OSError:
            pass
        for item in self.pending:
            if self._stop.is_set():
                return
            try:
                outcome = self.recover(item)
            except Exception:  # one call's trouble must not keep the others unrecovered
                log.exception("call not recovered", extra={"call_id": item.call_id})
                outcome = "failed"
            self.on_done(item.call_id, outcome)

    def recover(self, item: Leftover) -> str:
        """Assemble (or find) the call's audio, run the batch pass, store the call complete with
        the warning that says where it was cut. Returns what became of it."""
        if item.assemble:
            recorder = CallRecorder.left_by_crash(self.audio_dir, item.manifest)
            try:
                if recorder.take_native_tails():  # what the tailer had not yet handed on
                    log.info("recovered call: native legs' unread audio added", extra={"call_id": item.call_id})
            except (OSError, ValueError, UnsafePath) as exc:
                log.warning("native legs not read: the raw legs are assembled as they are",
                            extra={"call_id": item.call_id, "error": str(exc)})
            if item.status is None and not recorder.has_sound():
                recorder.discard()
                return "removed (silent legs, never stored)"
            ended = item.cut_at or datetime.now(timezone.utc)
            audio = recorder.finish({**item.manifest.metadata, "ended_at": _naive(ended)})
            if audio is None:
                why = recorder.error or recorder.assembly_error or "its legs held no audio"  # a full disk:
                # the legs stay, and the next start tries again
                if item.status is not None:
                    self.store.write("mark_interrupted", call_id=item.call_id, at=_naive(ended),
                                     warning=f"{item.warning.split(';')[0]}; {why}")
                return f"left interrupted ({why})"
            channels = roles_to_channels(item.manifest.roles)
        else:
            audio, channels = item.wav, self._channels(item.call_id, item.wav)
        failed = self._batch_pass(item.call_id, audio, channels)
        cut = item.warning.split(";")[0] if item.warning else (
            f"interrupted: the service stopped {item.recorded_s:.1f} s into the call at {_iso(item.cut_at)}")
        if item.assemble:
            done = "audio up to then analysed" if failed is None and self.finalizer else "audio up to then kept"
        else:
            done = "the pass was re-run" if failed is None else "the re-run failed too; the live results are kept"
        warnings = [f"{cut}; {done}"] + ([failed] if failed else [])
        try:
            self.store.write("finish_interrupted", call_id=item.call_id, warnings=warnings, source=str(audio))
        except BadRequest:  # legs of a call never stored, and no batch pass stored it: the WAV is kept
            log.error("recovered call audio kept but not stored", extra={"call_id": item.call_id,
                                                                         "audio": str(audio)})
            return "audio kept, not stored"
        if not self.cfg.keep_audio:
            audio.unlink(missing_ok=True)
            audio.with_suffix(".json").unlink(missing_ok=True)
        log.info("interrupted call recovered", extra={"call_id": item.call_id, "warnings": warnings})
        return "complete"

    def _batch_pass(self, call_id: str, audio: Path, channels: tuple[str, ...]) -> str | None:
        """Run the finaliser on the call's audio; the warning to store when it failed, else None."""
        if self.finalizer is None or self.cfg.finalize != "batch":
            return None
        try:
            self.finalizer(FinishedCall(call_id, audio, channels))
        except Exception as exc:
            log.error("batch pass of a recovered call failed", extra={"call_id": call_id, "error": str(exc)})
            return f"final batch pass failed: {str(exc).splitlines()[0] if str(exc) else exc}"
        return None

    def _channels(self, call_id: str, wav: Path) -> tuple[str, ...]:
        """Channel roles of a finished WAV, from the speakers the live service stored (leg order)."""
        try:
            speakers = self.store.read("call_speakers", call_id=call_id).sort_values("leg")
            roles = list(speakers.role)
        except (StorageError, KeyError):
            roles = []
        if not roles:
            with wave.open(str(wav), "rb") as w:
                roles = ["unknown"] * w.getnchannels()
        return roles_to_channels(roles)

    # ---- files ------------------------------------------------------------------------------

    def _remove(self, item: Leftover, why: str) -> None:
        for path in item.files:
            self._unlink(path)
        log.info("stale partial recording removed", extra={"call_id": item.call_id, "files": len(item.files),
                                                           "reason": why})
        item.files, item.legs, item.manifest = [], [], None

    def _remove_day_temps(self, call_id: str, day: str) -> None:
        """A kept WAV or sidecar the dead process was writing (storage/files.py replacing_private:
        a hidden temp file beside it, renamed when whole). Its legs are still here to assemble it
        again, so the half-written temp goes."""
        folder = self.audio_dir / day
        if folder.is_symlink() or not folder.is_dir():
            return
        for path in folder.glob(f".{call_id}.*.tmp"):  # call_id passed check_call_id: no glob characters
            if path.is_file() and not path.is_symlink():
                self._unlink(path)
                log.info("half-written recording file removed", extra={"call_id": call_id, "file": path.name})

    def _unlink(self, path: Path) -> None:
        try:
            inside(self.audio_dir, path).unlink(missing_ok=True)
        except (OSError, UnsafePath) as exc:
            log.warning("stale partial file not removed", extra={"path": str(path), "error": str(exc)})
