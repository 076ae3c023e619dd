"""The live analysis service: frames in, per-speaker emotions, transcripts, risk and alerts out.

Connectors feed `engine.inbox`, the recording front (analysis/live/recording.py): every leg is
recorded there first, by its own writer thread, and only then offered to the bounded analysis
inbox, which sheds frames (counted on the call and in stats()) when analysis is over capacity;
a call ends for the engine only once its recording is complete, so the batch pass always runs on
the whole call. When recording itself falls behind, the front refuses new calls (`admit`).

The engine is an explicit chain of stages (analysis/live/chain.py), each with its own queue,
worker thread, shedding policy and counters, so that the fast answer never waits on the slow one:

    inbox -> ingest/endpoint -> emotion -> transcript -> insight -> writer -> store
                                      (at hang-up)  finalize -> batch pass -> store

- ingest (here): messages from the analysis inbox, VAD endpointing per leg (analysis/live/endpoint.py);
- emotion, transcript, insight (analysis/live/steps.py): the per-utterance stages of
  analysis/stages/, shared with the batch pipeline and the Ray call actor; emotions are never
  shed, transcripts are shed first when their backlog passes `live.transcript_backlog_s`;
- writer and finalize (analysis/live/writer.py): store each changed call through the store (the
  process that owns the file), and at hang-up keep the audio and hand it to the batch pass, which
  supersedes the live results (analysis/live/finalize.py). No storage error stops them; it is
  retried until it succeeds and reported in stats() as `store_fault` meanwhile.

A call's state (LiveCall) is plain data, guarded by one call lock (`_lock`); each stage's own
condition guards only its queue. Models are injected (`emotion_model`, `transcriber`: a Whisper)
or loaded with the usual loaders.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from datetime import datetime, timezone

import numpy as np

from emotivoice.analysis.emotion.model import EmotionModel
from emotivoice.analysis.live.alerts import AlertPublisher
from emotivoice.analysis.live.call import LiveCall, LiveLeg, new_call
from emotivoice.analysis.live.endpoint import Speech, to_16k
from emotivoice.analysis.live.finalize import Finalizer
from emotivoice.analysis.live.inbox import FrameInbox
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame
from emotivoice.analysis.live.recorder import apply_retention
from emotivoice.analysis.live.recording import RecordingFront, RecordingSummary
from emotivoice.analysis.live.steps import EmotionStep, InsightStep, TranscriptStep
from emotivoice.analysis.live.storehealth import StoreHealth
from emotivoice.analysis.live.writer import FinalizerStep, WriterStep
from emotivoice.analysis.redaction.stage import RedactionReport, Redactor
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.analysis.stages.insight import InsightStage
from emotivoice.analysis.stages.transcript import TranscriptStage
from emotivoice.config import Settings
from emotivoice.storage.store import Store

log = logging.getLogger(__name__)


class LiveEngine:
    def __init__(self, settings: Settings, store: Store, inbox: FrameInbox | None = None,
                 emotion_model: EmotionModel | None = None, publisher: AlertPublisher | None = None,
                 finalizer: Finalizer | None = None, transcriber=None):
        """`emotion_model`: the encoder and head (loaded on one thread when None); `transcriber`:
        a Whisper (analysis/whisper.py's WhisperRuntime, or anything with its `transcribe`),
        loaded by the transcript stage at start when None."""
        self.settings, self.store = settings, store
        self.cfg = settings.live
        self.finalizer = finalizer
        keep = self.cfg.keep_audio or (self.cfg.finalize == "batch" and finalizer is not None)
        # the sink connectors feed: records first, then offers each frame to the analysis inbox
        self.inbox = RecordingFront(self.cfg, inbox or FrameInbox(self.cfg.max_queued_frames), record=keep)
        # one thread each: the emotion stage and the transcript stage each own a core
        self.emotions = EmotionStage(settings, emotion_model, threads=1)
        self.emotion, self.recalibrator = self.emotions.model, self.emotions.recalibrator
        self.transcripts = TranscriptStage(settings, transcriber, live=True)
        self.publisher = publisher or AlertPublisher(self.cfg.webhook_url, self.cfg.webhook_retries,
                                                     self.cfg.webhook_timeout_s)
        rc = settings.redaction
        # one per process: Presidio's engine (seconds to load) is built by the transcript stage at start
        self.redactor = Redactor.from_settings(settings) if rc.live and rc.transcripts else None
        self.calls: dict[str, LiveCall] = {}
        self.latencies: list[dict] = []  # per final utterance: seconds from speech end to stored emotion/text
        self._counters: collections.Counter[str] = collections.Counter()  # ingest's own
        self.store_health = StoreHealth()  # what the writer and finaliser met storing (analysis/live/writer.py)
        self._lock = threading.RLock()  # the call lock: every LiveCall's state
        # a call's work moved on (scored, saved, forgotten): the finaliser waits on it for a call to settle
        self.settled = threading.Condition(self._lock)
        # calls the writer is storing right now: the finaliser waits for them, then marks the call
        # finalizing, after which only it stores the call
        self._saving: set[str] = set()
        self.emotion_step = EmotionStep(self, self.emotions)
        self.transcript_step = TranscriptStep(self, self.transcripts, self.redactor)
        self.insight_step = InsightStep(self, InsightStage(settings))
        self.writer = WriterStep(self)
        self.finaliser = FinalizerStep(self)
        self.chain = (self.emotion_step, self.transcript_step, self.insight_step, self.writer, self.finaliser)
        self._running = False
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LiveEngine:
        self._running = True
        apply_retention(self.cfg.audio_dir, self.cfg.retention_days)
        self.inbox.begin()
        ingest = threading.Thread(target=self._ingest, name="live-ingest", daemon=True)
        ingest.start()
        self._threads = [ingest, *(stage.start(f"live-{stage.name}") for stage in self.chain)]
        self.transcript_step.started.wait(300)
        if self.transcript_step.error:
            log.error("live transcription unavailable: emotions only", extra={"error": self.transcript_step.error})
        return self

    def stop(self, wait_s: float = 30.0) -> None:
        """Take what is already in the inbox, end every open call (finalising it), drain the
        queues, stop the stages."""
        deadline = time.monotonic() + wait_s
        while self.inbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            open_calls = [cid for cid, c in self.calls.items() if not c.ended]
        for call_id in open_calls:
            self.inbox.end(CallEnded(call_id, "service stopping"))
        while self.inbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:  # every call finalised (the finaliser forgets each and notifies)
            self.settled.wait_for(lambda: not self.calls and not self.writer.pending(),
                                  timeout=max(0.0, deadline - time.monotonic()))
        self._running = False
        for stage in self.chain:  # in chain order: each drains what the one before handed it
            stage.stop()
            if stage.thread is not None:
                stage.thread.join(max(0.1, deadline - time.monotonic()))
        self._threads[0].join(max(0.1, deadline - time.monotonic()))
        self.inbox.close()
        self.publisher.close()

    @property
    def counters(self) -> collections.Counter[str]:
        """Every stage's counters and ingest's, merged (a copy: read it, do not write it)."""
        out = collections.Counter(dict(self._counters))  # dict(): one C-level copy while stages count on
        for stage in self.chain:
            out.update(dict(stage.counters))
        return out

    def stats(self) -> dict:
        """Load and health figures for logs and benchmarks: per stage its queue, batches,
        failures, and the error of a stage that is dead or whose model failed last."""
        with self._lock:
            active = sum(1 for c in self.calls.values() if not c.ended)
        errors = {f"{s.name}_error": s.error for s in self.chain if s.error}
        errors.update({f"{s.name}_failure": s.failure for s in self.chain if s.failure})
        return {"active_calls": active, "emotion_queue": self.emotion_step.pending(),
                "transcript_backlog_s": round(self.transcript_step.backlog_s(), 1),
                "insight_queue": self.insight_step.pending(), "writer_queue": self.writer.pending(),
                "finals_queue": self.finaliser.pending(),
                "dropped_frames": self.inbox.total_dropped, **self.inbox.stats(), **self.counters, **errors,
                **self.store_health.report()}

    def mark_dirty(self, call_id: str) -> None:
        """The call changed: the writer stores its newest state (unless the finaliser owns it)."""
        call = self.calls.get(call_id)
        if call is None or call.finalizing:
            return
        self.writer.put(call_id)

    def _score(self, call: LiveCall) -> None:
        """Score what of `call` is ready now, in this thread (the insight stage's own step)."""
        self.insight_step.score(call)

    # ---- ingest: messages -> legs -> endpointing ----------------------------------------------

    def _ingest(self) -> None:
        while self._running:
            msg = self.inbox.get(timeout=0.2)  # a blocking get; the timeout only lets stop() in
            if msg is None:
                continue
            try:
                if isinstance(msg, Frame):
                    self._on_frame(msg)
                elif isinstance(msg, CallStarted):
                    self._on_start(msg)
                elif isinstance(msg, CallEnded):
                    self._on_end(msg)
            except Exception:  # one bad message must not stop every call's analysis
                log.exception("live message failed", extra={"call_id": getattr(msg, "call_id", None)})

    def _on_start(self, started: CallStarted) -> None:
        if started.call_id in self.calls:
            log.warning("call started twice; ignoring the second start", extra={"call_id": started.call_id})
            return
        recorder, why_not = self.inbox.recording(started.call_id)  # made (and written) by the front
        call = new_call(started, self.settings, self.emotions.name, self.emotions.provisional, recorder=recorder)
        if self.redactor is not None:  # the policy its live rows are stored under, from the first save
            call.redaction = RedactionReport(self.redactor.policy)
            call.result.metrics["redaction"] = call.redaction.summary()
        if why_not:
            call.result.warnings.append(why_not)
        with self._lock:  # stored once its first sound arrives (_on_frame): no row for a call without media
            self.calls[started.call_id] = call
        log.info("live call started", extra={"call_id": started.call_id, "source": started.source,
                                              "legs": [leg.leg for leg in started.legs], "remote": started.remote,
                                              "external": started.metadata.get("external")})

    def _on_frame(self, frame: Frame) -> None:
        call = self.calls.get(frame.call_id)
        leg = call.legs.get(frame.leg) if call else None
        if leg is None or call.ended:
            self._counters["orphan_frames"] += 1
            return
        if frame.seq < leg.next_seq:
            self._counters["late_frames"] += 1
            return
        pcm = np.frombuffer(frame.pcm, dtype="<i2")
        if not call.has_media and pcm.any():  # the first sound: from now on the call is stored
            with self._lock:
                call.has_media = True
                self.mark_dirty(call.call_id)
        gap = frame.seq - leg.next_seq
        # keep leg time true, and the same as the recording's (the front fills by the same rule):
        # frames shed by the analysis inbox or lost upstream become silence
        if 0 < gap and gap * len(pcm) <= self.cfg.max_gap_fill_s * leg.info.sample_rate:
            call.lost_frames += gap
            self._feed(call, leg, np.zeros(gap * len(pcm), np.int16))
        leg.next_seq = frame.seq + 1
        self._feed(call, leg, pcm)

    def _feed(self, call: LiveCall, leg: LiveLeg, pcm: np.ndarray) -> None:
        leg.samples += len(pcm)  # the recording front has written this leg's audio already
        for speech in leg.endpointer.feed(pcm):
            self._enqueue(call, leg, speech)

    def _enqueue(self, call: LiveCall, leg: LiveLeg, speech: Speech) -> None:
        clip = to_16k(speech.clip, leg.info.sample_rate)
        with self._lock:
            item = call.new_utterance(leg, speech.start, speech.end, clip, speech.end_wall, speech.final)
        if speech.final:
            self.emotion_step.put(item)
        else:
            self.emotion_step.put_interim(item)

    def _on_end(self, ended: CallEnded) -> None:
        call = self.calls.get(ended.call_id)
        if call is None or call.ended:
            return
        for leg in call.legs.values():
            for speech in leg.endpointer.flush():
                self._enqueue(call, leg, speech)
        call.missing_frames = sum(ended.missing_frames.values())
        self._counters["missing_frames"] += call.missing_frames
        self._note_recording(call, self.inbox.summary(ended.call_id))
        with self._lock:
            call.ended, call.ended_at = True, datetime.now(timezone.utc)
            for leg in call.legs.values():  # rolling updates end with the call
                leg.interim = None
        self.emotion_step.drop_interims(call.call_id)
        self.finaliser.put(call.call_id)
        log.info("live call ended", extra={"call_id": ended.call_id, "reason": ended.reason})

    def _note_recording(self, call: LiveCall, rec: RecordingSummary | None) -> None:
        """What the front made of the call's recording (it is complete now): a call whose sound was
        all shed from analysis still has media, and the call says what its recording holds."""
        if rec is None:
            return
        call.recording = rec
        with self._lock:
            if rec.sound and not call.has_media:
                call.has_media = True
                self.mark_dirty(call.call_id)
        shed = sum(self.inbox.drops(call.call_id).values())
        filled = sum(leg["filled_frames"] for leg in rec.legs.values())
        lost = sum(leg["lost_s"] for leg in rec.legs.values())
        if rec.recorder is None or rec.error or not (shed or filled or lost):
            return
        seconds = ", ".join(f"{name} {leg['seconds']:.2f} s" for name, leg in rec.legs.items())
        note = f"recording: every leg recorded whole ({seconds})"
        if filled:
            note += f"; {filled} frames the source never sent recorded as silence"
        if lost:
            note += f"; {lost:.2f} s recorded as silence (recording memory bound)"
        if shed:
            note += f"; {shed} frames shed from live analysis (over capacity), analysed by the final pass"
        call.result.warnings.append(note)
