"""The shared model stages as Ray actor pools that batch: emotion (encoder + head) and Whisper.

Every call actor sends its finished utterances here, one request per utterance; each worker
gathers what is queued into one model call (up to `live.emotion_batch` clips, or
`live.transcribe_batch_s` of speech joined into one Whisper pass, as the embedded engine does:
the same rules, analysis/stages/transcript.py), so N calls cost one model
pass per batch instead of one per utterance. The model runs in a worker thread, so the actor
keeps taking requests while it computes; that is what lets the next batch form.

Why an actor pool and not Ray Serve: a Serve deployment adds a controller and a router in every
calling process (here: every call actor), which on a 2-core machine costs more than the batching
saves; a plain actor with an asyncio queue batches the same way (Serve's @serve.batch does
exactly this) and starts in the time its model loads.

Shedding is the embedded engine's: emotions are never shed; when the queued speech waiting for
Whisper passes `live.transcript_backlog_s`, the oldest waits for the final pass ("shed").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from emotivoice.analysis.stages.transcript import TranscriptStage, shed_backlog, take_pass
from emotivoice.config import Settings

log = logging.getLogger(__name__)


@dataclass
class _Request:
    clip: np.ndarray
    start: float
    future: asyncio.Future
    interim: bool = False  # a rolling update: served only when no finished utterance waits
    group: tuple[str, str] | None = None  # (call id, leg): a retried transcript is prompted only by its own leg
    seconds: float = field(init=False)
    queued_at: float = field(init=False)  # stage timing (time.time()): queued, then batch start/end

    def __post_init__(self) -> None:
        self.seconds = self.clip.size / 16000
        self.queued_at = time.time()


class _Worker:
    """An asyncio queue in front of a model that runs in one thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1)
        self._queue: list[_Request] = []
        self._more: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self.counters: dict[str, int] = {"requests": 0, "batches": 0, "failures": 0, "shed": 0}

    def _ensure_loop(self) -> None:
        if self._loop_task is None:
            self._more = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _submit(self, clip: np.ndarray, start: float = 0.0, interim: bool = False,
                      group: tuple[str, str] | None = None):
        self._ensure_loop()
        request = _Request(np.asarray(clip, np.float32), start, asyncio.get_running_loop().create_future(), interim,
                           group)
        self._queue.append(request)
        self.counters["requests"] += 1
        self._admitted()
        self._more.set()
        return await request.future

    def _admitted(self) -> None:
        """Hook: shed from the queue after a new request (transcripts)."""

    def _answer(self, request: _Request, result, timing: dict):
        """Hook: what a caller gets for its request (emotions add their stage timing)."""
        return result

    def _take(self) -> list[_Request]:
        raise NotImplementedError

    def _compute(self, batch: list[_Request]) -> list:
        raise NotImplementedError

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._more.wait()
            self._more.clear()
            while self._queue:
                batch = self._take()
                self.counters["batches"] += 1
                began = time.time()
                try:
                    results = await loop.run_in_executor(self._executor, self._compute, batch)
                except Exception as exc:  # a dead model: each caller gets the error, the worker goes on
                    self.counters["failures"] += len(batch)
                    log.error("model stage failed", extra={"error": str(exc), "requests": len(batch)})
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                timing = {"batch_began_at": began, "batch_done_at": time.time(), "batch_size": len(batch)}
                for r, result in zip(batch, results):
                    if not r.future.done():
                        r.future.set_result(self._answer(r, result, timing))

    def stats(self) -> dict:
        return {**self.counters, "queued": len(self._queue),
                "queued_s": round(sum(r.seconds for r in self._queue), 1), "pid": os.getpid()}


