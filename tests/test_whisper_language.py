"""The batched pass detects its track's language from its own encoder output.

faster-whisper, asked for no language, runs one more 30 s encoder pass per track to detect it
(about 10% of a stereo call's transcription); analysis/whisper.py reads the language off the
first batch instead. Real Whisper base (multilingual), real CREMA-D speech, and espeak-ng's
German for a track that is not in the language the pass expects.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from emotivoice.analysis.audio import load_audio
from emotivoice.analysis.whisper import WhisperRuntime, load_whisper

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")]

SENTENCES = ["IEO_NEU_XX", "TIE_NEU_XX", "DFA_NEU_XX", "ITH_NEU_XX", "MTI_NEU_XX", "IWW_NEU_XX"]


@pytest.fixture(scope="module")
def base(settings) -> WhisperRuntime:
    return load_whisper("base", settings.model_cache_dir, "int8", 2)


def _track(clips: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Clips joined with 1 s of silence, one chunk per clip."""
    gap = np.zeros(16000, np.float32)
    pieces, chunks, t = [], [], 0.0
    for c in clips:
        pieces += [c, gap]
        chunks.append((t, t + len(c) / 16000 + 0.5))
        t += len(c) / 16000 + 1.0
    return np.concatenate(pieces), chunks


def _text(segments) -> str:
    return " ".join(w.word.strip() for s in segments for w in (s.words or []))


def _counting_encodes(runtime: WhisperRuntime, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = runtime.model.encode

    def encode(features, *args, **kwargs):
        calls.append(int(np.shape(features)[0]))
        return real(features, *args, **kwargs)

    monkeypatch.setattr(runtime.model, "encode", encode)
    return calls


@pytest.fixture(scope="module")
def english(emotion_data) -> tuple[np.ndarray, list[tuple[float, float]]]:
    return _track([load_audio(emotion_data / "cremad" / "cremad-1016" / f"1016_{s}.opus", channels=1)[0]
                   for s in SENTENCES])


def test_an_undetected_language_costs_no_extra_encoder_pass_and_the_words_match_a_given_language(
        base, english, monkeypatch):
    audio, chunks = english
    given, _ = base.transcribe_chunks(audio, chunks, "en", 5, 4)
    encodes = _counting_encodes(base, monkeypatch)
    detected, info = base.transcribe_chunks(audio, chunks, None, 5, 4)
    assert info.language == "en" and info.language_probability > 0.5
    assert _text(detected) == _text(given) and _text(detected)
    # six chunks in batches of four: two encoder calls, and none for the language alone
    assert encodes == [4, 2], encodes


def test_a_track_in_another_language_is_decoded_in_its_own_and_the_next_pass_expects_it(
        base, english, tmp_path, monkeypatch):
    from benchmarks.redaction import espeak

    german = [espeak(text, "de", 150, 50, tmp_path) for text in
              ("Guten Morgen, ich habe eine Frage zu meiner Rechnung.",
               "Das ist leider schon das dritte Mal in diesem Monat.")]
    audio, chunks = _track(german)
    base._last_language = "en"
    segments, info = base.transcribe_chunks(audio, chunks, None, 5, 4)
    assert info.language == "de", info.language
    heard = _text(segments).lower()
    assert "rechnung" in heard or "monat" in heard, heard  # German words, not an English rendering
    assert base._last_language == "de"
    encodes = _counting_encodes(base, monkeypatch)
    segments, info = base.transcribe_chunks(audio, chunks, None, 5, 4)  # expected now: one encoder call
    assert info.language == "de" and encodes == [2]
    audio, chunks = english  # and back: English is found again, decoded in English
    segments, info = base.transcribe_chunks(audio, chunks, None, 5, 4)
    assert info.language == "en" and "jacket" in _text(segments).lower()
