"""Record first: every leg's audio reaches its recording before any analysis queue sees it.

`RecordingFront` is the live sink the connectors feed (messages.LiveSink). For each frame it
appends the audio to its leg's recording buffer, filling a gap in the leg's frame numbers with
silence (counted), and only then hands the frame to the analysis inbox (inbox.FrameInbox),
which may shed it when analysis is over capacity: shedding costs live analysis, never the
recording, and the final batch pass analyses the whole recording anyway. The disk is only the
writer thread's (analysis/live/recordwriter.py): a media thread never waits for it.

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
import threading
import time
from pathlib import Path

from emotivoice.analysis.live.call import speakers_for
from emotivoice.analysis.live.inbox import FrameInbox
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, Message
from emotivoice.analysis.live.recorder import CallRecorder
from emotivoice.analysis.live.recordwriter import (MiB, CallRecording, LegRecording, RecordingSummary,
                                                   RecordingWriter)
from emotivoice.config import LiveConfig
from emotivoice.storage.files import UnsafePath

log = logging.getLogger(__name__)


class RecordingFront(RecordingWriter):
    """Implements messages.LiveSink in front of the analysis inbox (see the module docstring).
    With `record` off (no audio kept, no batch pass) it hands everything straight on."""

    def __init__(self, cfg: LiveConfig, analysis: FrameInbox, record: bool = True):
        self.cfg, self.analysis, self.record = cfg, analysis, record
        self.audio_dir = Path(cfg.audio_dir)
        self._lock = threading.Condition()
        self._calls: dict[str, CallRecording] = {}
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
                self._calls[call.call_id] = CallRecording(call, recorder, why_not, roles, legs)
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

    def _append(self, rec: CallRecording, frame: Frame) -> bool:
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
