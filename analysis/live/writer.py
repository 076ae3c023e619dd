"""The live chain's two storing stages: the writer and the finaliser (analysis/live/chain.py).

- writer: stores each changed call (status 'live') as the analysis adds to it. Saves coalesce
  per call: its queue is the set of dirty call ids, and one save writes a call's newest state,
  so while the store is down only that set waits, and nothing is lost (the state is in memory).
  A save writes only what changed since the call's last stored record (storage/incremental.py),
  for up to WRITER_GROUP calls in one transaction: at 12 calls whole-call rewrites, one call at
  a time, kept the writer busy 39 s of every 60 (187 ms a save, benchmarks/results/
  side_by_side_tail11.json), cores taken from Whisper.
- finaliser: at hang-up, once the call's last utterances are through the live stages (it waits
  on the engine's `settled` condition, never polls), keeps its audio and stores the call for good
  (analysis/live/finalize.py): through the batch pass, which supersedes the live rows, or as the
  live results.

Neither dies of a storage error (analysis/live/storehealth.py): any exception from the store,
whatever its class, is noted, reported and retried with backoff; any other exception is logged
and the stage goes on. A final save the store refuses is parked and tried again (at once when
the store recovers), while the finaliser goes on with other calls, so a record the store keeps
refusing never holds up the rest. A parked call stays in the engine (stop() waits for it) until
it is stored; a service stopped while the store is still down leaves such calls 'live' for the
next start's crash recovery (analysis/live/recovery.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emotivoice.analysis.live.call import LiveCall, LiveUtterance
from emotivoice.analysis.live.chain import Stage
from emotivoice.analysis.live.finalize import begin_final, kept_audio, store_final
from emotivoice.analysis.sink import to_record
from emotivoice.storage.db import BadRequest
from emotivoice.storage.incremental import diff_record

if TYPE_CHECKING:
    from emotivoice.analysis.live.engine import LiveEngine

log = logging.getLogger("emotivoice.analysis.live.engine")

WRITER_GROUP = 32  # dirty calls stored in one transaction (a group commit)
DISK_RETRY_MAX_S = 30.0  # a kept WAV a full disk refused is assembled again at most this far apart


@dataclass
class _Parked:
    """A finished call whose final save the store refused, or whose kept WAV a full disk would not
    take (its legs wait in .partial): tried again at `next_at`."""

    call: LiveCall
    audio: Path | None
    failed_at: float
    next_at: float
    attempts: int = 1


def _waits_for_room(entry: _Parked) -> bool:
    """Its kept WAV was refused by a full disk (CallRecorder.assembly_error) and not made since."""
    recorder = entry.call.recorder
    return entry.audio is None and recorder is not None and bool(recorder.assembly_error)


# ---- writer ---------------------------------------------------------------------------------------

class WriterStep(Stage):
    name = "writer"

    def __init__(self, engine: LiveEngine):
        super().__init__()
        self.engine = engine
        self.dirty: set[str] = set()
        self._stored: dict = {}  # call id -> the CallRecord last stored: the base of the next delta

    def put(self, call_id: str) -> None:
        with self.cond:
            self.dirty.add(call_id)
            self.cond.notify()

    def discard(self, call_id: str) -> None:
        with self.cond:
            self.dirty.discard(call_id)

    def has(self, call_id: str) -> bool:
        with self.cond:
            return call_id in self.dirty

    def pending(self) -> int:
        with self.cond:
            return len(self.dirty)

    def ready(self) -> bool:
        return bool(self.dirty) and self.engine.store_health.wait_s() <= 0

    def wait_s(self) -> float | None:
        wait = self.engine.store_health.wait_s()
        return wait if self.dirty and wait > 0 else None  # the store's backoff, then try again

    def drained(self) -> bool:
        return not self.dirty or self.engine.store_health.faulted  # stopping with the store down: the
        # finaliser's saves carry each call

    def take(self) -> list[str]:
        batch = []
        while self.dirty and len(batch) < WRITER_GROUP:
            batch.append(self.dirty.pop())
        return batch

    def process(self, batch: list[str]) -> None:
        t0 = time.monotonic()
        prepared = [p for p in map(self._prepare, batch) if p is not None]
        if not prepared:
            return
        t1 = time.monotonic()
        stored, refused = self._save(prepared)
        if refused and len(prepared) > 1:  # one call's bad data must not hold up the rest; a full disk
            for one in prepared:           # would fail each alone too, and every failure doubles the backoff
                stored |= self._save([one])[0]
        t2 = time.monotonic()  # what saves cost, for stats(): preparing them (under the lock), storing them
        self.counters["writer_prepare_ms"] += round((t1 - t0) * 1000)
        self.counters["writer_save_ms"] += round((t2 - t1) * 1000)
        engine, now = self.engine, time.time()
        for call, _, shown in prepared:
            if call.call_id in stored:
                try:
                    note_stored(engine, call, shown, now)
                except Exception:
                    log.exception("live latency bookkeeping failed", extra={"call_id": call.call_id})
        with engine._lock:
            for call, _, _ in prepared:
                engine._saving.discard(call.call_id)
                if call.call_id not in stored:
                    engine.mark_dirty(call.call_id)  # its newest state goes at the next attempt
            # a call in its final save (which rewrites it whole) or gone: no base for a delta to keep
            for gone in [c for c in self._stored if c not in engine.calls or engine.calls[c].finalizing]:
                del self._stored[gone]
            engine.settled.notify_all()

    def _save(self, prepared: list) -> tuple[set[str], bool]:
        """Store what changed in these calls in one transaction: (the ids stored, all or none;
        whether the store refused the data itself, a BadRequest)."""
        deltas = [diff_record(self._stored.get(call.call_id), record) for call, record, _ in prepared]
        began = time.monotonic()
        try:
            self.engine.store.save_deltas(deltas)
        except Exception as exc:  # any class: a full disk, a read-only file, DuckDB's own
            self.counters["store_failures"] += 1
            self.engine.store_health.failed("live save", exc, ", ".join(d.call_id for d in deltas[:3]), began)
            return set(), isinstance(exc, BadRequest)
        self.engine.store_health.ok(began)
        for call, record, _ in prepared:
            self._stored[call.call_id] = record
        return {call.call_id for call, _, _ in prepared}, False

    def _prepare(self, call_id: str):
        """(call, record, what it shows) for a dirty call, under the call lock; None to skip it."""
        engine = self.engine
        with engine._lock:
            call = engine.calls.get(call_id)
            if call is None or not call.has_media or call.finalizing:
                engine.settled.notify_all()  # the finaliser may be waiting for this call to leave the queue
                return None
            try:
                call.dropped_frames = sum(engine.inbox.drops(call_id).values())
                note_load(call)
                record = to_record(call.snapshot(), mode="live", metadata=call.metadata(), status="live")
                shown = [(u, u.utterance is not None, u.transcript != "pending") for u in call.utterances]
            except Exception:  # a bug in one call's data must not stop every call's storing
                self.counters["writer_errors"] += 1
                log.exception("live call not prepared for storing", extra={"call_id": call_id})
                engine.settled.notify_all()
                return None
            engine._saving.add(call_id)
            return call, record, shown


def note_load(call: LiveCall) -> None:
    """The call's warnings about load: shed transcripts, dropped and missing frames, its recording."""
    warnings = [w for w in call.result.warnings if not w.startswith(("live:", "call audio"))]
    if call.shed_transcripts:
        warnings.append(f"live: {call.shed_transcripts} transcripts deferred to the final pass (over capacity)")
    if call.dropped_frames:
        warnings.append(f"live: {call.dropped_frames} audio frames dropped (analysis inbox full)")
    # gaps in a leg's frame numbers that the inbox's own drops do not explain were lost upstream
    missing = call.missing_frames + max(0, call.lost_frames - call.dropped_frames)
    if missing:
        warnings.append(f"live: {missing} frames ({missing * 0.02:.2f} s) of leg audio "
                        "never arrived from the source (network loss or jitter), analysed as silence")
    if call.recorder and call.recorder.error:
        warnings.append(call.recorder.error)
    call.result.warnings = warnings


