"""The Ray engine's collector: call actors' changes in, one store transaction of deltas out.

RayEngine (analysis/live/cluster/engine.py) mixes in DeltaCollector and runs `_collect` on its
"ray-collector" thread. Each call actor's `changes()` is long-polled; every answer's delta is merged
into the call's pending one (storage/incremental.py), and the pending deltas of all calls that
changed go to the store in one transaction. A store refusal keeps them, merged with what follows,
and retries with backoff (StoreHealth). Alerts are published outside any lock. Each utterance's
marks say when its emotions, then its transcript, were first stored (`stage_times`: where the
time went).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from emotivoice.storage.incremental import merge

if TYPE_CHECKING:
    from emotivoice.analysis.live.cluster.engine import ClusterCall

log = logging.getLogger("emotivoice.analysis.live.cluster.engine")


class DeltaCollector:
    """RayEngine's collector thread: long-polls, merges and stores the calls' deltas."""

    def _collect(self) -> None:
        import ray

        while self._running or self._outstanding:
            with self._lock:
                refs = list(self._outstanding)
            if refs:
                ready, _ = ray.wait(refs, num_returns=1, timeout=0.2)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            else:
                ready = []
                time.sleep(0.05)
            finished = []
            for ref in ready:
                with self._lock:
                    call_id = self._outstanding.pop(ref)
                    cc = self.calls.get(call_id)
                if cc is not None and self._take(cc, ref):
                    finished.append(cc)
            self._write()
            for cc in finished:  # after their last live write: from here only the finaliser stores them
                with self._lock:
                    self._pending.pop(cc.call_id, None)
                self._finals.put(cc)

    def _take(self, cc: ClusterCall, ref) -> bool:
        """Apply one changes() answer; True when the call is through (final, or its actor is gone)."""
        import ray
        from ray.exceptions import RayActorError

        try:
            update = ray.get(ref)
        except RayActorError as exc:  # a standby takes over; once replacements are used up, the batch pass
            error = str(exc).splitlines()[0][:200]
            if self._running and self.replace_actor(cc, error):
                return False
            log.error("call actor lost; the call is left to the batch pass", extra={
                "call_id": cc.call_id, "error": error})
            self.counters["call_actors_lost"] += 1
            with self._lock:
                cc.lost_actor = True
                through = cc.ended and not cc.queued
                cc.queued = cc.queued or through
            return through
        except Exception:
            log.exception("call actor answer failed", extra={"call_id": cc.call_id})
            self._poll(cc)
            return False
        if update.get("unassigned"):  # its begin() has not reached it yet: send it again (a repeat is a no-op)
            cc.actor.begin.remote(cc.shadow.started, cc.recording, True)
            self._poll(cc)
            return False
        delta, collected_at = update["delta"], time.time()
        if cc.ready_s is None:
            cc.ready_s = round(update["assigned_at"] - cc.spawned_at, 3)
            self.actor_starts.append(cc.ready_s)
        with self._lock:
            if delta is not None:
                old = self._pending.get(cc.call_id)
                self._pending[cc.call_id] = merge(old, delta) if old else delta
            marks = self._marks.setdefault(cc.call_id, {})
            for mark in update["marks"]:
                old = marks.get(mark["uid"])
                mark["answered_at"], mark["collected_at"] = update["answered_at"], collected_at
                if old is not None and "answered_at" in old and old["emotion_at"] == mark["emotion_at"]:
                    mark["answered_at"], mark["collected_at"] = old["answered_at"], old["collected_at"]
                marks[mark["uid"]] = mark
        shed = update["counters"]["shed_transcripts"]
        self.counters["transcripts_shed"] += max(0, shed - cc.shed)
        cc.shed = max(cc.shed, shed)
        if update["counters"]["resumed"] and not cc.resumed:
            self.counters["call_actor_restarts"] += 1
            self.counters["restored_audio_ms"] += update["counters"]["restored_ms"]  # replayed from the recording
            cc.resumed = True
        for alert in update["alerts"]:  # published outside any lock
            self.counters["alerts"] += 1
            self.publisher.publish(alert)
        if update["final"] is not None:
            cc.final = update["final"]
            with self._lock:
                cc.queued = True
            return True
        self._poll(cc)
        return False

    def _write(self) -> None:
        health = self.store_health
        with self._lock:
            if not self._pending or health.wait_s() > 0:
                return
            deltas = list(self._pending.values())
        began = time.monotonic()
        try:
            self.store.save_deltas(deltas)
        except Exception as exc:  # any class: kept (merged with what follows) and retried
            self.counters["store_failures"] += 1
            health.failed("live save", exc, deltas[0].call_id, began)
            return
        health.ok(began)
        now = time.time()
        self.counters["delta_batches"] += 1
        self.counters["deltas"] += len(deltas)
        with self._lock:
            for delta in deltas:
                if self._pending.get(delta.call_id) is delta:
                    del self._pending[delta.call_id]
                cc = self.calls.get(delta.call_id)
                marks = self._marks.pop(delta.call_id, {})
                if cc is not None:
                    self._note_stored(cc, marks.values(), now)

    def _note_stored(self, cc: ClusterCall, marks, now: float) -> None:
        """When each utterance's emotions, then its transcript, were first stored (as note_stored)."""
        for mark in marks:
            if mark["resumed"]:
                continue
            entry = cc.latencies.get(mark["uid"])
            if entry is None:
                entry = {"call_id": cc.call_id, "leg": mark["leg"], "duration_s": mark["duration_s"],
                         "emotion_s": round(now - mark["end_wall"], 3),
                         "emotion_compute_s": round(mark["emotion_at"] - mark["end_wall"], 3),
                         "transcript_s": None, "transcript": mark["transcript"],
                         "stages": stage_times(mark, now)}
                cc.latencies[mark["uid"]] = entry
                self.latencies.append(entry)
            if entry["transcript_s"] is None and mark["transcript"] != "pending":
                entry["transcript"] = mark["transcript"]
                if mark["transcript"] == "done":
                    entry["transcript_s"] = round(now - mark["end_wall"], 3)


def stage_times(mark: dict, stored_at: float) -> dict:
    """Where an utterance's emotion latency went, stage by stage (seconds; from its end_wall,
    the arrival of the audio that ended it, to its first store)."""
    st = {**mark.get("stages", {}), "emotion_at": mark["emotion_at"], "answered_at": mark.get("answered_at"),
          "collected_at": mark.get("collected_at"), "stored_at": stored_at}
    order = [("to_actor", "fed_at"), ("endpoint", "asked_at"), ("to_pool", "queued_at"),
             ("queue", "batch_began_at"), ("model", "batch_done_at"), ("back", "emotion_at"),
             ("to_answer", "answered_at"), ("to_collector", "collected_at"), ("store", "stored_at")]
    out, prev = {}, mark["end_wall"]
    for name, key in order:
        if st.get(key) is None:
            continue
        out[name] = round(st[key] - prev, 3)
        prev = st[key]
    if "batch_size" in st:
        out["batch_size"] = st["batch_size"]
    return out