class EmotionWorker(_Worker):
    """One copy of the emotion model (Whisper encoder + head, one thread)."""

    def __init__(self, settings: Settings, model=None):
        super().__init__()
        if model is None:
            from emotivoice.analysis.emotion.model import load_emotion_model

            model = load_emotion_model(settings.emotion, settings.model_cache_dir,
                                       settings.transcription.compute_type, 1)
        self.model = model
        self.name, self.provisional = model.name, model.provisional
        self.batch_size = settings.live.emotion_batch

    def info(self) -> tuple[str, bool]:
        return self.name, self.provisional

    async def predict(self, clip: np.ndarray, interim: bool = False) -> tuple[dict[str, float], dict, float | None]:
        """({emotion: probability}, stage timestamps, the head's intensity or None) for one 16 kHz
        clip, computed in a batch with other calls' clips; rolling updates (`interim`) wait while
        any finished utterance does (as the embedded engine). The intensity travels back because
        only this process saw the head's intensity output (HeadModel.intensity_of)."""
        return await self._submit(clip, interim=interim)

    def _answer(self, request: _Request, result, timing: dict):
        probs, intensity = result
        return probs, {"queued_at": request.queued_at, **timing}, intensity

    def _take(self) -> list[_Request]:
        finals = [r for r in self._queue if not r.interim]
        batch = (finals or self._queue)[:self.batch_size]
        taken = {id(r) for r in batch}
        self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    def _compute(self, batch: list[_Request]) -> list[tuple[dict[str, float], float | None]]:
        probs = self.model.predict([r.clip for r in batch])
        lookup = getattr(self.model, "intensity_of", None)
        return [(p, lookup(r.clip) if lookup is not None else None) for p, r in zip(probs, batch)]


class TranscriptWorker(_Worker):
    """One Whisper (the live settings: greedy decoding), niced below the emotion stage."""

    def __init__(self, settings: Settings, whisper=None):
        super().__init__()
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 5)  # as the embedded engine's transcript thread
        except OSError:
            pass
        self.stage = TranscriptStage(settings, whisper, live=True)  # levelling, guards, retries: the engine's
        self.stage.load()
        self.whisper = self.stage.whisper
        self.backlog_s, self.pass_s = settings.live.transcript_backlog_s, settings.live.transcribe_batch_s
        rc = settings.redaction
        self.redactor = None
        if rc.live and rc.transcripts:  # words leave this worker redacted; Presidio loads once per worker
            from emotivoice.analysis.redaction import engine as redaction_engine
            from emotivoice.analysis.redaction.stage import Redactor

            self.redactor = Redactor.from_settings(settings)
            redaction_engine.analyzer_engine()

    def info(self) -> str:
        return "ready"

    async def transcribe(self, clip: np.ndarray, start: float,
                         group: tuple[str, str] | None = None) -> tuple[str, list, str, str]:
        """("done", words, language, note) for one utterance (the raw 16 kHz clip, starting at `start`
        leg time; levelled here, as in the final pass), or ("shed", [], "", "") when it waited past
        the backlog and is left to the final pass. `note` says why an utterance has no words."""
        return await self._submit(clip, start, group=group)

    def _admitted(self) -> None:
        for oldest in shed_backlog(self._queue, _seconds, self.backlog_s):
            self.counters["shed"] += 1
            oldest.future.set_result(("shed", [], "", ""))

    def _take(self) -> list[_Request]:
        return take_pass(self._queue, _seconds, self.pass_s)

    def _compute(self, batch: list[_Request]) -> list[tuple[str, list, str, str]]:
        # without a group a retry gets no prompt: one call's words must never prompt another's
        groups = [r.group or ("", str(i)) for i, r in enumerate(batch)]
        transcript = self.stage.transcribe([r.clip for r in batch], [r.start for r in batch], groups=groups)
        out = []
        for r, words, note in zip(batch, transcript.words, transcript.notes):
            try:
                out.append(("done", self._redact(words, r), transcript.language, note))
            except Exception as exc:  # no words rather than unredacted words; the final pass transcribes
                log.error("live redaction failed: transcript left to the final pass", extra={"error": str(exc)})
                self.counters["redaction_failures"] = self.counters.get("redaction_failures", 0) + 1
                out.append(("shed", [], "", ""))
        return out

    def _redact(self, words: list, request: _Request) -> list:
        """The utterance's words with personal data replaced (each utterance on its own here: the
        call's earlier turns live in its call actor; the final pass redacts with them)."""
        if self.redactor is None or not words:
            return words
        from emotivoice.analysis.results import Utterance

        u = Utterance("", 0, "", request.start, request.start + request.seconds, 0.0,
                      text="".join(w.word for w in words).strip(), words=list(words))
        self.redactor.redact_utterances([u])
        return u.words


def _seconds(request: _Request) -> float:
    return request.seconds


class Pool:
    """Round-robin over a stage's workers (Ray actor handles)."""

    def __init__(self, handles: list):
        self.handles, self._next = list(handles), 0

    def pick(self):
        handle = self.handles[self._next % len(self.handles)]
        self._next += 1
        return handle
