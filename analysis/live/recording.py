"""Record first: every leg's audio reaches its recording before any analysis queue sees it.

`RecordingFront` is the live sink the connectors feed (messages.LiveSink). For each frame it
appends the audio to its leg's recording buffer, filling a gap in the leg's frame numbers with
silence (counted), and only then hands the frame to the analysis inbox (inbox.FrameInbox),
which may shed it when analysis is over capacity: shedding costs live analysis, never the
recording, and the final batch pass analyses the whole recording anyway.

Media threads never touch the disk: one writer thread ("live-recorder") opens each call's legs
(analysis/live/recorder.py, with the manifest crash recovery assembles them by) and appends
every leg's new audio with raw writes at least every `live.record_flush_s` (0.25 s), so a kill
-9 costs at most that much. A write the disk refuses (ENOSPC, a read-only remount) keeps its
audio queued and is tried again every second; nothing queued is lost when space returns. A
call's CallEnded reaches the analysis inbox only once its recording is complete on disk and
closed, so the finaliser (and the batch pass) always read the whole recording.

Falling behind is the overload signal (`overload()`): audio waiting longer than
`live.record_max_lag_s` for the disk, more than `live.record_max_queued_mb` of it, or a disk
fault. While it holds, `admit()` refuses new calls (SIP 503, the media forks refuse the stream)
and counts each refusal; admitted calls keep recording. Only past `live.record_limit_mb` (the
memory bound) does an admitted call's new audio go unrecorded, and then as silence of the same
length, counted, so durations stay true.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from emotivoice.analysis.live.call import speakers_for, started_metadata
from emotivoice.analysis.live.inbox import FrameInbox
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, Message
from emotivoice.analysis.live.recorder import PARTIAL, CallRecorder
from emotivoice.config import LiveConfig
from emotivoice.storage.files import UnsafePath, inside, private_dir, write_private

log = logging.getLogger(__name__)

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
class _Recording:
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


class RecordingFront:
    """Implements messages.LiveSink in front of the analysis inbox (see the module docstring).
    With `record` off (no audio kept, no batch pass) it hands everything straight on."""

    def __init__(self, cfg: LiveConfig, analysis: FrameInbox, record: bool = True):
        self.cfg, self.analysis, self.record = cfg, analysis, record
        self.audio_dir = Path(cfg.audio_dir)
        self._lock = threading.Condition()
        self._calls: dict[str, _Recording] = {}
        self.finished: collections.OrderedDict[str, RecordingSummary] = collections.OrderedDict()
        self._queued = 0  # bytes appended, not yet on disk (every leg)
        self._limit = int(cfg.record_limit_mb * MiB)
        self.fault: str | None = None  # the disk refused a write; cleared by the next that succeeds
        self._fault_since = 0.0
        self._next_try = 0.0
        self.counters: collections.Counter[str] = collections.Counter()
        self.refusals: collections.Counter[str] = collections.Counter()  # by source
        self._running = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def begin(self) -> RecordingFront:
        """Start the writer thread (the engine does, in LiveEngine.start)."""
        if self.record and self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="live-recorder", daemon=True)
            self._thread.start()
        return self

    def close(self, wait_s: float = 10.0) -> None:
        """Write what is queued (as far as the disk takes it) and stop. A call still open keeps its
        partial legs and manifest for the next start's crash recovery."""
        with self._lock:
            self._running = False
            self._lock.notify_all()
        if self._thread:
            self._thread.join(wait_s)
            self._thread = None

    # ---- the sink ------------------------------------------------------------------------------

    def start(self, call: CallStarted) -> None:
        if self.record and call.call_id not in self._calls and call.call_id not in self.finished:
            recorder, why_not = self._recorder(call)
            roles = [s.role for s in speakers_for(call.legs)]
            legs = {info.leg: LegRecording(info.sample_rate) for info in call.legs}
            with self._lock:
                self._calls[call.call_id] = _Recording(call, recorder, why_not, roles, legs)
                self._lock.notify_all()  # its files open at once, not at the next flush
        self.analysis.start(call)

    def push(self, frame: Frame) -> bool:
        """Record the frame, then offer it to analysis. False only when it went nowhere."""
        rec = self._calls.get(frame.call_id)
        if rec is None or rec.recorder is None:  # not recording (off, not ours, or unknown call)
            return self.analysis.push(frame)
        with self._lock:
            if rec.ended is not None:
                self.counters["frames_after_end"] += 1
                return False
            recorded = self._append(rec, frame)
        analysed = self.analysis.push(frame)
        return recorded or analysed

    def end(self, call: CallEnded) -> None:
        """The analysis inbox gets it once the call's recording is complete on disk and closed."""
        with self._lock:
            rec = self._calls.get(call.call_id)
            if rec is not None and rec.ended is None:
                rec.ended = call
                self._lock.notify_all()
                return
        if rec is None:
            self.analysis.end(call)

    # ---- the analysis side: what the engine reads -----------------------------------------------

    def get(self, timeout: float | None = None) -> Message | None:
        return self.analysis.get(timeout)

    def pending(self) -> int:
        """Messages not yet taken by analysis, ends waiting for their recording included."""
        return self.analysis.pending() + sum(1 for rec in list(self._calls.values()) if rec.ended is not None)

    def drops(self, call_id: str) -> dict[str, int]:
        """Frames shed from live analysis for this call, per leg (all of them were recorded)."""
        return self.analysis.drops(call_id)

    def forget(self, call_id: str) -> None:
        self.analysis.forget(call_id)

    @property
    def total_dropped(self) -> int:
        """Frames shed from live analysis since start."""
        return self.analysis.total_dropped

    def recording(self, call_id: str) -> tuple[CallRecorder | None, str | None]:
        """The call's recorder (None when it has none) and why not."""
        rec = self._calls.get(call_id)
        if rec is not None:
            return rec.recorder, rec.why_not
        done = self.finished.get(call_id)
        if done is not None:
            return done.recorder, done.why_not
        return None, None if not self.record else "call audio not kept: the call was never started"

    def summary(self, call_id: str) -> RecordingSummary | None:
        return self.finished.get(call_id)

    # ---- admission ------------------------------------------------------------------------------

    def overload(self) -> str | None:
        """Why recording cannot take another call now, or None."""
        if not self.record:
            return None
        if self.fault:
            return f"recording disk fault: {self.fault}"
        with self._lock:
            queued = self._queued
            oldest = min((leg.since for rec in self._calls.values() for leg in rec.legs.values()
                          if leg.since is not None), default=None)
        if queued > self.cfg.record_max_queued_mb * MiB:
            return f"recording behind: {queued / MiB:.1f} MiB waiting for the disk"
        lag = time.monotonic() - oldest if oldest is not None else 0.0
        if lag > self.cfg.record_max_lag_s:
            return f"recording behind: audio waiting {lag:.1f} s for the disk"
        return None

    def admit(self, source: str) -> str | None:
        """None to take a new call from `source`; else why it is refused (the refusal is counted)."""
        why = self.overload()
        if why is not None:
            with self._lock:
                self.counters["calls_refused"] += 1
                self.refusals[source] += 1
                n = self.counters["calls_refused"]
            if n in (1, 10, 100) or n % 1000 == 0:
                log.warning("new call refused: recording cannot keep up",
                            extra={"source": source, "reason": why, "refused": n})
        return why

    def stats(self) -> dict:
        with self._lock:
            out = {"recording_calls": len(self._calls), "recording_queued_mb": round(self._queued / MiB, 2),
                   "calls_refused": self.counters["calls_refused"],
                   "frames_recorded": self.counters["frames_recorded"],
                   "frames_filled": self.counters["frames_filled"],
                   "recording_lost_frames": self.counters["lost_frames"],
                   "recording_write_errors": self.counters["write_errors"]}
        if self.refusals:
            out["calls_refused_by_source"] = dict(self.refusals)
        if self.fault:
            out["recording_fault"] = f"{self.fault} (since {time.monotonic() - self._fault_since:.0f} s)"
        return out

    # ---- on the media thread, under the lock ------------------------------------------------------

    def _recorder(self, call: CallStarted) -> tuple[CallRecorder | None, str | None]:
        rates = {info.sample_rate for info in call.legs}
        if len(rates) != 1:
            return None, "legs at different sample rates: call audio not kept"
        try:
            return CallRecorder(self.audio_dir, call.call_id, [i.leg for i in call.legs], rates.pop(),
                                open_legs=False), None
        except UnsafePath as exc:
            log.error("call audio not kept: the call id is not one this service made",
                      extra={"call_id": str(call.call_id)[:80], "error": str(exc)})
            return None, "the call id is not one this service made: call audio not kept"

    def _append(self, rec: _Recording, frame: Frame) -> bool:
        leg = rec.legs.get(frame.leg)
        if leg is None:
            self.counters["unknown_leg_frames"] += 1
            return False
        if frame.seq < leg.next_seq:
            leg.late_frames += 1
            return False
        gap = frame.seq - leg.next_seq
        if gap:
            frame_samples = max(1, len(frame.pcm) // 2)
            if gap * frame_samples <= self.cfg.max_gap_fill_s * leg.rate:
                leg.filled_frames += gap
                self.counters["frames_filled"] += gap
                self._add(leg, bytes(gap * frame_samples * 2))
            else:
                leg.jumps += 1
        leg.next_seq = frame.seq + 1
        leg.frames += 1
        self.counters["frames_recorded"] += 1
        if not rec.sound and frame.pcm.strip(b"\x00"):
            rec.sound = True
        self._add(leg, frame.pcm)
        return True

    def _add(self, leg: LegRecording, data: bytes) -> None:
        n = len(data) // 2 * 2
        if n == 0 and not leg.owed_samples:
            return
        if self._queued + n + 2 * leg.owed_samples > self._limit:  # memory bound: silence owed instead
            if n:
                leg.owed_samples += n // 2
                leg.lost_samples += n // 2
                self.counters["lost_frames"] += 1
            return
        if leg.owed_samples:
            data = bytes(2 * leg.owed_samples) + data[:n]
            leg.owed_samples = 0
        else:
            data = data[:n]
        leg.buf += data
        leg.samples += len(data) // 2
        self._queued += len(data)
        if leg.since is None:
            leg.since = time.monotonic()

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

    def _write(self, rec: _Recording) -> tuple[bool, bool]:
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

    def _complete(self, rec: _Recording) -> bool:
        with self._lock:
            return all(not leg.buf and not leg.owed_samples for leg in rec.legs.values()) or (
                rec.recorder is None or bool(rec.recorder.error))

    def _finish(self, rec: _Recording) -> None:
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

    def _drop_buffers(self, rec: _Recording) -> None:
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
