"""The transcript stage: Whisper words per utterance (levelled, guarded, retried: analysis/
transcription.py), the language, the speaking rate; and the live scheduling rules written once:
joining utterances into passes of at most `live.transcribe_batch_s` of speech, and shedding the
oldest when the backlog passes `live.transcript_backlog_s` (emotions are never shed)."""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from dataclasses import replace
from typing import TypeVar

import numpy as np

from emotivoice.analysis.results import Utterance
from emotivoice.analysis.transcription import LegTranscript, Word, transcribe_utterances
from emotivoice.config import Settings

T = TypeVar("T")


class TranscriptStage:
    """Holds one Whisper (injected, or loaded on first use). `live`: greedy decoding
    (live.beam_size) on one thread, as the live paths run it; else the batch settings."""

    def __init__(self, settings: Settings, whisper=None, live: bool = False):
        self.settings, self.config, self.live = settings, settings.transcription, live
        self.beam_size = settings.live.beam_size if live else self.config.beam_size
        self._whisper = whisper

    @property
    def whisper(self):
        return self.load()

    @whisper.setter
    def whisper(self, whisper) -> None:  # tests wrap the real model (tests/test_telephone.py)
        self._whisper = whisper

    def load(self):
        """The Whisper model, loaded once (seconds: the live engine does it in its transcript thread)."""
        if self._whisper is None:
            tc, cache = self.config, self.settings.model_cache_dir
            if self.live:
                from emotivoice.analysis.assets import whisper_model_dir
                from emotivoice.analysis.whisper import WhisperRuntime

                self._whisper = WhisperRuntime(whisper_model_dir(tc.model, cache), tc.compute_type, 1)
            else:
                from emotivoice.analysis.whisper import load_whisper

                self._whisper = load_whisper(tc.model, cache, tc.compute_type, tc.cpu_threads)
        return self._whisper

    def transcribe(self, clips: list[np.ndarray], starts: list[float],
                   speech: list[tuple[tuple[float, float], ...]] | None = None,
                   groups: list | None = None) -> LegTranscript:
        """Words per raw 16 kHz clip starting at `starts` (call time). `groups` names each clip's
        call and leg, so a retried utterance is prompted only by its own leg's words."""
        tc = self.config
        return transcribe_utterances(self.whisper, clips, starts, tc.language, self.beam_size, speech, tc, groups)


def words_text(words: list[Word]) -> str:
    """An utterance's text from its words, as Whisper spaced them."""
    return "".join(w.word for w in words).strip()


def attach_words(u: Utterance, words: list[Word], language: str, note: str = "", text: str | None = None) -> None:
    """Put a live transcript on its utterance (emotions came first), with the speaking rate the
    words now allow."""
    u.words, u.text, u.language = words, words_text(words) if text is None else text, language
    u.transcript_note = note
    if u.prosody is not None:
        u.prosody = replace(u.prosody, rate_wps=len(words) / max(u.end - u.start, 0.25))


def take_pass(queue: MutableSequence[T], seconds: Callable[[T], float], limit_s: float) -> list[T]:
    """The oldest queued utterances that fit one Whisper pass of `limit_s` seconds (always at
    least one: Whisper encodes 30 s windows, so joining short ones is nearly free)."""
    batch: list[T] = []
    total = 0.0
    while queue and (not batch or total + seconds(queue[0]) <= limit_s):
        item = queue[0]
        del queue[0]
        batch.append(item)
        total += seconds(item)
    return batch


def shed_backlog(queue: MutableSequence[T], seconds: Callable[[T], float], limit_s: float) -> list[T]:
    """Beyond `limit_s` of queued speech, the oldest are left to the final pass (taken off the
    queue and returned) so that emotions stay on time."""
    backlog = sum(seconds(item) for item in queue)
    shed: list[T] = []
    while queue and backlog > limit_s:
        item = queue[0]
        del queue[0]
        backlog -= seconds(item)
        shed.append(item)
    return shed
