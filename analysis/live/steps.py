"""The live engine's analysis stages, each a `Stage` of analysis/live/chain.py running one of the
per-utterance stages of analysis/stages/:

    endpoint (ingest, engine.py) -> EmotionStep -> TranscriptStep -> InsightStep -> writer (writer.py)

- EmotionStep: emotions and tiers for every finished utterance, never shed; rolling updates of
  long speech only when no finished utterance waits (the newest per leg); a dead model gives
  utterances without emotions (counted, in stats(); the final pass retries) and the call goes on.
- TranscriptStep: Whisper on finished utterances, several joined into one pass; niced; when its
  backlog passes `live.transcript_backlog_s` the oldest are left to the final pass (shed first,
  counted on the call); a dead Whisper leaves utterances without words, never holds one up.
- InsightStep: the only thread that scores risk, sarcasm and rules (analysis/stages/insight.py);
  it publishes the alerts after letting go of the call lock.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from emotivoice.analysis.live.call import LiveUtterance
from emotivoice.analysis.live.chain import Stage
from emotivoice.analysis.redaction.stage import RedactionReport, Redactor
from emotivoice.analysis.results import Utterance
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.analysis.stages.insight import InsightStage
from emotivoice.analysis.stages.transcript import TranscriptStage, attach_words, shed_backlog, take_pass, words_text
from emotivoice.analysis.transcription import Word

if TYPE_CHECKING:
    from emotivoice.analysis.live.engine import LiveEngine

log = logging.getLogger("emotivoice.analysis.live.engine")


def _spoken_s(item: LiveUtterance) -> float:
    return item.end - item.start


def _clip_s(item: LiveUtterance) -> float:
    return item.clip.size / 16000


class EmotionStep(Stage):
    name = "emotion"

    def __init__(self, engine: LiveEngine, stage: EmotionStage):
        super().__init__()
        self.engine, self.stage = engine, stage
        self.interims: dict[tuple[str, str], LiveUtterance] = {}  # only the newest update per leg matters

    def put_interim(self, item: LiveUtterance) -> None:
        with self.cond:
            self.interims[(item.call_id, item.leg.info.leg)] = item
            self.cond.notify()

    def drop_interims(self, call_id: str) -> None:
        with self.cond:
            for key in [k for k in self.interims if k[0] == call_id]:
                del self.interims[key]

    def ready(self) -> bool:
        return bool(self.queue or self.interims)

    def take(self) -> list[LiveUtterance]:
        n = self.engine.cfg.emotion_batch
        if self.queue:
            return [self.queue.popleft() for _ in range(min(n, len(self.queue)))]
        batch = list(self.interims.values())[:n]
        for item in batch:
            self.interims.pop((item.call_id, item.leg.info.leg), None)
        return batch

    def process(self, batch: list[LiveUtterance]) -> None:
        engine = self.engine
        try:
            # a finished utterance joins its leg's history; a rolling update is scored against it only
            raw = self.stage.predict([item.clip for item in batch],
                                     [(item.call_id, item.leg.info.leg) for item in batch],
                                     [item.final for item in batch])
            probabilities = [self._recalibrated(item, probs) for item, probs in zip(batch, raw, strict=True)]
        except Exception as exc:  # a dead model: report it, keep the calls (the final pass retries)
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("emotion model failed", extra={"error": str(exc), "utterances": len(batch)})
            self.counters["emotion_failures"] += len(batch)
            probabilities = [{} for _ in batch]
        now = time.time()
        for item, probs in zip(batch, probabilities):
            item.utterance = self.stage.for_item(item, probs)
            item.emotion_at = now
        with engine._lock:
            for item in batch:
                self._done(item)

    def _recalibrated(self, item: LiveUtterance, probs: dict[str, float]) -> dict[str, float]:
        """The deployment's correction for the call's team (the final pass picks the same profile)."""
        with self.engine._lock:
            call = self.engine.calls.get(item.call_id)
        if call is None:
            return probs
        return self.stage.recalibrate([probs], call.result, call.started.metadata.get("team"))[0]

    def _done(self, item: LiveUtterance) -> None:
        """Under the call lock: show it, and hand a finished utterance on."""
        engine = self.engine
        call = engine.calls.get(item.call_id)
        if call is None:
            return
        leg = item.leg
        if not item.final:
            if call.ended:
                return
            if leg.interim is None or item.start >= leg.interim.start:
                leg.interim = item
            engine.mark_dirty(item.call_id)
            return
        if leg.interim is not None and leg.interim.start < item.end:
            leg.interim = None  # the finished utterance replaces its rolling updates
        if engine.cfg.transcribe and engine.transcript_step.error is None:
            item.transcript_queued_at = time.time()
            engine.transcript_step.put(item)
        else:
            item.transcript = "off"
            engine.insight_step.put(item.call_id)
        engine.mark_dirty(item.call_id)


class TranscriptStep(Stage):
    name = "transcript"
    nice = 5  # Whisper's threads inherit it: emotions first

    def __init__(self, engine: LiveEngine, stage: TranscriptStage, redactor: Redactor | None):
        super().__init__()
        self.engine, self.stage, self.redactor = engine, stage, redactor
        self._left_s = 0.0  # the backlog a shed left, for its log line
        self._queued_s, self._taken = 0.0, 0.0  # the backlog the latest take left, and when
        # the latest passes' sizes and times (benchmarks/live.py reports them): appended by this
        # stage's thread only
        self.passes: collections.deque[dict] = collections.deque(maxlen=2000)

    def setup(self) -> None:
        self.stage.load()
        if self.redactor is not None:  # no live text at all rather than unredacted text
            from emotivoice.analysis.redaction import engine as redaction_engine

            redaction_engine.analyzer_engine()

    def backlog_s(self) -> float:
        with self.cond:
            return sum(_spoken_s(item) for item in self.queue)

    def shed(self) -> list[LiveUtterance]:
        shed = shed_backlog(self.queue, _spoken_s, self.engine.cfg.transcript_backlog_s)
        if shed:
            self._left_s = sum(map(_spoken_s, self.queue))  # read here, under the queue's condition
        return shed

    def on_shed(self, items: list[LiveUtterance]) -> None:
        engine = self.engine
        with engine._lock:
            for item in items:
                item.transcript = "shed"
                self.counters["transcripts_shed"] += 1
                call = engine.calls.get(item.call_id)
                if call:
                    call.shed_transcripts += 1
                    engine.insight_step.put(call.call_id)
                shed = self.counters["transcripts_shed"]
                if shed in (1, 10, 100) or shed % 1000 == 0:
                    log.warning("over capacity: live transcripts deferred to the final pass",
                                extra={"shed": shed, "backlog_s": round(self._left_s, 1)})

    def take(self) -> list[LiveUtterance]:
        batch = take_pass(self.queue, _clip_s, self.engine.cfg.transcribe_batch_s)
        now = time.time()
        for item in batch:
            item.transcript_taken_at = now
        self._queued_s = sum(map(_spoken_s, self.queue))  # what waits behind this pass, for `passes`
        self._taken = time.monotonic()
        return batch

    def on_dead(self, batch: list[LiveUtterance]) -> None:
        """Whisper never loaded: what reached it before anyone knew goes on without words."""
        with self.engine._lock:
            for item in batch:
                item.transcript = "off"
                self.engine.insight_step.put(item.call_id)

    def process(self, batch: list[LiveUtterance]) -> None:
        engine = self.engine
        t0, started = time.monotonic(), time.time()
        try:
            # raw clips: the stage levels each one as the final pass does; groups keep a retried
            # utterance's prompt to its own call and leg (a batch mixes calls)
            transcript = self.stage.transcribe([i.clip for i in batch], [i.start for i in batch],
                                               groups=[(i.call_id, i.leg.info.leg) for i in batch])
            words, notes, language = transcript.words, transcript.notes, transcript.language
        except Exception as exc:  # a dead Whisper: no words (the final pass transcribes), never stuck
            self.failure = f"{type(exc).__name__}: {exc}"
            self.counters["transcript_failures"] += len(batch)
            log.error("live transcription failed", extra={"error": str(exc), "utterances": len(batch)})
            words, notes, language = [[] for _ in batch], ["" for _ in batch], ""
        t1 = time.monotonic()
        texts, context = self._redact(batch, words)  # before any stage can store, score or send them
        t2 = time.monotonic()
        with engine._lock:
            t3, now = time.monotonic(), time.time()
            for item, (text, w), note in zip(batch, texts, notes):
                attach_words(item.utterance, w, language, note, text)
                item.transcript, item.transcript_at = "done", now
            for u, (text, w) in context:  # an entity that began in an earlier utterance
                u.text, u.words = text, w
            for call_id in dict.fromkeys(i.call_id for i in batch):
                engine.insight_step.put(call_id)
        self.passes.append({"at": round(started, 3), "queued_s": round(self._queued_s, 1),
                            "start_s": round(t0 - self._taken, 3), "utterances": len(batch),
                            "audio_s": round(sum(map(_clip_s, batch)), 2),
                            "whisper_s": round(t1 - t0, 3), "redact_s": round(t2 - t1, 3),
                            "lock_wait_s": round(t3 - t2, 3)})

    def _redact(self, batch: list[LiveUtterance], words: list[list[Word]]
                ) -> tuple[list[tuple[str, list[Word]]], list[tuple[Utterance, tuple[str, list[Word]]]]]:
        """(text, words) for each utterance of `batch`, redacted after the call's last few
        utterances, and the (utterance, (text, words)) of those earlier ones an entity ran back
        into. Runs on copies, outside the lock; the caller applies the result under it."""
        texts = [(words_text(w), w) for w in words]
        if self.redactor is None:
            return texts, []
        engine, keep = self.engine, self.engine.cfg.redact_context
        out: list[tuple[str, list[Word]] | None] = [None] * len(batch)
        context_out = []
        for call_id in dict.fromkeys(item.call_id for item in batch):
            mine = [i for i, item in enumerate(batch) if item.call_id == call_id]
            copies = [replace(batch[i].utterance, text=texts[i][0], words=texts[i][1]) for i in mine]
            with engine._lock:
                call = engine.calls.get(call_id)
                done = [u.utterance for u in (call.utterances if call else [])
                        if u.transcript == "done" and u.utterance is not None and u.utterance.words]
                earlier = [(u, replace(u)) for u in done[-keep:]] if keep else []
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
                with engine._lock:
                    total = call.redaction = call.redaction or RedactionReport(report.policy)
                    total.counts.update(report.counts)
                    total.spans += report.spans
                    total.changed += report.changed
                    call.result.metrics["redaction"] = total.summary()
        return out, context_out


class InsightStep(Stage):
    """Its queue holds call ids (each once) with utterances that may now be scored."""

    name = "insight"

    def __init__(self, engine: LiveEngine, stage: InsightStage):
        super().__init__()
        self.engine, self.stage = engine, stage

    def put(self, call_id: str) -> None:
        with self.cond:
            if call_id not in self.queue:
                self.queue.append(call_id)
            self.cond.notify()

    def take(self) -> list[str]:
        batch = list(self.queue)
        self.queue.clear()
        return batch

    def process(self, batch: list[str]) -> None:
        engine = self.engine
        with engine._lock:
            calls = [engine.calls[c] for c in batch if c in engine.calls]
        for call in calls:
            self.score(call)

    def score(self, call) -> None:
        """Score what of `call` is ready, store it, then publish its new alerts, lock released."""
        engine = self.engine
        with engine._lock:
            waiting = [u for u in call.utterances if not u.scored]
            alerts = self.stage.score(call)
            now = time.time()
            for u in waiting:
                if u.scored:
                    u.scored_at = now
            engine.mark_dirty(call.call_id)
            engine.settled.notify_all()
        for _, message in alerts:
            self.counters["alerts"] += 1
            engine.publisher.publish(message)
