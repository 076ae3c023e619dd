"""A live call's recording as it goes, and the writer thread that puts it on disk.

RecordingFront (analysis/live/recording.py) mixes in RecordingWriter and owns the state it works on
(`_calls`, `_lock`, `_queued`, the counters and the fault); media threads append under the lock,
this thread takes what they appended and writes it outside the lock.

Media threads never touch the disk: one writer thread ("live-recorder") opens each call's legs
(analysis/live/recorder.py, with the manifest crash recovery assembles them by) and appends
every leg's new audio with raw writes at least every `live.record_flush_s` (0.25 s), so a kill
-9 costs at most that much. A write the disk refuses (ENOSPC, a read-only remount) keeps its
audio queued and is tried again every second; nothing queued is lost when space returns. A
call's CallEnded reaches the analysis inbox only once its recording is complete on disk and
closed, so the finaliser (and the batch pass) always read the whole recording.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field

from emotivoice.analysis.live.call import started_metadata
from emotivoice.analysis.live.messages import CallEnded, CallStarted
from emotivoice.analysis.live.recorder import PARTIAL, CallRecorder
from emotivoice.storage.files import UnsafePath, inside, private_dir, write_private

log = logging.getLogger("emotivoice.analysis.live.recording")

RETRY_S = 1.0  # a disk that refused a write is tried again this often
KEEP_SUMMARIES = 10_000  # finished calls' recording figures kept for the engine and benchmarks
MiB = 1 << 20


@dataclass
class LegRecording:
    """One leg's recording as it goes: what waits for the disk and what was made of the stream."""

    rate: int
    buf: bytearray = field(default_factory=bytearray)
    since: float | None = None  # monotonic time the oldest byte in `buf` arrived
    next_seq: int = 0
    frames: int = 0  # frames recorded as sent
    samples: int = 0  # samples recorded, silence included
    filled_frames: int = 0  # seq gaps (the source never sent them) recorded as silence
    jumps: int = 0  # seq jumps beyond max_gap_fill_s: a restarted stream, not filled
    late_frames: int = 0  # older than the leg's recording (a repeat, or out of order): not recorded
    owed_samples: int = 0  # audio past the memory bound, to be recorded as silence
    lost_samples: int = 0  # all of it, for the report

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    def report(self) -> dict:
        return {"seconds": round(self.seconds, 3), "frames": self.frames, "filled_frames": self.filled_frames,
                "jumps": self.jumps, "late_frames": self.late_frames,
                "lost_s": round(self.lost_samples / self.rate, 3)}


@dataclass
class CallRecording:
    """One call's recording: its legs, its recorder (or why it has none), and its end once it came."""

    started: CallStarted
    recorder: CallRecorder | None
    why_not: str | None  # no recording: why (shown on the call)
    roles: list[str]
    legs: dict[str, LegRecording]
    opened: bool = False
    ended: CallEnded | None = None
    sound: bool = False  # some frame carried a non-zero sample


@dataclass(frozen=True)
class RecordingSummary:
    """A finished call's recording: per leg what was kept (analysis/live/engine.py shows it)."""

    call_id: str
    recorder: CallRecorder | None
    why_not: str | None
    legs: dict[str, dict]  # leg -> LegRecording.report()
    sound: bool

    @property
    def error(self) -> str | None:
        return self.why_not or (self.recorder.error if self.recorder else None)