def note_stored(engine: LiveEngine, call: LiveCall, shown: list[tuple[LiveUtterance, bool, bool]],
                now: float) -> None:
    """Note when each utterance's emotions, then its transcript, were first stored."""
    with engine._lock:
        for item, had_emotion, had_text in shown:
            if had_emotion and item.emotion_stored_at is None:
                item.emotion_stored_at = now
                item.latency = {"call_id": call.call_id, "leg": item.leg.info.leg,
                                "duration_s": round(item.end - item.start, 2),
                                "emotion_s": round(now - item.end_wall, 3),
                                "emotion_compute_s": round(item.emotion_at - item.end_wall, 3),
                                "transcript_s": None, "transcript": item.transcript}
                engine.latencies.append(item.latency)
            if had_text and item.transcript_stored_at is None and item.latency is not None:
                item.transcript_stored_at = now
                item.latency["transcript"] = item.transcript
                if item.transcript == "done":
                    item.latency["transcript_s"] = round(now - item.end_wall, 3)
                    item.latency.update(transcript_breakdown(item, now))


def transcript_breakdown(item: LiveUtterance, stored: float) -> dict:
    """Where a stored transcript's latency went (seconds; None where a stamp is missing):
    emotion -> queued for Whisper, waiting in that queue, its pass (Whisper, redaction),
    words -> scored by insight, scored -> stored by the writer."""
    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 3) if a is not None and b is not None else None

    scored = item.scored_at
    handed_to_writer = scored if scored is not None and scored <= stored else item.transcript_at
    return {"transcript_queue_s": span(item.transcript_queued_at, item.transcript_taken_at),
            "transcript_pass_s": span(item.transcript_taken_at, item.transcript_at),
            "transcript_insight_s": span(item.transcript_at, scored),
            "transcript_writer_s": span(handed_to_writer, stored)}


