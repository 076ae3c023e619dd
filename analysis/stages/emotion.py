"""The emotion stage: clips -> base emotion probabilities -> the call's recalibration -> the
granular and complex tiers and prosody -> an Utterance. Batch, embedded live and Ray use it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from emotivoice.analysis.audio import rms_dbfs
from emotivoice.analysis.emotion.recalibration import Recalibrator, recalibrator_for
from emotivoice.analysis.emotion.tiers import complex_emotion, granular
from emotivoice.analysis.insight.prosody import measure as measure_prosody
from emotivoice.analysis.results import CallResult, Utterance
from emotivoice.config import EmotionConfig, Settings

if TYPE_CHECKING:
    from emotivoice.analysis.emotion.model import EmotionModel
    from emotivoice.analysis.transcription import Word


class EmotionStage:
    """Holds the emotion model (injected, or loaded with `threads` CPU threads) and the
    deployment's recalibration; one per process, shared by every call it analyses."""

    def __init__(self, settings: Settings, model: EmotionModel | None = None,
                 recalibrator: Recalibrator | None = None, threads: int | None = None):
        self.config: EmotionConfig = settings.emotion
        if model is None:
            from emotivoice.analysis.emotion.model import load_emotion_model

            tc = settings.transcription
            model = load_emotion_model(settings.emotion, settings.model_cache_dir, tc.compute_type,
                                       tc.cpu_threads if threads is None else threads)
        self.model = model
        self.recalibrator = recalibrator or recalibrator_for(settings)  # re-read when refitted

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def provisional(self) -> bool:
        return self.model.provisional

    def predict(self, clips: list[np.ndarray], speakers: list | None = None,
                remember: list[bool] | None = None) -> list[dict[str, float]]:
        """The model's raw probabilities per 16 kHz clip; raises what the model raises (the caller
        decides what a dead model means for its calls). speakers: per clip its speaker's key
        (call id first), in time order, for a head that normalises against the speaker's earlier
        speech (emotion.speaker_norm_window); remember: per clip whether it is a finished utterance
        (it joins the history) rather than a rolling update. A model without histories ignores both."""
        if speakers is not None and hasattr(self.model, "forget"):
            return self.model.predict(clips, speakers, remember)
        return self.model.predict(clips)

    def forget(self, call_id: str) -> None:
        """The call is done: its speakers' feature histories go."""
        forget = getattr(self.model, "forget", None)
        if forget is not None:
            forget(call_id)

    def profile(self, result: CallResult, team: str | None = None, language: str | None = None) -> str:
        """The call's calibration profile, picked once per call (from its team, else the language
        given), so live, Ray and the final pass correct a call the same way."""
        if result.calibration is None:
            result.calibration = self.recalibrator.summary_for(team, language)
        return result.calibration["profile"]

    def recalibrate(self, probabilities: list[dict[str, float]], result: CallResult, team: str | None = None,
                    language: str | None = None) -> list[dict[str, float]]:
        """The deployment's correction for the call's profile applied to each clip's probabilities."""
        return self.recalibrator.apply(probabilities, self.profile(result, team, language))

    def intensity_of(self, clip: np.ndarray) -> float | None:
        """The head's intensity for a clip it just predicted (None: a model without one, or a clip
        another process predicted: Ray's emotion worker sends its own, LiveUtterance.intensity)."""
        lookup = getattr(self.model, "intensity_of", None)
        return lookup(clip) if lookup is not None else None

    def for_item(self, item, probs: dict[str, float]) -> Utterance:
        """The utterance of a live item (analysis/live/call.py's LiveUtterance), its words to come."""
        return self.utterance(item.call_id, item.leg.index, item.leg.speaker.label, item.start, item.end, item.clip,
                              probs, partial=not item.final, intensity=item.intensity)

    def utterance(self, call_id: str, leg: int, speaker: str, start: float, end: float, clip: np.ndarray,
                  probs: dict[str, float], words: list[Word] | None = None, partial: bool = False,
                  intensity: float | None = None) -> Utterance:
        """The utterance with its tiers, loudness and prosody. With `words` (batch: the transcript
        came first) the speaking rate is known now; live sets it when the words come
        (transcript.attach_words). An utterance without emotions (a failed model) gets no prosody.
        `intensity` is the head's, when another process predicted the clip; else it is looked up."""
        ec = self.config
        loudness = rms_dbfs(clip)
        prosody = measure_prosody(clip, loudness, len(words or [])) if probs or words is not None else None
        return Utterance(call_id=call_id, leg=leg, speaker=speaker, start=start, end=end, loudness_dbfs=loudness,
                         emotions=probs, granular=granular(probs, ec.high_intensity, ec.low_intensity,
                                                           ec.granular_floor,
                                                           self.intensity_of(clip) if intensity is None else intensity),
                         complex=complex_emotion(probs, ec.complex_min_second), prosody=prosody, partial=partial)