class RecordingWriter:
    """RecordingFront's writer thread ("live-recorder") and its handling of disk faults."""

    # ---- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._running:
                    self._lock.wait(self.cfg.record_flush_s)
                stopping = not self._running
            if time.monotonic() >= self._next_try or stopping:
                try:
                    self._write_all()
                except Exception:  # a bug here must not stop every call's recording
                    log.exception("recording writer pass failed")
            if stopping:
                self._close_open()
                return

    def _write_all(self) -> None:
        wrote_any = False
        for rec in list(self._calls.values()):
            ok, wrote = self._write(rec)
            wrote_any |= wrote
            if not ok:
                self._faulted()
                return
            if rec.ended is not None and self._complete(rec):
                self._finish(rec)
        if wrote_any:
            self._cleared()
        elif self.fault:
            self._probe()

    def _write(self, rec: CallRecording) -> tuple[bool, bool]:
        """(the disk took everything asked of it, something was written) for one call."""
        if rec.recorder is None or rec.recorder.error:
            self._drop_buffers(rec)
            return True, False
        if not rec.opened:
            try:
                rec.recorder.open_legs()
                rec.recorder.put_manifest(rec.roles, {**started_metadata(rec.started), "dropped_frames": 0,
                                                      "mode": "live"})
                rec.opened = True
            except UnsafePath as exc:  # a planted symlink: this call is not recorded, for good
                rec.recorder.fail(exc)
                self._drop_buffers(rec)
                return True, False
            except OSError as exc:
                self._note_fault(exc)
                return False, False
        wrote = False
        for name, leg in rec.legs.items():
            with self._lock:
                if rec.ended is not None and leg.owed_samples:  # the call is over: pay the owed silence now
                    self._add(leg, b"")
                data, since = leg.buf, leg.since
                leg.buf, leg.since = bytearray(), None
            done = 0
            try:
                while done < len(data):
                    done += rec.recorder.append(name, memoryview(data)[done:])
            except OSError as exc:
                self._note_fault(exc)
            with self._lock:
                self._queued -= done
                if done < len(data):
                    leg.buf[:0] = data[done:]  # first in line for the next attempt
                    leg.since = since
            wrote |= done > 0
            if done < len(data):
                return False, wrote
        return True, wrote

    def _complete(self, rec: CallRecording) -> bool:
        with self._lock:
            return all(not leg.buf and not leg.owed_samples for leg in rec.legs.values()) or (
                rec.recorder is None or bool(rec.recorder.error))

    def _finish(self, rec: CallRecording) -> None:
        """The recording is whole: close it, keep its figures, and only now end the call for analysis."""
        if rec.recorder is not None:
            rec.recorder.close_legs()
        call_id = rec.started.call_id
        summary = RecordingSummary(call_id, rec.recorder, rec.why_not,
                                   {name: leg.report() for name, leg in rec.legs.items()}, rec.sound)
        with self._lock:
            self.finished[call_id] = summary
            while len(self.finished) > KEEP_SUMMARIES:
                self.finished.popitem(last=False)
            self._calls.pop(call_id, None)
        self.analysis.end(rec.ended)

    def _drop_buffers(self, rec: CallRecording) -> None:
        with self._lock:
            for leg in rec.legs.values():
                self._queued -= len(leg.buf)
                leg.buf, leg.since, leg.owed_samples = bytearray(), None, 0

    def _close_open(self) -> None:
        """Stopping: calls still open keep their partial legs (and manifest) for crash recovery."""
        for rec in list(self._calls.values()):
            if rec.recorder is not None and rec.opened:
                rec.recorder.close_legs()
            if rec.ended is not None:
                self.analysis.end(rec.ended)

    # ---- disk faults ------------------------------------------------------------------------------

    def _note_fault(self, exc: OSError) -> None:
        self.counters["write_errors"] += 1
        if self.fault is None:
            self._fault_since = time.monotonic()
            log.error("call recording cannot write: audio kept queued, new calls refused until it can",
                      extra={"error": str(exc), "queued_mb": round(self._queued / MiB, 2)})
        self.fault = exc.strerror or str(exc)

    def _faulted(self) -> None:
        self._next_try = time.monotonic() + RETRY_S

    def _cleared(self) -> None:
        if self.fault is not None:
            log.warning("call recording writes again", extra={
                "fault": self.fault, "seconds": round(time.monotonic() - self._fault_since, 1)})
            self.fault = None

    def _probe(self) -> None:
        """Nothing was waiting to be written, yet the disk faulted: see whether it takes writes now."""
        try:
            private_dir(inside(self.audio_dir, PARTIAL))
            probe = inside(self.audio_dir, f"{PARTIAL}/.probe-{secrets.token_hex(4)}.tmp")  # recovery removes strays
            write_private(probe, bytes(4096))
            probe.unlink()
        except OSError as exc:
            self._note_fault(exc)
            self._faulted()
            return
        except UnsafePath:  # a planted symlink where the probe goes: say nothing about the disk
            return
        self._cleared()
