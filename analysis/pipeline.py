"""Batch analysis of one recorded call: decode -> segment -> transcribe -> emotions -> tiers.

The per-utterance work is analysis/stages/ (emotion, transcript, insight), the same stages the
live engine and the Ray call actor run; this module feeds them from a file.

A stereo file carries one speaker per channel (left is the agent unless told otherwise); a mono
file goes through diarization (analysis/diarization) and speaker roles are guessed from what
people say. Audio streams through in blocks (speech over a block edge is carried into the next
block; a mono call is read twice, once to diarize and once to cut its turns), so memory stays
bounded for any length.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotivoice.analysis.audio import SAMPLE_RATE, AudioError, iter_blocks, probe
from emotivoice.analysis.conversation import Span, conversation_metrics
from emotivoice.analysis.emotion.model import EmotionModel
from emotivoice.analysis.insight.analytics import annotate
from emotivoice.analysis.insight.roles import assign_roles
from emotivoice.analysis.redaction.stage import Redactor
from emotivoice.analysis.results import CallResult, Speaker, Utterance
from emotivoice.analysis.segmentation import Region, StreamingSegmenter, shape_utterances
from emotivoice.analysis.stages.emotion import EmotionStage
from emotivoice.analysis.stages.insight import InsightStage
from emotivoice.analysis.stages.transcript import TranscriptStage
from emotivoice.analysis.transcription import NO_WORDS, asr_metrics
from emotivoice.analysis.vad import silero_session, vad_rate
from emotivoice.config import Settings

log = logging.getLogger(__name__)

ProgressHook = Callable[[float], None]  # seconds of audio done
ROLES = ("agent", "customer")


@dataclass
class Timings:
    """Wall time per stage, summed over every call an analyzer ran: the hook for benchmarks and logs."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, since: float) -> None:
        self.record(stage, time.perf_counter() - since)

    def record(self, stage: str, seconds: float) -> None:
        """Add time measured elsewhere (another thread's work)."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def make_call_id(path: Path) -> str:
    """Stable per file, so re-analysing a recording replaces its earlier results."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', path.stem)[:48]}-{digest}"


def parse_roles(spec: str | None) -> tuple[str, ...]:
    """'customer,agent' -> ('customer', 'agent'): the role of each channel, left first."""
    if not spec:
        return ROLES
    roles = tuple(r.strip().lower() for r in spec.split(","))
    if sorted(roles) != sorted(ROLES):
        raise ValueError(f"--channels must name agent and customer once each, got {spec!r}")
    return roles


