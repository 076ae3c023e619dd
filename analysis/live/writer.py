"""The live engine's two storing threads: the writer and the finaliser (analysis/live/engine.py).

- writer: stores each changed call (status 'live') as the analysis adds to it. Saves coalesce
  per call: a change marks the call dirty, and one save writes its newest state, so while the
  store is down only the set of dirty call ids waits, and nothing is lost (the state is in memory).
- finaliser: at hang-up, once the call's last utterances are through the live stages, keeps its
  audio and stores the call for good (analysis/live/finalize.py): through the batch pass, which
  supersedes the live rows, or as the live results.

Neither thread dies of a storage error (analysis/live/storehealth.py): any exception from the
store, whatever its class, is noted, reported and retried with backoff; any other exception is
logged and the thread goes on. A final save the store refuses is parked and tried again (at
once when the store recovers), while the finaliser goes on with other calls, so a record the
store keeps refusing never holds up the rest. A parked call stays in the engine (stop() waits
for it) until it is stored; a service stopped while the store is still down leaves such calls
'live' for the next start's crash recovery (analysis/live/recovery.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emotivoice.analysis.live.call import LiveCall, LiveUtterance
from emotivoice.analysis.live.finalize import begin_final, store_final
from emotivoice.analysis.sink import to_record

if TYPE_CHECKING:
    from emotivoice.analysis.live.engine import LiveEngine

log = logging.getLogger("emotivoice.analysis.live.engine")

SETTLE_WAIT_S = 120.0  # how long a finished call's last utterances may take through the live stages


@dataclass
class _Parked:
    """A finished call whose final save the store refused: tried again at `next_at`."""

    call: LiveCall
    audio: Path | None
    failed_at: float
    next_at: float
    attempts: int = 1


# ---- writer ---------------------------------------------------------------------------------------

def run_writer(engine: LiveEngine) -> None:
    health = engine.store_health
    while True:
        with engine._work:
            while engine._running and (not engine._dirty or health.wait_s() > 0):
                engine._work.wait(min(0.5, health.wait_s()) or 0.5)
            if not engine._running and (not engine._dirty or health.faulted):
                return  # stopping with the store down: the finaliser's saves carry each call
            prepared = _prepare(engine, engine._dirty.pop())
        if prepared is None:
            continue
        call, record, shown = prepared
        try:
            engine.store.save_call(record)
        except Exception as exc:  # any class: a full disk, a read-only file, DuckDB's own
            engine.counters["store_failures"] += 1
            health.failed("live save", exc, call.call_id)
            with engine._work:
                engine._saving.discard(call.call_id)
                engine._mark_dirty(call.call_id)  # its newest state goes at the next attempt
            continue
        health.ok()
        try:
            note_stored(engine, call, shown, time.time())
        except Exception:
            log.exception("live latency bookkeeping failed", extra={"call_id": call.call_id})
        with engine._work:
            engine._saving.discard(call.call_id)


def _prepare(engine: LiveEngine, call_id: str):
    """(call, record, what it shows) for a dirty call, under the engine's lock; None to skip it."""
    call = engine.calls.get(call_id)
    if call is None or not call.has_media:
        return None
    try:
        call.dropped_frames = sum(engine.inbox.drops(call_id).values())
        note_load(call)
        record = to_record(call.snapshot(), mode="live", metadata=call.metadata(), status="live")
        shown = [(u, u.utterance is not None, u.transcript != "pending") for u in call.utterances]
    except Exception:  # a bug in one call's data must not stop every call's storing
        engine.counters["writer_errors"] += 1
        log.exception("live call not prepared for storing", extra={"call_id": call_id})
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


# ---- finaliser ------------------------------------------------------------------------------------

def run_finalizer(engine: LiveEngine) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # after every live call's work
    except OSError:
        pass
    parked: list[_Parked] = []
    while True:
        with engine._work:
            while engine._running and not engine._finishing and not _due(engine, parked):
                engine._work.wait(_wait_s(parked))
            if not engine._finishing and not engine._running:
                _abandon(engine, parked)
                return
            call = engine.calls.get(engine._finishing.popleft()) if engine._finishing else None
            engine.counters["finals_waiting"] = len(parked)
        if call is not None:
            try:
                entry = _begin(engine, call)
            except Exception:
                log.exception("call not finalised", extra={"call_id": call.call_id})
                _forget(engine, call)
                entry = None
            if entry is not None:
                _attempt(engine, entry, parked)
        for entry in [p for p in parked if _is_due(engine, p)]:
            parked.remove(entry)
            _attempt(engine, entry, parked)
        engine.counters["finals_waiting"] = len(parked)


def _begin(engine: LiveEngine, call: LiveCall) -> _Parked | None:
    """Wait for the call's last live work, take it over from the writer, keep its audio."""
    call_id, health = call.call_id, engine.store_health
    deadline = time.monotonic() + SETTLE_WAIT_S
    while time.monotonic() < deadline:  # its live save may wait: the final save supersedes it
        with engine._lock:
            if (not call.pending_work() and (call_id not in engine._dirty or health.faulted)
                    and call_id not in engine._saving):
                break
        time.sleep(0.05)
    with engine._lock:  # from here on only the finaliser stores this call
        call.finalizing = True
        engine._dirty.discard(call_id)
    while call_id in engine._saving:
        time.sleep(0.05)
    with engine._lock:
        call.dropped_frames = sum(engine.inbox.drops(call_id).values())
        note_load(call)
    keep, audio = begin_final(call, engine.cfg)
    if not keep:
        engine.counters["calls_without_media"] += 1
        _forget(engine, call)
        return None
    now = time.monotonic()
    return _Parked(call, audio, now, now, 0)


def _attempt(engine: LiveEngine, entry: _Parked, parked: list[_Parked]) -> None:
    health = engine.store_health
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
        _forget(engine, entry.call)
        return
    now = time.monotonic()
    entry.attempts += 1
    entry.failed_at, entry.next_at = now, now + max(health.wait_s(), 1.0 if not health.faulted else 0.0)
    parked.append(entry)


def _due(engine: LiveEngine, parked: list[_Parked]) -> bool:
    return any(_is_due(engine, p) for p in parked)


def _is_due(engine: LiveEngine, entry: _Parked) -> bool:
    """Its time has come, or the store recovered since it failed (resume at once)."""
    return time.monotonic() >= entry.next_at or entry.failed_at < engine.store_health.recovered_at


def _wait_s(parked: list[_Parked]) -> float:
    if not parked:
        return 0.5
    return min(0.5, max(0.01, min(p.next_at for p in parked) - time.monotonic()))


def _forget(engine: LiveEngine, call: LiveCall) -> None:
    with engine._lock:
        engine.calls.pop(call.call_id, None)
        engine._dirty.discard(call.call_id)
    engine.inbox.forget(call.call_id)


def _abandon(engine: LiveEngine, parked: list[_Parked]) -> None:
    """Stopping with the store still refusing: say which calls were not stored (recovery finds
    those left 'live' at the next start, with their kept audio)."""
    if parked:
        log.error("service stopping with finished calls not stored (store fault)",
                  extra={"calls": [p.call.call_id for p in parked], "error": engine.store_health.fault})