# ---- finaliser ------------------------------------------------------------------------------------

class FinalizerStep(Stage):
    """Its queue holds the ids of calls that ended; refused final saves wait in `parked`."""

    name = "finalize"
    nice = 10  # after every live call's work

    def __init__(self, engine: LiveEngine):
        super().__init__()
        self.engine = engine
        self.parked: list[_Parked] = []  # only this stage's thread touches it

    def ready(self) -> bool:
        return bool(self.queue) or any(self._is_due(p) for p in self.parked)

    def wait_s(self) -> float | None:
        if not self.parked:
            return None
        # a parked save falls due, or the store may have recovered (StoreHealth.recovered_at)
        return min(0.5, max(0.01, min(p.next_at for p in self.parked) - time.monotonic()))

    def take(self) -> list:
        batch: list = [self.queue.popleft()] if self.queue else []
        due = [p for p in self.parked if self._is_due(p)]
        self.parked = [p for p in self.parked if p not in due]
        return batch + due

    def process(self, batch: list) -> None:
        for work in batch:
            entry = work if isinstance(work, _Parked) else self._begin_call(work)
            if entry is not None:
                self._attempt(entry)
        self.counters["finals_waiting"] = len(self.parked)
        self.counters["recordings_waiting_for_disk"] = sum(1 for p in self.parked if _waits_for_room(p))

    def on_stop(self) -> None:
        """Stopping with the store still refusing: say which calls were not stored (recovery finds
        those left 'live' at the next start, with their kept audio)."""
        if self.parked:
            log.error("service stopping with finished calls not stored (store fault, or a full disk that "
                      "would not take their recordings)",
                      extra={"calls": [p.call.call_id for p in self.parked], "error": self.engine.store_health.fault,
                             "waiting_for_disk": [p.call.call_id for p in self.parked if _waits_for_room(p)]})

    def _begin_call(self, call_id: str) -> _Parked | None:
        with self.engine._lock:
            call = self.engine.calls.get(call_id)
        if call is None:
            return None
        try:
            return self._begin(call)
        except Exception:
            log.exception("call not finalised", extra={"call_id": call.call_id})
            self._forget(call)
            return None

    def _begin(self, call: LiveCall) -> _Parked | None:
        """Wait for the call's last live work, take it over from the writer, keep its audio."""
        engine, call_id, health = self.engine, call.call_id, self.engine.store_health
        with engine._lock:  # its live save may wait: the final save supersedes it
            engine.settled.wait_for(lambda: not call.pending_work() and call_id not in engine._saving
                                    and (health.faulted or not engine.writer.has(call_id)),
                                    timeout=engine.cfg.settle_wait_s)
            call.finalizing = True  # from here on only the finaliser stores this call
            engine.writer.discard(call_id)
            engine.settled.wait_for(lambda: call_id not in engine._saving)
            call.dropped_frames = sum(engine.inbox.drops(call_id).values())
            note_load(call)
        keep, audio = begin_final(call, engine.cfg)
        if not keep:
            self.counters["calls_without_media"] += 1
            self._forget(call)
            return None
        now = time.monotonic()
        return _Parked(call, audio, now, now, 0)

    def _attempt(self, entry: _Parked) -> None:
        engine, health = self.engine, self.engine.store_health
        if self._waits_for_disk(entry):
            return
        try:
            stored = store_final(entry.call, entry.audio, engine.store, engine.cfg, engine.finalizer, health,
                                 engine.settings.redaction)
        except Exception:  # not the store's (store_final catches those): log it, keep the call, retry
            if entry.attempts < 3:
                log.exception("call not finalised, retrying", extra={"call_id": entry.call.call_id})
            stored = False
        if stored:
            if entry.attempts:
                log.info("finished call stored after the store came back",
                         extra={"call_id": entry.call.call_id, "attempts": entry.attempts + 1})
            self._forget(entry.call)
            engine.writer.wake()  # the store takes writes: dirty calls need not wait out their backoff
            return
        now = time.monotonic()
        entry.attempts += 1
        entry.failed_at, entry.next_at = now, now + max(health.wait_s(), 1.0 if not health.faulted else 0.0)
        self.parked.append(entry)

    def _waits_for_disk(self, entry: _Parked) -> bool:
        """Assemble the kept WAV again if a full disk refused it; True (parked again) while it
        still does. The call is stored only with its recording: meanwhile it stays 'live', and a
        restart's recovery assembles the same legs."""
        if not _waits_for_room(entry):
            return False
        recorder = entry.call.recorder
        if entry.attempts:  # a fresh entry's first try was begin_final's, just now
            entry.audio = kept_audio(entry.call, self.engine.cfg)
            if entry.audio is not None or not recorder.assembly_error:
                log.info("call recording assembled once the disk had room", extra={
                    "call_id": entry.call.call_id, "attempts": entry.attempts})
                return False
        now = time.monotonic()
        entry.attempts += 1
        entry.failed_at, entry.next_at = now, now + min(DISK_RETRY_MAX_S, 2.0 ** min(entry.attempts, 5))
        self.parked.append(entry)
        return True

    def _is_due(self, entry: _Parked) -> bool:
        """Its time has come, or the store recovered since it failed (resume at once)."""
        return time.monotonic() >= entry.next_at or entry.failed_at < self.engine.store_health.recovered_at

    def _forget(self, call: LiveCall) -> None:
        engine = self.engine
        with engine._lock:
            engine.calls.pop(call.call_id, None)
            engine.writer.discard(call.call_id)
            engine.settled.notify_all()
        engine.emotion_step.drop_interims(call.call_id)
        engine.emotion_step.stage.forget(call.call_id)  # its speakers' feature histories
        engine.inbox.forget(call.call_id)
