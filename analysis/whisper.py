"""One loaded Whisper model, shared by transcription and the emotion encoder.

The emotion head reads Whisper's encoder states, so the weights load once per process and
both uses share them.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotivoice.analysis.assets import whisper_model_dir

MAX_CLIP_FRAMES = 3000  # Whisper's 30 s window, in 10 ms mel frames


class WhisperRuntime:
    """faster-whisper's model plus direct access to its encoder."""

    def __init__(self, model_dir: Path, compute_type: str = "int8", cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        self.model_dir = Path(model_dir)
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type,
                                  cpu_threads=cpu_threads)
        self._lock = threading.Lock()  # CTranslate2 models are not re-entrant per call
        self._batched = None  # faster-whisper's batched pipeline over the same model, made on first use
        self._last_language = "en"  # the language a detecting pass expects first (_PassLanguage)

    @property
    def name(self) -> str:
        return self.model_dir.name

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """Encoder states (frames at 50/s, d_model) for a 16 kHz clip of up to 30 s.

        The clip is encoded at its own length rather than padded to 30 s: ten times faster
        for a 3 s utterance, and the emotion head is trained on exactly this.
        """
        import ctranslate2

        mel = self.model.feature_extractor(samples.astype(np.float32))
        frames = min(mel.shape[-1] - mel.shape[-1] % 2, MAX_CLIP_FRAMES)
        if frames < 2:
            mel = np.zeros((mel.shape[0], 2), dtype=np.float32)
            frames = 2
        batch = np.ascontiguousarray(mel[None, :, :frames], dtype=np.float32)
        with self._lock:
            out = self.model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)
        return np.asarray(out)[0]

    def transcribe(self, samples: np.ndarray, language: str | None, beam_size: int,
                   initial_prompt: str | None = None):
        """faster-whisper's transcribe with word timestamps; returns (segments list, info).
        `initial_prompt`: text said around this audio (a lone utterance's neighbours)."""
        with self._lock:
            segments, info = self.model.transcribe(
                samples.astype(np.float32), language=language, beam_size=beam_size,
                word_timestamps=True, vad_filter=False, condition_on_previous_text=False,
                initial_prompt=initial_prompt,
            )
            return list(segments), info

    def transcribe_chunks(self, samples: np.ndarray, chunks: list[tuple[float, float]], language: str | None,
                          beam_size: int, batch_size: int):
        """Decode the given (start, end) stretches of `samples` (each at most 30 s) as one batch
        through faster-whisper's batched pipeline; word timestamps in `samples` time.

        Without a `language`, the language comes from the first batch's own encoder output
        (`_PassLanguage`), not from one more 30 s encoder pass as faster-whisper detects it."""
        with self._lock:
            if language is not None or not self.model.model.is_multilingual:
                return self._batched_pass(samples, chunks, language, beam_size, batch_size)
            return self._detecting_pass(samples, chunks, beam_size, batch_size)

    def _detecting_pass(self, samples: np.ndarray, chunks: list[tuple[float, float]], beam_size: int,
                        batch_size: int):
        ct2 = self.model.model
        self.model.model = detector = _PassLanguage(ct2, self._last_language)
        try:
            segments, info = self._batched_pass(samples, chunks, detector.expected, beam_size, batch_size,
                                                multilingual=True)
        except _OtherLanguage:  # not the last pass's language: decoded again in its own
            self.model.model = ct2
            segments, info = self._batched_pass(samples, chunks, detector.language, beam_size, batch_size)
        finally:
            self.model.model = ct2
        if detector.detected is not None:
            self._last_language = info.language = detector.language
            info.language_probability = float(detector.detected[0][1])
            info.all_language_probs = [(token[2:-2], float(p)) for token, p in detector.detected]
        return segments, info

    def _batched_pass(self, samples: np.ndarray, chunks: list[tuple[float, float]], language: str | None,
                      beam_size: int, batch_size: int, multilingual: bool = False):
        from faster_whisper import BatchedInferencePipeline

        if self._batched is None:
            self._batched = BatchedInferencePipeline(self.model)
        segments, info = self._batched.transcribe(
            samples.astype(np.float32), language=language, beam_size=beam_size, word_timestamps=True,
            clip_timestamps=[{"start": a, "end": b} for a, b in chunks], batch_size=batch_size,
            # with timestamps each utterance of a stretch is its own segment: on 13 noisy 8 kHz
            # calls 2 utterances were left wordless (retried) against 13 without, and 8% faster
            without_timestamps=False, multilingual=multilingual,
        )
        return list(segments), info


class _OtherLanguage(Exception):
    """The first chunk is not in the language the pass was set up for."""


class _PassLanguage:
    """The CTranslate2 model as the batched pipeline sees it for one pass that detects its language.

    Asked for `multilingual`, the pipeline calls `detect_language` on each batch's encoder output
    and writes the answer into the prompts. This answers every chunk with the first chunk's
    language, detected once: one language per track, as before, without the extra 30 s encoder
    pass faster-whisper runs to detect it first (1.5 s of a 2-minute stereo call's 14 s of
    transcription on 2 cores, side by side). The pass's tokenizer was made for `expected` (the
    word aligner uses it), so a track in another language stops at once (`_OtherLanguage`, one
    batch's encoding lost) and is decoded again in its own."""

    def __init__(self, inner, expected: str):
        self.inner, self.expected = inner, expected
        self.detected: list[tuple[str, float]] | None = None  # the first chunk's (token, probability), best first

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @property
    def language(self) -> str:
        return self.detected[0][0][2:-2] if self.detected else self.expected

    def detect_language(self, encoder_output):
        if self.detected is None:
            self.detected = list(self.inner.detect_language(encoder_output)[0])
            if self.detected[0][0] != f"<|{self.expected}|>":
                raise _OtherLanguage(self.language)
        return [self.detected] * int(encoder_output.shape[0])


@lru_cache(maxsize=4)
def load_whisper(name: str, cache_dir: Path, compute_type: str = "int8", cpu_threads: int = 0) -> WhisperRuntime:
    """Load (once per process) the named Whisper model from its offline package."""
    return WhisperRuntime(whisper_model_dir(name, cache_dir), compute_type, cpu_threads)
