"""The live analysis service: frames in, per-speaker emotions, transcripts, risk and alerts out.

Connectors feed `engine.inbox`, the recording front (analysis/live/recording.py): every leg is
recorded there first, by its own writer thread, and only then offered to the bounded analysis
inbox, which sheds frames (counted on the call and in stats()) when analysis is over capacity;
a call ends for the engine only once its recording is complete, so the batch pass always runs on
the whole call. When recording itself falls behind, the front refuses new calls (`admit`).

Five threads, each with one job, so that the fast answer never waits on the slow one:

- ingest: takes messages from the analysis inbox, runs VAD endpointing per leg;
- emotion: base emotions (and their tiers) for every finished utterance, rolling updates for long
  ones; its own single-threaded copy of the encoder, so a transcription never holds it up;
- transcript: Whisper on finished utterances, several joined into one pass; niced, and when its
  backlog passes `live.transcript_backlog_s` the oldest are left to the final pass (shed first,
  emotions never) and counted on the call;
- writer: stores each changed call through the store (the process that owns the file);
- finalize: at hang-up, keeps the audio and hands it to the batch pass, which supersedes the
  live results (analysis/live/finalize.py).

The writer and the finaliser live in analysis/live/writer.py: no storage error of any kind stops
them; it is retried until it succeeds and reported in stats() as `store_fault` meanwhile.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from emotivoice.analysis.audio import rms_dbfs
from emotivoice.analysis.emotion.model import EmotionModel, load_emotion_model
from emotivoice.analysis.emotion.recalibration import recalibrator_for
from emotivoice.analysis.emotion.tiers import complex_emotion, granular
from emotivoice.analysis.insight.prosody import measure as measure_prosody
from emotivoice.analysis.insight.stage import InsightState
from emotivoice.analysis.live.alerts import AlertPublisher
from emotivoice.analysis.live.call import LiveCall, LiveLeg, LiveUtterance, speakers_for
from emotivoice.analysis.live.endpoint import Endpointer, Speech, to_16k
from emotivoice.analysis.live.finalize import Finalizer
from emotivoice.analysis.live.inbox import FrameInbox
from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame
from emotivoice.analysis.live.recorder import apply_retention
from emotivoice.analysis.live.recording import RecordingFront, RecordingSummary
from emotivoice.analysis.live.rules import live_rule_alerts
from emotivoice.analysis.live.storehealth import StoreHealth
from emotivoice.analysis.redaction.stage import RedactionReport, Redactor
from emotivoice.analysis.live.writer import run_finalizer, run_writer
from emotivoice.analysis.results import CallResult, Utterance
from emotivoice.analysis.transcription import Word, transcribe_utterances
from emotivoice.config import Settings
from emotivoice.storage.store import Store

log = logging.getLogger(__name__)

TRANSCRIBE_BATCH_S = 20.0  # audio joined into one Whisper pass (it always encodes 30 s windows)
REDACT_CONTEXT = 3  # earlier transcribed utterances of the call a new one is redacted after (the question asked)


class LiveEngine:
    def __init__(self, settings: Settings, store: Store, inbox: FrameInbox | None = None,
                 emotion_model: EmotionModel | None = None, publisher: AlertPublisher | None = None,
                 finalizer: Finalizer | None = None):
        self.settings, self.store = settings, store
        self.cfg = settings.live
        self.finalizer = finalizer
        keep = self.cfg.keep_audio or (self.cfg.finalize == "batch" and finalizer is not None)
        # the sink connectors feed: records first, then offers each frame to the analysis inbox
        self.inbox = RecordingFront(self.cfg, inbox or FrameInbox(self.cfg.max_queued_frames), record=keep)
        tc = settings.transcription
        # one thread each: the emotion thread and the transcript thread each own a core
        self.emotion = emotion_model or load_emotion_model(settings.emotion, settings.model_cache_dir,
                                                           tc.compute_type, 1)
        self.recalibrator = recalibrator_for(settings)
        self.publisher = publisher or AlertPublisher(self.cfg.webhook_url, self.cfg.webhook_retries,
                                                     self.cfg.webhook_timeout_s)
        rc = settings.redaction
        # one per process: Presidio's engine (seconds to load) is built by the transcript thread at start
        self.redactor = Redactor.from_settings(settings) if rc.live and rc.transcripts else None
        self.calls: dict[str, LiveCall] = {}
        self.latencies: list[dict] = []  # per final utterance: seconds from speech end to stored emotion/text
        self.counters: collections.Counter[str] = collections.Counter()
        self.store_health = StoreHealth()  # what the writer and finaliser met storing (analysis/live/writer.py)
        self._lock = threading.RLock()
        # calls the writer is storing right now: the finaliser waits for them, then marks the call
        # finalizing, after which only it stores the call
        self._saving: set[str] = set()
        self._work = threading.Condition(self._lock)
        self._emotion_queue: collections.deque[LiveUtterance] = collections.deque()
        self._interims: dict[tuple[str, str], LiveUtterance] = {}
        self._transcript_queue: collections.deque[LiveUtterance] = collections.deque()
        self._dirty: set[str] = set()
        self._finishing: collections.deque[str] = collections.deque()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._transcriber_ready = threading.Event()
        self._transcriber_error: str | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LiveEngine:
        self._running = True
        apply_retention(self.cfg.audio_dir, self.cfg.retention_days)
        self.inbox.begin()
        for name, target in (("live-ingest", self._ingest), ("live-emotion", self._emotion_worker),
                             ("live-transcript", self._transcript_worker), ("live-writer", self._writer),
                             ("live-finalize", self._finalizer)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._transcriber_ready.wait(300)
        if self._transcriber_error:
            log.error("live transcription unavailable: emotions only", extra={"error": self._transcriber_error})
        return self

    def stop(self, wait_s: float = 30.0) -> None:
        """Take what is already in the inbox, end every open call (finalising it), drain the
        queues, stop the threads."""
        deadline = time.monotonic() + wait_s
        while self.inbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            open_calls = [cid for cid, c in self.calls.items() if not c.ended]
        for call_id in open_calls:
            self.inbox.end(CallEnded(call_id, "service stopping"))
        while self.inbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        while time.monotonic() < deadline:
            with self._lock:
                if not self.calls and not self._dirty:
                    break
            time.sleep(0.1)
        self._running = False
        with self._work:
            self._work.notify_all()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self.inbox.close()
        self.publisher.close()

    def stats(self) -> dict:
        """Load and health figures for logs and benchmarks."""
        with self._lock:
            return {"active_calls": sum(1 for c in self.calls.values() if not c.ended),
                    "emotion_queue": len(self._emotion_queue),
                    "transcript_backlog_s": round(sum(u.end - u.start for u in self._transcript_queue), 1),
                    "dropped_frames": self.inbox.total_dropped, **self.inbox.stats(), **self.counters,
                    **self.store_health.report()}

    # ---- ingest: messages -> legs -> endpointing ----------------------------------------------

    def _ingest(self) -> None:
        while self._running:
            msg = self.inbox.get(timeout=0.2)
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
        sc, ec = self.settings.segmentation, self.cfg
        speakers = speakers_for(started.legs)
        legs = {info.leg: LiveLeg(info, i, speakers[i], Endpointer(  # the final pass's VAD settings
            info.sample_rate, ec.endpoint_silence_s, sc.min_speech_s, sc.max_utterance_s, ec.rolling_update_s,
            sc.vad_threshold, sc.vad_neg_threshold, sc.vad_window_s, sc.vad_warmup_s))
            for i, info in enumerate(started.legs)}
        result = CallResult(call_id=started.call_id, source=f"{started.source}:{started.remote}", duration_s=0.0,
                            channels=len(legs), diarization="one leg per speaker (live)", vad="silero (live)",
                            asr_model=f"faster-whisper:{self.settings.transcription.model}",
                            emotion_model=self.emotion.name, emotion_provisional=self.emotion.provisional,
                            speakers=speakers)
        recorder, why_not = self.inbox.recording(started.call_id)  # made (and written) by the front
        call = LiveCall(started, result, legs, InsightState(self.settings.sarcasm, self.settings.risk), recorder)
        if self.redactor is not None:  # the policy its live rows are stored under, from the first save
            call.redaction = RedactionReport(self.redactor.policy)
            result.metrics["redaction"] = call.redaction.summary()
        if why_not:
            result.warnings.append(why_not)
        with self._lock:  # stored once its first sound arrives (_on_frame): no row for a call without media
            self.calls[started.call_id] = call
        log.info("live call started", extra={"call_id": started.call_id, "source": started.source,
                                              "legs": [leg.leg for leg in started.legs], "remote": started.remote,
                                              "external": started.metadata.get("external")})

    def _on_frame(self, frame: Frame) -> None:
        call = self.calls.get(frame.call_id)
        leg = call.legs.get(frame.leg) if call else None
        if leg is None or call.ended:
            self.counters["orphan_frames"] += 1
            return
        if frame.seq < leg.next_seq:
            self.counters["late_frames"] += 1
            return
        pcm = np.frombuffer(frame.pcm, dtype="<i2")
        if not call.has_media and pcm.any():  # the first sound: from now on the call is stored
            with self._work:
                call.has_media = True
                self._mark_dirty(call.call_id)
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
        with self._work:
            item = call.new_utterance(leg, speech.start, speech.end, clip, speech.end_wall, speech.final)
            if speech.final:
                self._emotion_queue.append(item)
            else:
                self._interims[(call.call_id, leg.info.leg)] = item  # only the newest update matters
            self._work.notify_all()

    def _on_end(self, ended: CallEnded) -> None:
        call = self.calls.get(ended.call_id)
        if call is None or call.ended:
            return
        for leg in call.legs.values():
            for speech in leg.endpointer.flush():
                self._enqueue(call, leg, speech)
        call.missing_frames = sum(ended.missing_frames.values())
        self.counters["missing_frames"] += call.missing_frames
        self._note_recording(call, self.inbox.summary(ended.call_id))
        with self._work:
            call.ended, call.ended_at = True, datetime.now(timezone.utc)
            for leg in call.legs.values():  # rolling updates end with the call
                leg.interim = None
                self._interims.pop((call.call_id, leg.info.leg), None)
            self._finishing.append(call.call_id)
            self._work.notify_all()
        log.info("live call ended", extra={"call_id": ended.call_id, "reason": ended.reason})

    def _note_recording(self, call: LiveCall, rec: RecordingSummary | None) -> None:
        """What the front made of the call's recording (it is complete now): a call whose sound was
        all shed from analysis still has media, and the call says what its recording holds."""
        if rec is None:
            return
        call.recording = rec
        with self._work:
            if rec.sound and not call.has_media:
                call.has_media = True
                self._mark_dirty(call.call_id)
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

    # ---- emotion: first, always ---------------------------------------------------------------

    def _emotion_worker(self) -> None:
        ec = self.settings.emotion
        while True:
            with self._work:
                while self._running and not self._emotion_queue and not self._interims:
                    self._work.wait(0.5)
                if not self._running and not self._emotion_queue:
                    return
                if self._emotion_queue:
                    batch = [self._emotion_queue.popleft() for _ in range(min(4, len(self._emotion_queue)))]
                else:
                    batch = list(self._interims.values())[:4]
                    for item in batch:
                        self._interims.pop((item.call_id, item.leg.info.leg), None)
            try:
                probabilities = [self._recalibrated(item, probs) for item, probs in
                                 zip(batch, self.emotion.predict([item.clip for item in batch]))]
            except Exception as exc:  # a dead model: report it, keep the calls (the final pass retries)
                log.error("emotion model failed", extra={"error": str(exc), "utterances": len(batch)})
                self.counters["emotion_failures"] += len(batch)
                probabilities = [{} for _ in batch]
            now = time.time()
            for item, probs in zip(batch, probabilities):
                item.utterance = self._utterance(item, probs, ec)
                item.emotion_at = now
            with self._work:
                for item in batch:
                    self._emotion_done(item)
                self._work.notify_all()

    def _utterance(self, item: LiveUtterance, probs: dict[str, float], ec) -> Utterance:
        loudness = rms_dbfs(item.clip)
        prosody = measure_prosody(item.clip, loudness, 0) if probs else None
        return Utterance(call_id=item.call_id, leg=item.leg.index, speaker=item.leg.speaker.label,
                         start=item.start, end=item.end, loudness_dbfs=loudness, emotions=probs,
                         granular=granular(probs, ec.high_intensity, ec.low_intensity, ec.granular_floor),
                         complex=complex_emotion(probs, ec.complex_min_second), prosody=prosody,
                         partial=not item.final)

    def _emotion_done(self, item: LiveUtterance) -> None:
        call_id = item.call_id
        call = self.calls.get(call_id)
        if call is None:
            return
        leg = item.leg
        if not item.final:
            if call.ended:
                return
            if leg.interim is None or item.start >= leg.interim.start:
                leg.interim = item
            self._mark_dirty(call_id)
            return
        if leg.interim is not None and leg.interim.start < item.end:
            leg.interim = None  # the finished utterance replaces its rolling updates
        if self.cfg.transcribe and not self._transcriber_error:
            self._transcript_queue.append(item)
        else:
            item.transcript = "off"
            self._score(call)
        self._mark_dirty(call_id)

    # ---- transcript: as soon as there is time --------------------------------------------------

    def _transcript_worker(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)  # Whisper's threads inherit it
        except OSError:
            pass
        try:
            from emotivoice.analysis.assets import whisper_model_dir
            from emotivoice.analysis.whisper import WhisperRuntime

            tc = self.settings.transcription
            whisper = WhisperRuntime(whisper_model_dir(tc.model, self.settings.model_cache_dir), tc.compute_type, 1)
            if self.redactor is not None:  # no live text at all rather than unredacted text
                from emotivoice.analysis.redaction import engine as redaction_engine

                redaction_engine.analyzer_engine()
        except Exception as exc:
            self._transcriber_error = str(exc)
            return
        finally:
            self._transcriber_ready.set()
        while True:
            with self._work:
                while self._running and not self._transcript_queue:
                    self._work.wait(0.5)
                if not self._running and not self._transcript_queue:
                    return
                self._shed_backlog()
                batch, total = [], 0.0
                while self._transcript_queue and (not batch or total + self._transcript_queue[0].clip.size / 16000
                                                  <= TRANSCRIBE_BATCH_S):
                    item = self._transcript_queue.popleft()
                    batch.append(item)
                    total += item.clip.size / 16000
            if not batch:
                continue
            try:
                tc = self.settings.transcription
                # raw clips: transcribe_utterances levels each one as the final pass does; groups keep
                # a retried utterance's prompt to its own call and leg (a batch mixes calls)
                transcript = transcribe_utterances(
                    whisper, [i.clip for i in batch], [i.start for i in batch], tc.language, self.cfg.beam_size,
                    config=tc, groups=[(i.call_id, i.leg.info.leg) for i in batch])
                words, notes, language = transcript.words, transcript.notes, transcript.language
            except Exception as exc:
                log.error("live transcription failed", extra={"error": str(exc), "utterances": len(batch)})
                words, notes, language = [[] for _ in batch], ["" for _ in batch], ""
            texts, context = self._redact(batch, words)  # before any thread can store, score or send them
            with self._work:
                for item, (text, w), note in zip(batch, texts, notes):
                    u = item.utterance
                    u.words, u.text, u.language = w, text, language
                    u.transcript_note = note
                    if u.prosody is not None:  # the speaking rate needed the words
                        u.prosody = replace(u.prosody, rate_wps=len(w) / max(u.end - u.start, 0.25))
                    item.transcript = "done"
                for u, (text, w) in context:  # an entity that began in an earlier utterance
                    u.text, u.words = text, w
                for call_id in {i.utterance.call_id for i in batch}:
                    if call_id in self.calls:
                        self._score(self.calls[call_id])
                        self._mark_dirty(call_id)

    def _redact(self, batch: list[LiveUtterance], words: list[list[Word]]
                ) -> tuple[list[tuple[str, list[Word]]], list[tuple[Utterance, tuple[str, list[Word]]]]]:
        """(text, words) for each utterance of `batch`, redacted after the call's last few
        utterances, and the (utterance, (text, words)) of those earlier ones an entity ran back
        into. Runs on copies, outside the lock; the caller applies the result under it."""
        texts = [("".join(x.word for x in w).strip(), w) for w in words]
        if self.redactor is None:
            return texts, []
        out: list[tuple[str, list[Word]] | None] = [None] * len(batch)
        context_out = []
        for call_id in dict.fromkeys(item.call_id for item in batch):
            mine = [i for i, item in enumerate(batch) if item.call_id == call_id]
            copies = [replace(batch[i].utterance, text=texts[i][0], words=texts[i][1]) for i in mine]
            with self._lock:
                call = self.calls.get(call_id)
                done = [u.utterance for u in (call.utterances if call else [])
                        if u.transcript == "done" and u.utterance is not None and u.utterance.words]
                earlier = [(u, replace(u)) for u in done[-REDACT_CONTEXT:]]
            try:
                report = self.redactor.redact_utterances(copies, context=[c for _, c in earlier])
            except Exception as exc:  # no text rather than unredacted text; the final pass transcribes again
                log.error("live redaction failed: transcript dropped", extra={"call_id": call_id, "error": str(exc)})
                self.counters["redaction_failures"] += len(mine)
                for i in mine:
                    out[i] = ("", [])
                continue
            for i, c in zip(mine, copies):
                out[i] = (c.text, c.words)
            changed = {id(c) for c in report.changed}
            context_out += [(u, (c.text, c.words)) for u, c in earlier if id(c) in changed]
            if call is not None:
                with self._lock:
                    total = call.redaction = call.redaction or RedactionReport(report.policy)
                    total.counts.update(report.counts)
                    total.spans += report.spans
                    total.changed += report.changed
                    call.result.metrics["redaction"] = total.summary()
        return out, context_out

    def _shed_backlog(self) -> None:
        """Beyond capacity, transcripts wait for the final pass so that emotions stay on time."""
        backlog = sum(i.end - i.start for i in self._transcript_queue)
        while self._transcript_queue and backlog > self.cfg.transcript_backlog_s:
            item = self._transcript_queue.popleft()
            backlog -= item.end - item.start
            item.transcript = "shed"
            self.counters["transcripts_shed"] += 1
            call = self.calls.get(item.utterance.call_id)
            if call:
                call.shed_transcripts += 1
                self._score(call)
                self._mark_dirty(call.call_id)
            if self.counters["transcripts_shed"] in (1, 10, 100) or self.counters["transcripts_shed"] % 1000 == 0:
                log.warning("over capacity: live transcripts deferred to the final pass",
                            extra={"shed": self.counters["transcripts_shed"], "backlog_s": round(backlog, 1)})

    # ---- insight and alerts ---------------------------------------------------------------------

    def _recalibrated(self, item, probs: dict[str, float]) -> dict[str, float]:
        """The deployment's correction for the call's team (the final pass picks the same profile)."""
        call = self.calls.get(item.call_id)
        if call is None:
            return probs
        if call.result.calibration is None:
            call.result.calibration = self.recalibrator.summary_for(call.started.metadata.get("team"))
        return self.recalibrator.apply([probs], call.result.calibration["profile"])[0]

    def _score(self, call: LiveCall) -> None:
        for item, alert in [*call.score_ready(), *live_rule_alerts(call, self.settings.analytics)]:
            speaker = next((s for s in call.result.speakers if s.label == alert.speaker), None)
            self.counters["alerts"] += 1
            self.publisher.publish({
                "call_id": call.call_id, "speaker": alert.speaker, "role": speaker.role if speaker else None,
                "t_s": round(alert.t_s, 2), "score": round(alert.score, 3), "factors": alert.factors,
                "kind": alert.kind, "text": item.utterance.text,
                "emotion": item.utterance.top_emotion[0], **{k: call.started.metadata.get(k)
                                                             for k in ("agent_id", "customer_id", "team")},
            })

    # ---- writer ---------------------------------------------------------------------------------

    def _mark_dirty(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.finalizing:
            return
        self._dirty.add(call_id)
        self._work.notify_all()

    def _writer(self) -> None:
        run_writer(self)

    def _finalizer(self) -> None:
        run_finalizer(self)