class CallAnalyzer:
    """Loads the models once and analyses any number of calls with them. `emotion_model` and
    `whisper` are injected (tests pass stubs), else loaded with the configured settings."""

    def __init__(self, settings: Settings, emotion_model: EmotionModel | None = None, whisper=None):
        self.settings = settings
        self.transcripts = TranscriptStage(settings, whisper)
        self.transcripts.load()
        self.emotions = EmotionStage(settings, emotion_model)
        self.insight = InsightStage(settings)
        self.timings = Timings()
        # a leg's emotions run beside its transcription: Whisper's decoder leaves a core idle part of
        # the time, and both models release the GIL (benchmarks/analyze_rtf.py measures the gain)
        self._emotion_worker = ThreadPoolExecutor(1, thread_name_prefix="emotion")
        self.diarizer = None  # loaded on the first mono call
        # Presidio and spaCy load on the first call redacted, then serve every call of the process
        self.redactor = Redactor.from_settings(settings)
        if settings.segmentation.use_silero:
            _load_vad()

    @property
    def emotion(self) -> EmotionModel:
        return self.emotions.model

    @property
    def whisper(self):
        return self.transcripts.whisper

    @whisper.setter
    def whisper(self, whisper) -> None:  # tests wrap the real model (tests/test_telephone.py)
        self.transcripts.whisper = whisper

    def analyze(self, path: Path | str, roles: tuple[str, ...] = ROLES, call_id: str | None = None,
                on_progress: ProgressHook | None = None, num_speakers: int | None = None,
                agent: str | None = None, team: str | None = None) -> CallResult:
        """Analyse one recording. Mono files: `num_speakers` fixes the count (0 estimates it; None
        takes the configured default, two) and
        `agent` names the speaker label to take as the agent (else guessed from cues). `team` picks
        the emotion calibration profile (emotion.calibration_by_team)."""
        path = Path(path)
        info = probe(path)
        result = CallResult(
            call_id=call_id or make_call_id(path), source=str(path), duration_s=0.0,
            channels=info.channels, diarization="", asr_model=f"faster-whisper:{self.settings.transcription.model}",
            emotion_model=self.emotion.name, emotion_provisional=self.emotion.provisional,
        )
        legs = 2 if info.channels == 2 else 1
        if info.channels > 2:
            result.warnings.append(f"{info.channels} channels mixed down to mono")
        vad_used: set[str] = set()
        if legs == 2:
            result.speakers = [Speaker(roles[i], roles[i], i) for i in range(2)]
            result.diarization = "channel-per-speaker (stereo)"
            stream = self._utterance_stream(path, legs, vad_used, on_progress, result, vad_rate(info.sample_rate))
        else:
            result.diarization = "pyannote segmentation-3.0 + CAM++ embeddings, clustered"
            vad_used.add("pyannote-segmentation")
            count = self.settings.diarization.num_speakers if num_speakers is None else num_speakers
            stream = self._diarized_stream(path, result, on_progress, count or None)  # 0: estimate
        asr: Counter = Counter()
        try:
            for speaker, regions, clips in stream:
                result.utterances += self._analyze_leg(result, speaker, regions, clips, asr, team)
        finally:  # per-speaker feature histories span a leg's blocks, not the call
            self.emotions.forget(result.call_id)
        result.vad = "+".join(sorted(vad_used))
        result.utterances.sort(key=lambda u: (u.start, u.leg))
        per_speaker, result.metrics = conversation_metrics(
            [Span(u.speaker, u.start, u.end, len(u.words)) for u in result.utterances], result.duration_s)
        result.metrics["asr"] = asr_metrics(asr)
        note_asr(result)
        for speaker in result.speakers:
            speaker.metrics = per_speaker.get(speaker.label, {})
            speaker.talk_time_s = speaker.metrics.get("talk_time_s", 0.0)
        if legs == 1:
            assign_roles(result, agent)
        t0 = time.perf_counter()
        result.alerts = self.insight.whole_call(result.utterances)
        self.timings.add("insight", t0)
        # sarcasm and risk have seen the words as said; from here on only the redacted text exists
        t0 = time.perf_counter()
        self.redactor.redact_call(result)
        self.timings.add("redaction", t0)
        if result.duration_s == 0.0:
            raise AudioError(f"{path}: empty audio (no samples)")
        if not result.utterances:
            result.warnings.append("no speech detected")
        annotate(result, self.settings.analytics)  # quarters, summary, categories: last, over the final text
        return result

    def _utterance_stream(self, path: Path, legs: int, vad_used: set[str], on_progress: ProgressHook | None,
                          result: CallResult, rate: int) -> Iterator[tuple[Speaker, list[Region], list[np.ndarray]]]:
        """Yield (speaker, utterance regions, raw clips) per leg; speech carries over block edges.
        The VAD judges each leg at `rate`, the recording's own (8 kHz for telephony)."""
        segmenters = [StreamingSegmenter(self.settings.segmentation, rate) for _ in range(legs)]
        position = 0.0
        blocks = iter_blocks(path, legs, self.settings.block_s)
        block = next(blocks, None)
        while block is not None:
            upcoming = next(blocks, None)
            position += len(block) / SAMPLE_RATE
            result.duration_s = position
            for leg, segmenter in enumerate(segmenters):
                t0 = time.perf_counter()
                done = segmenter.push(block[:, leg], final=upcoming is None)
                self.timings.add("segmentation", t0)
                if done:
                    yield result.speakers[leg], [r for r, _ in done], [clip for _, clip in done]
            if on_progress:
                on_progress(position)
            block = upcoming
        for segmenter in segmenters:
            vad_used |= segmenter.methods

    def _diarized_stream(self, path: Path, result: CallResult, on_progress: ProgressHook | None,
                         num_speakers: int | None) -> Iterator[tuple[Speaker, list[Region], list[np.ndarray]]]:
        """Two passes over the blocks: diarize the whole call (the diarizer keeps only small
        per-window arrays), then decode again and cut each speaker's turns, shaped like VAD
        utterances (merged and split toward ~10 s), keeping only the audio still needed."""
        if self.diarizer is None:  # every [diarization] setting applies, not only the speaker bounds
            from emotivoice.analysis.diarization.pipeline import Diarizer

            self.diarizer = Diarizer(self.settings.diarization)
        t0 = time.perf_counter()
        first_pass = [0.0]

        def progress(done: float, _total: float | None) -> None:
            first_pass[0] = done
            if on_progress:
                on_progress(done / 2)
        blocks = (b[:, 0] for b in iter_blocks(path, 1, self.settings.block_s))
        found = self.diarizer(blocks, num_speakers=num_speakers, on_progress=progress)
        self.timings.add("diarization", t0)
        result.speakers = [Speaker(f"speaker_{k + 1}", "unknown", 0, role_confidence=0.0, role_source="cues")
                           for k in range(found.num_speakers)]
        pending = sorted(((k, r) for k in range(found.num_speakers) for r in shape_utterances(
            [Region(t.start, t.end) for t in found.turns if t.speaker == k], self.settings.segmentation)),
            key=lambda kr: kr[1].start)
        buffer, buffer_start, position = np.zeros(0, np.float32), 0.0, 0.0
        for block in iter_blocks(path, 1, self.settings.block_s):
            buffer = np.concatenate([buffer, block[:, 0]])
            position += len(block) / SAMPLE_RATE
            result.duration_s = position
            ready = [(k, r) for k, r in pending if r.end <= position + 1e-6]
            pending = [(k, r) for k, r in pending if r.end > position + 1e-6]
            for k in sorted({k for k, _ in ready}):
                regions = [r for kk, r in ready if kk == k]
                clips = [buffer[int((r.start - buffer_start) * SAMPLE_RATE):int((r.end - buffer_start) * SAMPLE_RATE)]
                         for r in regions]
                yield result.speakers[k], regions, clips
            keep_from = min([r.start for _, r in pending], default=position)
            cut = max(0, int((keep_from - buffer_start) * SAMPLE_RATE))
            buffer, buffer_start = buffer[cut:], buffer_start + cut / SAMPLE_RATE
            if on_progress:
                on_progress(first_pass[0] / 2 + position / 2)

    def _analyze_leg(self, result: CallResult, speaker: Speaker, regions: list[Region],
                     clips: list[np.ndarray], asr: Counter, team: str | None = None) -> list[Utterance]:
        leg = speaker.leg
        # each clip against its speaker's earlier ones (in time order; kept across the leg's blocks)
        emotions = self._emotion_worker.submit(self._timed_predict, clips, (result.call_id, "batch", speaker.label))
        t0 = time.perf_counter()
        transcript = self.transcripts.transcribe(clips, [r.start for r in regions], [r.speech for r in regions],
                                                 [leg] * len(clips))
        asr.update(transcript.counts)
        self.timings.add("transcription", t0)
        result.languages.setdefault(speaker.label, transcript.language)
        t0 = time.perf_counter()
        raw, spent = emotions.result()  # a dead model raises here, as it did when it ran inline
        self.timings.add("emotion_wait", t0)  # what the overlap did not hide
        self.timings.record("emotion", spent)
        # one calibration profile for the whole call, from its team or its first leg's language
        probabilities = self.emotions.recalibrate(raw, result, team, transcript.language)
        out = []
        t0 = time.perf_counter()
        for i, (region, probs) in enumerate(zip(regions, probabilities)):
            u = self.emotions.utterance(result.call_id, leg, speaker.label, region.start, region.end, clips[i], probs,
                                        transcript.words[i])
            u.text, u.language, u.words, u.transcript_note = (transcript.text(i), transcript.language,
                                                              transcript.words[i], transcript.notes[i])
            out.append(u)
        self.timings.add("prosody", t0)
        return out

    def _timed_predict(self, clips: list[np.ndarray], speaker: tuple) -> tuple[list[dict[str, float]], float]:
        """The emotion model's probabilities for a leg's clips and the seconds they took (on the worker)."""
        t0 = time.perf_counter()
        return self.emotions.predict(clips, [speaker] * len(clips)), time.perf_counter() - t0


def _load_vad() -> None:
    """Load silero with the other models, so the first call's segmentation is not charged for it."""
    try:
        silero_session()
    except Exception as exc:  # the segmenter falls back to the energy rule and says so per call
        log.warning("silero VAD did not load", extra={"error": str(exc)})


def note_asr(result: CallResult) -> None:
    """Say on the call what the transcript guards did, where a user reads warnings."""
    asr = result.metrics.get("asr", {})
    empty = sum(1 for u in result.utterances if u.transcript_note == NO_WORDS)
    if empty:
        result.warnings.append(f"{empty} utterance(s) with {NO_WORDS} (kept with empty text)")
    if asr.get("hallucinated_words_dropped"):
        result.warnings.append(f"{asr['hallucinated_words_dropped']} hallucinated word(s) dropped from the transcript")
