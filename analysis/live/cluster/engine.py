"""The Ray engine: call actors, shared model pools, and the one store writer, wired together.

The serving process keeps what must stay with the DuckDB file and the connectors: the sink
(recording, chunking), a collector that long-polls every call actor's `changes()` and writes the
deltas of all calls that changed in one transaction (analysis/live/cluster/collector.py), and a finaliser
that, at hang-up, keeps the audio and runs the batch pass exactly as the embedded engine does
(analysis/live/finalize.py). Its public surface is the embedded engine's where benchmarks and
`serve` use it: start/stop, stats(), latencies, counters, calls, store, publisher, and `inbox`,
the recording front (analysis/live/recording.py) the listeners feed: it records every leg first
and hands frames on to the RaySink, and a call's end only once its recording is complete. The
front always records here (the WAV is deleted after the final pass unless `live.keep_audio`):
a restarted call actor resumes from it.

Faults: a store refusal keeps the merged deltas in memory and retries with backoff (StoreHealth);
a call actor that dies is replaced (`call_restarts` times a call) by a standby, which resumes the
call from the recording; a call that has used its replacements up is left to the batch pass over
the recording, with a warning. The engine replaces a dead actor itself rather than let Ray restart
it: Ray reruns the constructor in a new process (7.2 s measured on 2 cores), and until it is back
the call's live results stand still; a standby has its process, imports and VAD ready.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from emotivoice.analysis.live.alerts import AlertPublisher
from emotivoice.analysis.live.call import LiveCall
from emotivoice.analysis.live.cluster.callactor import CallActor, new_call
from emotivoice.analysis.live.cluster.collector import DeltaCollector
from emotivoice.analysis.live.cluster.config import RayConfig
from emotivoice.analysis.live.cluster.models import EmotionWorker, Pool, TranscriptWorker
from emotivoice.analysis.live.cluster.sink import RaySink
from emotivoice.analysis.live.cluster.standby import StandbyPool
from emotivoice.analysis.live.finalize import Finalizer, begin_final, store_final
from emotivoice.analysis.live.messages import CallEnded, CallStarted
from emotivoice.analysis.live.recorder import apply_retention
from emotivoice.analysis.live.recording import RecordingFront
from emotivoice.analysis.live.storehealth import StoreHealth
from emotivoice.analysis.live.writer import note_load
from emotivoice.analysis.results import CallResult
from emotivoice.config import Settings
from emotivoice.storage.incremental import CallDelta
from emotivoice.storage.store import Store

log = logging.getLogger(__name__)


class ShadowCall(LiveCall):
    """The serving process's copy of a call: its recording and metadata, and at the end the
    result the call actor reached (`result`), which is what the final save stores."""

    def snapshot(self) -> CallResult:
        return self.result


@dataclass
class ClusterCall:
    shadow: ShadowCall
    actor: object = None
    ended: bool = False
    final: CallResult | None = None
    lost_actor: bool = False
    resumed: bool = False
    queued: bool = False  # handed to the finaliser
    shed: int = 0
    latencies: dict[int, dict] = field(default_factory=dict)
    recording: tuple | None = None  # (audio_dir, call_id, legs, rate): what a replacement actor resumes from
    totals: dict[str, int] | None = None  # each leg's length, once the sink has sent the call's end
    replacements: int = 0  # actors that died under this call and were replaced
    spawned_at: float = 0.0
    ready_s: float | None = None  # spawn -> the actor has its call (a standby: ms; a cold actor: seconds)

    @property
    def call_id(self) -> str:
        return self.shadow.call_id


def connect_ray(config: RayConfig):
    """Join the cluster at `config.address`, or start a local instance when it is "auto" and none
    runs; returns whether we started it (so stop() shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if config.address != "auto":
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False)
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", include_dashboard=False, log_to_driver=False)
        return False
    ray.init(num_cpus=config.local_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


class RayEngine(DeltaCollector):
    def __init__(self, settings: Settings, store: Store, config: RayConfig | None = None,
                 finalizer: Finalizer | None = None, publisher: AlertPublisher | None = None):
        self.settings, self.store, self.config = settings, store, config or RayConfig()
        self.cfg = settings.live
        self.finalizer = finalizer
        self.publisher = publisher or AlertPublisher(self.cfg.webhook_url, self.cfg.webhook_retries,
                                                     self.cfg.webhook_timeout_s)
        self.calls: dict[str, ClusterCall] = {}  # until finalised
        self.latencies: list[dict] = []
        self.actor_starts: list[float] = []  # seconds from spawn to each call actor having its call
        self.counters: collections.Counter[str] = collections.Counter()
        self.store_health = StoreHealth()
        self.sink = RaySink(self)
        self.inbox = RecordingFront(self.cfg, self.sink, record=True)
        self._lock = threading.Lock()
        self._outstanding: dict = {}  # changes() ObjectRef -> call id
        self._pending: dict[str, CallDelta] = {}
        self._marks: dict[str, dict[int, dict]] = {}
        self._finals: queue.SimpleQueue[ClusterCall] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._own_ray = False

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> RayEngine:
        import ray

        self._own_ray = connect_ray(self.config)
        apply_retention(self.cfg.audio_dir, self.cfg.retention_days)
        worker = dict(num_cpus=1, max_restarts=-1, max_task_retries=-1, max_concurrency=1000)
        self.emotion_actors = [ray.remote(**worker)(EmotionWorker).remote(self.settings)
                               for _ in range(self.config.emotion_workers)]
        self.transcript_actors = [ray.remote(**worker)(TranscriptWorker).remote(self.settings)
                                  for _ in range(self.config.transcript_workers)] if self.cfg.transcribe else []
        self.model_info = ray.get(self.emotion_actors[0].info.remote())
        try:
            ray.get([a.info.remote() for a in self.transcript_actors])
        except Exception as exc:  # as the embedded engine: emotions only
            log.error("live transcription unavailable: emotions only", extra={"error": str(exc)})
            self.settings = _no_transcripts(self.settings)
        self.emotion, self.transcript = Pool(self.emotion_actors), Pool(self.transcript_actors or [None])
        # what every call actor shares, put once and held here: Ray restarts an actor from its
        # constructor arguments, which must not go out of scope meanwhile (ray-project/ray#53727)
        self._shared = ray.put((self.settings, self.emotion, self.transcript, self.model_info))
        # no Ray restarts: a dead call actor's call goes to a warm standby (replace_actor)
        self._remote_call = ray.remote(CallActor).options(
            num_cpus=0, max_restarts=0, max_task_retries=0, max_concurrency=1000)
        self._pings: dict = {}  # actor id -> its first ping, while the keeper waits for it to start
        self._standby = StandbyPool(self._new_actor, self.config.standby_calls, self.config.standby_floor,
                                    self.config.standby_quiet_s, self._started)
        ray.get([a.ping.remote() for a in self._standby.fill()], timeout=120)  # warm before the first call
        self._running = True
        self.inbox.begin()
        self.sink.start_thread()
        for name, target in (("ray-collector", self._collect), ("ray-finalize", self._finalize),
                             ("ray-standby", self._keep_standby)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("ray engine started", extra={"emotion_workers": len(self.emotion_actors),
                                              "transcript_workers": len(self.transcript_actors)})
        return self

    def stop(self, wait_s: float = 30.0) -> None:
        """End every open call (finalising it), wait for the finals, stop the threads and the pools."""
        import ray

        deadline = time.monotonic() + wait_s
        for call_id in self.sink.open_calls():
            self.inbox.end(CallEnded(call_id, "service stopping"))
        while time.monotonic() < deadline:
            with self._lock:
                if not self.calls:
                    break
            time.sleep(0.1)
        self._running = False
        self.inbox.close()
        self.sink.stop_thread()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        for cc in list(self.calls.values()):
            _kill(cc.actor)
        for actor in self._standby.drain():
            _kill(actor)
        for actor in self.emotion_actors + self.transcript_actors:
            _kill(actor)
        self.publisher.close()
        if self._own_ray:
            ray.shutdown()

    def stats(self) -> dict:
        with self._lock:
            active = sum(1 for c in self.calls.values() if not c.ended)
            waiting = len(self.calls)
        return {"active_calls": active, "calls_in_flight": waiting, "dropped_frames": 0,
                **self.inbox.stats(), **self.sink.counters, **self.counters,
                **self.store_health.report()}

    # ---- calls (the sink calls these) -------------------------------------------------------------

    def open_call(self, started: CallStarted) -> ClusterCall:
        base = new_call(started, self.settings, *getattr(self, "model_info", ("", True)), endpointers=False)
        shadow = ShadowCall(base.started, base.result, base.legs, base.insight)
        shadow.recorder, why_not = self.inbox.recording(started.call_id)  # made and written by the front
        if why_not:
            shadow.result.warnings.append(why_not)
        cc = ClusterCall(shadow)
        with self._lock:
            self.calls[started.call_id] = cc
        log.info("live call started", extra={"call_id": started.call_id, "source": started.source,
                                              "legs": [leg.leg for leg in started.legs], "engine": "ray"})
        return cc

    def _new_actor(self):
        return self._remote_call.remote(self._shared, self.config.end_wait_s)

    def spawn(self, cc: ClusterCall) -> None:
        """The call's actor: a standby when one is left, replaced at once in the background (from
        the sender thread: actor creation is not the media thread's work)."""
        rec = cc.shadow.recorder
        cc.recording = (rec.audio_dir, rec.call_id, tuple(rec.legs), rec.rate) if rec and not rec.error else None
        cc.spawned_at = time.time()
        cc.actor = self._take_standby()
        cc.actor.begin.remote(cc.shadow.started, cc.recording)
        self._poll(cc)

    def _take_standby(self):
        actor = self._standby.take()
        if actor is None:
            self.counters["cold_call_actors"] += 1
            actor = self._new_actor()
        return actor

    def _started(self, actor) -> bool:
        """Whether an actor the keeper made has its process up (its first ping answered)."""
        import ray

        key = actor._actor_id.hex()
        ref = self._pings.setdefault(key, actor.ping.remote())
        done, _ = ray.wait([ref], timeout=0)
        if done:
            self._pings.pop(key, None)
        return bool(done)

    def _keep_standby(self) -> None:
        """Top the standby pool up, one actor at a time, when no call has started for a while
        (standby.py: a new process beside live calls slowed their emotions down)."""
        while self._running:
            try:
                self._standby.tick()
            except Exception:  # a Ray hiccup must not end the keeper; the next turn tries again
                log.exception("standby call actor not started")
            time.sleep(0.25)

    def replace_actor(self, cc: ClusterCall, error: str) -> bool:
        """The call's actor died: a standby takes the call and rebuilds it from the recording
        (begin(resume=True)), and gets the call's end again if the sink had sent it to the dead
        one. False when the call has used its `call_restarts` replacements up."""
        if cc.replacements >= self.config.call_restarts:
            return False
        cc.replacements += 1
        warm = bool(self._standby)
        actor = self._take_standby()
        with self._lock:  # the sink reads cc.actor and sets cc.totals under this lock
            old, cc.actor, totals = cc.actor, actor, cc.totals
        _kill(old)
        actor.begin.remote(cc.shadow.started, cc.recording, True)
        if totals is not None:
            actor.end.remote(cc.call_id, totals, cc.shadow.missing_frames)
        self._poll(cc)
        self.counters["call_actors_replaced"] += 1
        log.warning("call actor died; a standby resumes its call from the recording", extra={
            "call_id": cc.call_id, "standby": warm, "replacement": cc.replacements,
            "ended": totals is not None, "error": error})
        return True

    def ended(self, cc: ClusterCall) -> None:
        """The sink has sent the call's end; a call whose actor is gone goes straight to the finaliser."""
        with self._lock:
            through = cc.lost_actor and not cc.queued
            cc.queued = cc.queued or through
        if through:
            self._finals.put(cc)

    def _poll(self, cc: ClusterCall) -> None:
        ref = cc.actor.changes.remote()
        with self._lock:
            self._outstanding[ref] = cc.call_id

    # ---- finaliser: as the embedded engine ------------------------------------------------------------

    def _finalize(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # after every live call's work
        except OSError:
            pass
        while self._running or not self._finals.empty():
            try:
                cc = self._finals.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._final(cc)
            except Exception:
                log.exception("call not finalised", extra={"call_id": cc.call_id})
            self._recycle(cc)
            with self._lock:
                self.calls.pop(cc.call_id, None)
                self._marks.pop(cc.call_id, None)

    def _recycle(self, cc: ClusterCall) -> None:
        """A finished call's actor becomes a standby again (a new one costs ~3 CPU seconds of
        process start and imports, which on 2 cores the live calls' models feel)."""
        import ray

        keep, limit = False, 2 * self.config.standby_calls
        if self._running and cc.final is not None and not cc.lost_actor and len(self._standby) < limit:
            try:
                keep = ray.get(cc.actor.release.remote(), timeout=5)
            except Exception:  # dead or stuck: a fresh one replaces it
                keep = False
        keep = keep and self._standby.give_back(cc.actor, limit)  # first in line, before a newer standby
        if keep:
            self.counters["call_actors_reused"] += 1
        else:
            _kill(cc.actor)

    def _final(self, cc: ClusterCall) -> None:
        shadow = cc.shadow
        if cc.final is not None:
            shadow.result = cc.final
        else:
            shadow.result.warnings.append("live: the call's analysis worker was lost; results are the batch pass's")
        shadow.ended, shadow.ended_at, shadow.shed_transcripts = True, datetime.now(timezone.utc), cc.shed
        note_load(shadow)
        keep, audio = begin_final(shadow, self.cfg)
        if not keep:
            self.counters["calls_without_media"] += 1
            return
        while not store_final(shadow, audio, self.store, self.cfg, self.finalizer, self.store_health,
                              self.settings.redaction):
            time.sleep(max(self.store_health.wait_s(), 0.5))  # a full disk delays the final save, never loses it
            if not self._running and self.store_health.faulted:
                log.error("service stopping with a finished call not stored (store fault)",
                          extra={"call_id": cc.call_id})
                return


def _kill(actor) -> None:
    if actor is None:
        return
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


def _no_transcripts(settings: Settings) -> Settings:
    from dataclasses import replace

    return replace(settings, live=replace(settings.live, transcribe=False))
