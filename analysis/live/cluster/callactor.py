"""One call's live analysis as a Ray actor: the per-call stage state of the live chain.

It runs the embedded engine's per-utterance stages (analysis/stages/: emotion builds utterances,
transcript puts the words on, insight scores them; the models are the shared pools of models.py)
on the call's LiveCall (analysis/live/call.py, plain data): each leg's endpointer, the utterances
in the order they finish, the insight state. Audio comes in chunks of at least 200 ms with their
leg offset (samples), so a chunk Ray retries after a restart, or one that overtakes another, is
trimmed or held until it fits: each leg's audio is analysed exactly once, in order. `changes()`
is long-polled by the serving process and answers with what changed since the last answer (a
CallDelta, plain data).

Restart: when a call's actor dies, the engine hands the call to a standby actor with
begin(resume=True) (engine.py replace_actor; Ray's own restart, a new process, took 7 s on 2
cores). The actor then reads what the recording front (analysis/live/recording.py) has written
of each leg so far and replays it, legs interleaved, through the same stages; utterances are
analysed again, their alerts are not published twice, and the next delta rewrites the call.
Chunks that overlap what it replayed are trimmed; chunks the dead actor took (or that were sent
to it) beyond what the recording held are read from the recording once it does (the front
writes at least every 0.25 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import numpy as np

from emotivoice.analysis.live.call import LiveCall, LiveLeg, LiveUtterance, new_call
from emotivoice.analysis.live.endpoint import Endpointer, Speech, to_16k
from emotivoice.analysis.live.messages import CallStarted
from emotivoice.analysis.live.writer import note_load
from emotivoice.analysis.sink import to_record
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.analysis.stages.insight import InsightStage
from emotivoice.analysis.stages.transcript import attach_words
from emotivoice.storage.incremental import diff_record

log = logging.getLogger(__name__)

GAP_WAIT_S = 2.0  # a chunk that comes after a gap waits this long for the gap (the front writes every 0.25 s)


class CallActor:
    """Ray actor class (wrapped by ray.remote in engine.py); every method runs on its event loop.

    Made ahead of its call as a standby (engine.py keeps a few): a new Ray worker process that
    imports these modules and loads the VAD took 3-14 s on 2 cores (benchmarks/live_ray.py,
    actor_start_s), during which the call's audio queued; `begin()` then hands it its call at
    once, and `release()` after the call makes it a standby again (a new process costs ~3 CPU
    seconds). It serves one call at a time; a standby that takes over the call of an actor that
    died gets begin(resume=True), which rebuilds the call from the recording.
    """

    def __init__(self, shared: tuple, end_wait_s: float = 10.0):
        """`shared`: (settings, emotion pool, transcript pool, (emotion model name, provisional))."""
        self.settings, self.emotion, self.transcript, self.model_info = shared
        self.end_wait_s = end_wait_s
        # the deployment's emotion correction, from the calibration file as this node sees it
        name, provisional = self.model_info  # the pool predicts: this stage recalibrates and builds
        self.emotions = EmotionStage(self.settings, SimpleNamespace(name=name, provisional=provisional))
        self.insight = InsightStage(self.settings, rules=False)  # the rules are judged at the final pass
        self._reset()
        warm_up()

    def _reset(self) -> None:
        self.resumed = False
        self.call: LiveCall | None = None
        self.early: list[tuple] = []  # chunks that came before begin() (a restart, or overtaking it)
        self.totals: dict[str, int] | None = None  # each leg's length, once the call has ended
        self._missing = 0
        self.assigned = asyncio.Event()
        self.counters = {"late_chunks": 0, "resumed": 0, "resume_gap_samples": 0, "emotion_failures": 0,
                         "transcript_failures": 0, "restored_ms": 0}

    async def begin(self, started: CallStarted, recording: tuple | None = None, resume: bool = False) -> bool:
        """This actor's call (`recording`: (audio_dir, call_id, legs, rate) of the connector side's
        recording; `resume`: rebuild what it holds so far, after a restart); False when it already
        has one (a begin() the collector repeated)."""
        if self.call is not None:
            return False
        self.resumed = resume
        self._assign(started, recording)
        return True

    async def release(self) -> bool:
        """The call is stored: become a standby for the next one (False while work is left)."""
        if self.call is not None and (self.tasks or self._deferred):
            return False
        self._reset()
        return True

    def _assign(self, started: CallStarted, recording: tuple | None) -> None:
        self._deferred: list = []  # stage work a restore (in __init__, no event loop yet) left to start
        self._restoring = False
        self._end_at: float | None = None
        self.call = new_call(started, self.settings, *self.model_info)
        self.call.missing_frames = self._missing
        self.recording = recording
        self.changed = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.held: dict[str, dict[int, tuple[bytes, float]]] = {leg: {} for leg in self.call.legs}
        self.last = None  # the CallRecord the previous delta was made from
        self.marks: dict[int, dict] = {}  # utterance uid -> its state, since the last changes()
        self.alerts: list[dict] = []
        self.restored: set[int] = set()
        self.interim_busy: set[str] = set()  # legs with a rolling update at the emotion stage
        self._fed_at = time.time()
        self.stages: dict[int, dict] = {}  # utterance uid -> stage timestamps (benchmarks/live_ray.py)
        if self.resumed and recording:
            self._restore()
        early, self.early = self.early, []
        for call_id, *chunk in early:
            if call_id == started.call_id:
                self._take_chunk(*chunk)
        self.assigned_at = time.time()
        self.assigned.set()

    # ---- audio in ---------------------------------------------------------------------------------

    async def feed(self, call_id: str, leg: str, offset: int, pcm: bytes, arrived: float,
                   lost_frames: int = 0) -> None:
        """One chunk of a leg of call `call_id`, starting `offset` samples into it."""
        if self.call is None:
            self.early.append((call_id, leg, offset, pcm, arrived, lost_frames))
            return
        if call_id != self.call.call_id:  # a previous call's straggler
            self.counters["late_chunks"] += 1
            return
        self._take_chunk(leg, offset, pcm, arrived, lost_frames)

    def _take_chunk(self, leg: str, offset: int, pcm: bytes, arrived: float, lost_frames: int) -> None:
        state = self.call.legs.get(leg)
        if state is None or self.call.ended:  # after the end: its audio was read from the recording
            self.counters["late_chunks"] += 1
            return
        self.call.lost_frames = max(self.call.lost_frames, lost_frames)
        self._fed_at = time.time()  # stage timing: when the chunk that ends an utterance got here
        self.held[leg][offset] = (pcm, arrived)
        self._drain(leg)

    def _drain(self, leg: str, force: bool = False) -> None:
        state, held = self.call.legs[leg], self.held[leg]
        while held:
            offset = min(held)
            pcm_bytes, arrived = held[offset]
            pcm = np.frombuffer(pcm_bytes, dtype="<i2")
            if offset > state.samples:  # an earlier chunk has not arrived yet...
                # ...or, after a restart, the dead actor took it but the recording did not yet hold
                # it when this one was rebuilt (the front writes every 0.25 s): read it once it does
                gap = read_leg(self.recording, leg)[state.samples:offset] if self.resumed and self.recording \
                    else np.zeros(0, np.int16)
                if len(gap) == offset - state.samples:
                    self._feed(state, gap, arrived)
                    continue
                if not force and time.time() - arrived < GAP_WAIT_S:
                    return
                # still missing: what the recording holds, silence for the rest (counted), so a
                # recording this node cannot read does not hold the leg's analysis until hang-up
                self._feed(state, self._recorded(leg, state.samples, offset), arrived)
                continue
            del held[offset]
            if offset + len(pcm) <= state.samples:
                self.counters["late_chunks"] += 1  # retried after a restart: already heard
                continue
            self._feed(state, pcm[state.samples - offset:], arrived)

    def _feed(self, leg: LiveLeg, pcm: np.ndarray, arrived: float) -> None:
        leg.samples += len(pcm)
        if not self.call.has_media and pcm.any():
            self.call.has_media = True
            self.changed.set()
        for speech in leg.endpointer.feed(pcm, arrived):
            self._speech(leg, speech)

    def _speech(self, leg: LiveLeg, speech: Speech) -> None:
        clip = to_16k(speech.clip, leg.info.sample_rate)
        item = self.call.new_utterance(leg, speech.start, speech.end, clip, speech.end_wall, speech.final)
        if not speech.final:
            if self.call.ended or leg.info.leg in self.interim_busy:
                return  # one rolling update per leg in flight: the next comes rolling_update_s later
            self.interim_busy.add(leg.info.leg)
            self._spawn(self._interim(item))
            return
        if self._restoring:
            self.restored.add(item.uid)
        self.stages[item.uid] = {"fed_at": self._fed_at, "asked_at": time.time()}
        self._spawn(self._analyse(item))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro) if self._loop_running() else None
        if task is None:  # during __init__ (a restore) there is no running loop yet: run it later
            self._deferred.append(coro)
            return
        self.tasks.add(task)
        task.add_done_callback(self._done)

    @staticmethod
    def _loop_running() -> bool:
        return asyncio._get_running_loop() is not None  # the public getter raises without one

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call actor stage failed", extra={"call_id": self.call.call_id, "error": str(task.exception())})
        self.changed.set()

    # ---- the stages ---------------------------------------------------------------------------------

    async def _emotions(self, item: LiveUtterance, timed: bool = False):
        """The clip's emotions; with `timed`, (emotions, the pool's queue/compute timestamps)."""
        try:
            probs, timing, item.intensity = await self.emotion.pick().predict.remote(item.clip, not item.final)
        except Exception as exc:  # a dead model: report it, keep the call (the final pass retries)
            self.counters["emotion_failures"] += 1
            log.error("emotion stage failed", extra={"call_id": self.call.call_id, "error": str(exc)})
            probs, timing = {}, {}
        probs = self._recalibrated(probs)
        return (probs, timing) if timed else probs

    def _recalibrated(self, probs: dict[str, float]) -> dict[str, float]:
        """The call's team profile, as the embedded engine and the final pass pick it."""
        return self.emotions.recalibrate([probs], self.call.result, self.call.started.metadata.get("team"))[0]

    async def _interim(self, item: LiveUtterance) -> None:
        try:
            probs = await self._emotions(item)
        finally:
            self.interim_busy.discard(item.leg.info.leg)
        leg = item.leg
        if self.call.ended or (leg.interim is not None and item.start < leg.interim.start):
            return
        item.utterance, item.emotion_at = self.emotions.for_item(item, probs), time.time()
        leg.interim = item
        self.changed.set()

    async def _analyse(self, item: LiveUtterance) -> None:
        probs, timing = await self._emotions(item, timed=True)
        self.stages.setdefault(item.uid, {}).update(timing)
        item.utterance, item.emotion_at = self.emotions.for_item(item, probs), time.time()
        leg = item.leg
        if leg.interim is not None and leg.interim.start < item.end:
            leg.interim = None  # the finished utterance replaces its rolling updates
        self._mark(item)
        self.changed.set()
        if self.settings.live.transcribe:
            try:
                state, words, language, note = await self.transcript.pick().transcribe.remote(
                    item.clip, item.start, (self.call.call_id, item.leg.info.leg))
            except Exception as exc:
                self.counters["transcript_failures"] += 1
                log.error("transcript stage failed", extra={"call_id": self.call.call_id, "error": str(exc)})
                state, words, language, note = "shed", [], "", ""
            u = item.utterance
            if state == "done":
                attach_words(u, words, language, note)
            else:
                self.call.shed_transcripts += 1
            item.transcript = state
        else:
            item.transcript = "off"
        self._mark(item)
        self._score()

    def _mark(self, item: LiveUtterance) -> None:
        self.marks[item.uid] = {"uid": item.uid, "leg": item.leg.info.leg,
                                "duration_s": round(item.end - item.start, 2), "end_wall": item.end_wall,
                                "emotion_at": item.emotion_at, "transcript": item.transcript,
                                "resumed": item.uid in self.restored, "stages": self.stages.get(item.uid, {})}

    def _score(self) -> None:
        for item, message in self.insight.score(self.call):
            if item.uid not in self.restored:  # else published before the restart
                self.alerts.append(message)
        self.changed.set()

    # ---- the end, and what the serving process polls ---------------------------------------------

    async def end(self, call_id: str, totals: dict[str, int], missing_frames: int = 0) -> None:
        """The call hung up: each leg's length in samples, to wait for its last chunks."""
        if self.call is not None and call_id != self.call.call_id:
            return
        self.totals, self._missing = dict(totals), missing_frames
        if self.call is not None:
            self.call.missing_frames = missing_frames
            self.changed.set()

    async def _finish(self) -> None:
        """Once every chunk is in (or end_wait_s passed: the rest is read from the recording)."""
        call = self.call
        for leg, state in call.legs.items():
            self._drain(leg, force=True)
            want = self.totals.get(leg, state.samples)
            if state.samples < want:
                self._feed(state, self._recorded(leg, state.samples, want), time.time())
            for speech in state.endpointer.flush():
                self._speech(state, speech)
            state.interim = None
        call.ended = True

    async def changes(self, timeout_s: float = 1.0) -> dict:
        """What changed since the last answer, once something has (or after timeout_s):
        {"delta", "marks", "alerts", "counters", "final"}; "final" is the call's result once it
        has ended and every utterance is through the stages (the last answer); {"unassigned": True}
        from an actor that has not got its call within timeout_s (the collector sends begin() again)."""
        if self.call is None:  # a begin() this answer overtook
            try:
                await asyncio.wait_for(self.assigned.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        if self.call is None:
            return {"unassigned": True, "answered_at": time.time()}
        await self._run_deferred()
        if self.totals is not None and not self.call.ended:
            if self._end_at is None:
                self._end_at = time.monotonic()
            if self._all_in() or time.monotonic() - self._end_at >= self.end_wait_s:
                await self._finish()
        if not self.changed.is_set():
            try:
                await asyncio.wait_for(self.changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        self.changed.clear()
        call = self.call
        delta = None
        # a restarted actor says nothing until what it replayed has its emotions again: a delta
        # before then would take utterances the store already shows off the Live floor
        catching_up = any(u.utterance is None for u in call.utterances if u.uid in self.restored)
        if call.has_media and not catching_up:
            note_load(call)
            record = to_record(call.snapshot(), mode="live", metadata=call.metadata(), status="live")
            delta = diff_record(self.last, record)
            self.last = record
        final = call.snapshot() if call.ended and not self.tasks and not call.pending_work() else None
        marks, alerts, self.marks, self.alerts = list(self.marks.values()), self.alerts, {}, []
        return {"answered_at": time.time(), "assigned_at": self.assigned_at, "delta": delta, "marks": marks,
                "alerts": alerts, "final": final, "has_media": call.has_media,
                "counters": {**self.counters, "resumed": int(self.resumed),
                             "shed_transcripts": call.shed_transcripts}}

    def _all_in(self) -> bool:
        return all(state.samples + sum(len(p) // 2 for p, _ in self.held[leg].values()) >= self.totals.get(leg, 0)
                   for leg, state in self.call.legs.items())

    async def _run_deferred(self) -> None:
        while self._deferred:
            self._spawn(self._deferred.pop(0))

    def ping(self) -> bool:
        return True

    # ---- restart --------------------------------------------------------------------------------------

    def _recorded(self, leg: str, start: int, end: int) -> np.ndarray:
        """Samples start..end of a leg from the recording; silence for what it does not hold."""
        got = np.zeros(0, np.int16)
        if self.recording:
            got = read_leg(self.recording, leg)[start:end]
        if len(got) < end - start:
            self.counters["resume_gap_samples"] += end - start - len(got)
            got = np.concatenate([got, np.zeros(end - start - len(got), np.int16)])
        return got

    def _restore(self) -> None:
        """Replay what was recorded of each leg, interleaved, through the stages."""
        self._restoring = True
        audio = {leg: read_leg(self.recording, leg) for leg in self.call.legs}
        now = time.time()
        longest = max((len(a) for a in audio.values()), default=0)
        for leg, state in self.call.legs.items():
            step = int(self.settings.live.restore_slice_s * state.info.sample_rate)
            audio[leg] = [audio[leg][i:i + step] for i in range(0, longest, step)]
        for i in range(max((len(s) for s in audio.values()), default=0)):
            for leg, slices in audio.items():
                if i < len(slices) and len(slices[i]):
                    self._feed(self.call.legs[leg], slices[i], now)
        self._restoring = False
        self.counters["restored_ms"] = int(1000 * sum(s.samples / s.info.sample_rate for s in self.call.legs.values()))
        log.warning("call actor restarted: call rebuilt from its recording",
                    extra={"call_id": self.call.call_id, "seconds": {leg: s.samples / s.info.sample_rate
                                                                     for leg, s in self.call.legs.items()}})


def warm_up() -> None:
    """What a call's first audio would otherwise pay for: the VAD's model session and the resampler."""
    Endpointer(8000).feed(np.zeros(8000, np.int16), time.time())
    to_16k(np.zeros(800, np.int16), 8000)


def read_leg(recording: tuple, leg: str) -> np.ndarray:
    """What the connector side has recorded of one leg so far (analysis/live/recorder.py's files)."""
    from emotivoice.analysis.live.recorder import CallRecorder

    audio_dir, call_id, legs, rate = recording
    try:
        return CallRecorder(audio_dir, call_id, list(legs), rate, open_legs=False)._leg_audio(leg)
    except Exception as exc:  # no recording (not kept, or elsewhere): the call resumes from here
        log.warning("recording not readable for a restarted call", extra={"call_id": call_id, "error": str(exc)})
        return np.zeros(0, np.int16)
