"""Telephone audio end to end: quiet and shouted turns heard at 8 kHz, no utterance silently
empty, hallucinations dropped and counted. Real Whisper (base end to end, tiny.en for the
transcription units), real VAD, real DuckDB; the only stand-ins are faults put into a real
model's output (a joined pass that loses an utterance's words, a stock phrase invented over
near-silence)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from faster_whisper.transcribe import Segment
from faster_whisper.transcribe import Word as FWWord

from emotivoice.analysis.audio import level_speech, load_audio
from emotivoice.analysis.pipeline import CallAnalyzer
from emotivoice.analysis.sink import to_record
from emotivoice.analysis.synth import Turn, assemble, write_audio
from emotivoice.analysis.transcription import NO_WORDS, asr_metrics, transcribe_utterances
from emotivoice.analysis.whisper import load_whisper
from emotivoice.storage.db import connect, save_call

pytestmark = pytest.mark.slow

CUSTOMER, AGENT = "cremad-1006", "cremad-1016"  # both held out from the emotion head


def clip_of(emotion_data, actor: str, name: str):
    number = actor.split("-")[1]
    return emotion_data / "cremad" / actor / f"{number}_{name}.opus"


@pytest.fixture(scope="module")
def tiny(settings):
    return load_whisper("tiny.en", settings.model_cache_dir, "int8", 2)


@pytest.fixture(scope="module")
def analyzer(settings):
    """The product's own analyzer, Whisper base: tiny.en hears the sad "It's eleven o'clock" at
    8 kHz as "It's almost a clock", so it could not tell a heard turn from a misheard one."""
    return CallAnalyzer(settings)


@pytest.fixture(scope="module")
def phone_call(emotion_data, tmp_path_factory):
    """Agent neutral, customer whispers a sad reading, agent neutral, customer shouts (clipping):
    a stereo 8 kHz G.711 mu-law recording, with where each turn was placed."""
    turns = [Turn(0, clip_of(emotion_data, AGENT, "TIE_NEU_XX"), "neutral", "That is exactly what happened."),
             Turn(1, clip_of(emotion_data, CUSTOMER, "IEO_SAD_LO"), "sadness", "It's eleven o'clock.", 0.8),
             Turn(0, clip_of(emotion_data, AGENT, "DFA_NEU_XX"), "neutral", "Don't forget a jacket.", 0.8),
             Turn(1, clip_of(emotion_data, CUSTOMER, "IEO_ANG_HI"), "anger", "It's eleven o'clock.", 0.8)]
    audio, placed = assemble(turns, tail_s=1.5)
    path = write_audio(audio, tmp_path_factory.mktemp("phone") / "call.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"])
    return path, placed


def test_whispered_sad_and_shouted_angry_turns_are_heard_on_8k_mulaw(analyzer, phone_call, tmp_path):
    path, placed = phone_call
    result = analyzer.analyze(path)
    assert "silero@8k" in result.vad  # judged at the line's own rate
    for turn in placed:
        role = "agent" if turn.leg == 0 else "customer"
        mine = [u for u in result.utterances if u.speaker == role and u.end > turn.start and u.start < turn.end]
        assert mine, f"{turn.emotion} turn at {turn.start:.1f} s not segmented"
        text = " ".join(u.text for u in mine).lower()
        assert text.strip(), f"{turn.emotion} turn at {turn.start:.1f} s has no words"
        if role == "customer":
            assert "eleven" in text or "11" in text, text
    assert result.metrics["asr"]["no_words"] == 0
    con = connect(tmp_path / "calls.duckdb")
    save_call(con, to_record(result))
    notes = con.execute("SELECT transcript_note FROM utterances").fetchall()
    assert len(notes) == len(result.utterances) and all(n[0] == "" for n in notes)


class LosesWords:
    """A real model whose joined passes (more than one utterance) lose the words of `lost`."""

    def __init__(self, real, lost: tuple[float, float]):
        self.real, self.lost, self.prompts = real, lost, []

    def transcribe(self, samples, language, beam_size, initial_prompt=None):
        segments, info = self.real.transcribe(samples, language, beam_size, initial_prompt)
        self.prompts.append(initial_prompt)
        if len(samples) / 16000 < self.lost[1]:
            return segments, info  # the utterance alone: untouched
        a, b = self.lost
        return [replace(s, words=[w for w in s.words if not a <= (w.start + w.end) / 2 <= b]) for s in segments], info


def test_an_utterance_the_joined_pass_leaves_empty_is_transcribed_alone_with_its_neighbours_prompt(tiny, emotion_data):
    clips = [load_audio(clip_of(emotion_data, AGENT, name))[0] for name in ("TIE_NEU_XX", "DFA_NEU_XX", "MTI_NEU_XX")]
    second = (len(clips[0]) / 16000 + 1.0, len(clips[0]) / 16000 + 1.0 + len(clips[1]) / 16000)
    faulty = LosesWords(tiny, second)
    out = transcribe_utterances(faulty, clips, [0.0, 10.0, 20.0], "en", 1, groups=[0, 0, 0])
    assert "jacket" in out.text(1).lower()
    assert out.notes == ["", "", ""] and out.counts["retried"] == 1 and out.counts["recovered"] == 1
    prompt = faulty.prompts[-1].lower()
    assert "exactly what happened" in prompt and "cold" in prompt  # both neighbours
    assert all(10.0 <= w.start <= w.end <= 10.0 + len(clips[1]) / 16000 for w in out.words[1])


class CopiesContext:
    """A real model whose passes over `span` write an earlier turn's sentence twice instead of
    what was said there: what Whisper did on quiet noisy turns of a joined pass ("kids are
    talking by the door" as "dogs are sitting by the door, dogs are sitting by the door").
    `joined_only`: the lone pass over the same audio is left as the model heard it."""

    def __init__(self, real, span: tuple[float, float], joined_only: bool = True):
        self.real, self.span, self.joined_only, self.prompts = real, span, joined_only, []

    def transcribe(self, samples, language, beam_size, initial_prompt=None):
        segments, info = self.real.transcribe(samples, language, beam_size, initial_prompt)
        self.prompts.append(initial_prompt)
        alone = len(samples) / 16000 < self.span[1]
        if alone and self.joined_only:
            return segments, info
        a, b = (0.0, len(samples) / 16000 - 1.0) if alone else self.span
        kept = [replace(s, words=[w for w in s.words if not a <= (w.start + w.end) / 2 <= b]) for s in segments]
        said = " That is exactly what happened, that is exactly what happened".split(" ")[1:]
        step = (b - a) / len(said)
        words = [FWWord(a + k * step, a + (k + 1) * step, " " + w, 0.8) for k, w in enumerate(said)]
        fake = Segment(len(kept), 0, a, b, " ".join(said), [], -0.3, 1.0, 0.1, words, 0.0)
        return kept + [fake], info


def test_an_utterance_that_copies_a_phrase_twice_is_transcribed_alone_without_a_prompt(tiny, emotion_data):
    clips = [load_audio(clip_of(emotion_data, AGENT, name))[0] for name in ("TIE_NEU_XX", "DFA_NEU_XX")]
    second = (len(clips[0]) / 16000 + 1.0, len(clips[0]) / 16000 + 1.0 + len(clips[1]) / 16000)
    faulty = CopiesContext(tiny, second)
    out = transcribe_utterances(faulty, clips, [0.0, 10.0], "en", 1, groups=[0, 0])
    assert "jacket" in out.text(1).lower() and "happened" not in out.text(1).lower()
    assert out.counts["retried_repeat"] == 1 and faulty.prompts[-1] is None
    assert asr_metrics(out.counts)["retried_repeat"] == 1


def test_a_phrase_the_lone_pass_also_hears_twice_is_kept(tiny, emotion_data):
    clips = [load_audio(clip_of(emotion_data, AGENT, name))[0] for name in ("TIE_NEU_XX", "DFA_NEU_XX")]
    second = (len(clips[0]) / 16000 + 1.0, len(clips[0]) / 16000 + 1.0 + len(clips[1]) / 16000)
    out = transcribe_utterances(CopiesContext(tiny, second, joined_only=False), clips, [0.0, 10.0], "en", 1)
    assert out.text(1).lower().count("exactly what happened") == 2 and out.counts["retried_repeat"] == 1


class WritesItsPrompt(LosesWords):
    """LosesWords, and a prompted pass over what it lost writes the prompt's first `n` words: with
    one, what Whisper did over a noise burst before a call's first turn ("I'm" from "I'm on my
    way..."); with a whole sentence, what a customer saying a neighbour's sentence again gives."""

    def __init__(self, real, lost: tuple[float, float], n: int):
        super().__init__(real, lost)
        self.n = n

    def transcribe(self, samples, language, beam_size, initial_prompt=None):
        segments, info = super().transcribe(samples, language, beam_size, initial_prompt)
        if initial_prompt is None:
            return segments, info
        said = initial_prompt.split()[:self.n]
        words = [FWWord(0.2 * k, 0.2 * (k + 1), " " + w, 0.5) for k, w in enumerate(said)]
        return [Segment(0, 0, 0.0, 0.2 * len(said), " ".join(said), [], -0.5, 1.0, 0.2, words, 0.0)], info


def test_a_retry_that_writes_its_prompt_is_checked_by_a_pass_without_it(tiny, emotion_data):
    """The words of the pass without a prompt win: "jacket", not the neighbour's sentence."""
    clips = [load_audio(clip_of(emotion_data, AGENT, name))[0] for name in ("TIE_NEU_XX", "DFA_NEU_XX")]
    second = (len(clips[0]) / 16000 + 1.0, len(clips[0]) / 16000 + 1.0 + len(clips[1]) / 16000)
    model = WritesItsPrompt(tiny, second, 5)
    out = transcribe_utterances(model, clips, [0.0, 10.0], "en", 1, groups=[0, 0])
    assert "jacket" in out.text(1).lower() and "happened" not in out.text(1).lower()
    assert out.counts["retried_unprompted"] == 1 and out.counts["recovered"] == 1
    assert model.prompts[-2] and model.prompts[-1] is None


def test_a_copied_word_over_noise_is_dropped_and_a_copied_sentence_kept(tiny, emotion_data):
    """Over mains hum the pass without a prompt hears nothing: one copied word was Whisper's
    invention, a copied sentence may be the customer saying it again."""
    speech = load_audio(clip_of(emotion_data, AGENT, "TIE_NEU_XX"))[0]
    hum = (0.02 * np.sin(2 * np.pi * 120 * np.arange(32000) / 16000)).astype(np.float32)
    second = (len(speech) / 16000 + 1.0, len(speech) / 16000 + 3.0)
    word = transcribe_utterances(WritesItsPrompt(tiny, second, 1), [speech, hum], [0.0, 10.0], "en", 1,
                                 groups=[0, 0])
    assert word.words[1] == [] and word.notes[1] == NO_WORDS
    assert word.counts["dropped_prompt_copy"] == 1 and asr_metrics(word.counts)["hallucinated_words_dropped"] >= 1
    sentence = transcribe_utterances(WritesItsPrompt(tiny, second, 4), [speech, hum], [0.0, 10.0], "en", 1,
                                     groups=[0, 0])
    assert len(sentence.words[1]) == 4 and sentence.counts["dropped_prompt_copy"] == 0
    assert sentence.counts["recovered"] == 1


def test_an_utterance_without_words_is_marked_not_stored_as_silence(tiny, emotion_data, tmp_path):
    speech = load_audio(clip_of(emotion_data, AGENT, "TIE_NEU_XX"))[0]
    hum = (0.02 * np.sin(2 * np.pi * 120 * np.arange(32000) / 16000)).astype(np.float32)  # mains hum, no words
    out = transcribe_utterances(tiny, [speech, hum], [0.0, 5.0], "en", 1)
    assert out.text(0) and out.words[1] == []
    assert out.notes == ["", NO_WORDS] and out.counts["retried"] == 1 and out.counts["no_words"] == 1


class InventsThanks:
    """A real model that adds "Thank you very much." from `start` to `end` seconds before the end
    of the track it is given (a joined track ends with a 1 s gap after its last utterance)."""

    def __init__(self, real, start: float, end: float):
        self.real, self.start, self.end = real, start, end

    def transcribe(self, samples, language, beam_size, initial_prompt=None):
        segments, info = self.real.transcribe(samples, language, beam_size, initial_prompt)
        total = len(samples) / 16000
        a, b = total - self.start, total - self.end
        step = (b - a) / 4
        words = [FWWord(a + k * step, a + (k + 1) * step, w, 0.9)
                 for k, w in enumerate([" Thank", " you", " very", " much."])]
        fake = Segment(len(segments), 0, a, b, " Thank you very much.", [], -0.3, 1.0, 0.1, words, 0.0)
        return segments + [fake], info


def test_a_stock_phrase_after_the_last_turn_is_dropped_and_counted_on_the_stored_call(analyzer, emotion_data,
                                                                                      tmp_path):
    turns = [Turn(0, clip_of(emotion_data, AGENT, "TIE_NEU_XX"), "neutral", "That is exactly what happened."),
             Turn(1, clip_of(emotion_data, CUSTOMER, "DFA_NEU_XX"), "neutral", "Don't forget a jacket.", 0.8)]
    audio, _ = assemble(turns, tail_s=1.0)
    path = write_audio(audio, tmp_path / "thanks.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"])
    real = analyzer.whisper
    analyzer.whisper = InventsThanks(real, start=0.6, end=0.05)  # over the silence after each leg's last word
    try:
        result = analyzer.analyze(path)
    finally:
        analyzer.whisper = real
    text = " ".join(u.text for u in result.utterances).lower()
    assert "thank you" not in text and "jacket" in text
    assert result.metrics["asr"]["hallucinated_words_dropped"] == 8  # four words on each leg
    assert any("hallucinated" in w for w in result.warnings)
    con = connect(tmp_path / "calls.duckdb")
    save_call(con, to_record(result))
    stored = con.execute("SELECT metrics->>'$.asr.hallucinated_words_dropped', warnings FROM calls").fetchone()
    assert stored[0] == "8" and any("hallucinated" in w for w in stored[1])


def test_a_stock_phrase_over_near_silence_inside_an_utterance_is_dropped(tiny, emotion_data):
    speech = load_audio(clip_of(emotion_data, AGENT, "TIE_NEU_XX"))[0]
    hiss = (0.0005 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)  # -66 dBFS
    clip = np.concatenate([speech, hiss])
    out = transcribe_utterances(InventsThanks(tiny, start=2.4, end=1.2), [clip], [0.0], "en", 1)
    assert "thank you" not in out.text(0).lower() and "happened" in out.text(0).lower()
    assert out.counts["dropped_boilerplate"] == 4


def test_the_same_phrase_said_at_speaking_level_is_kept(tiny, emotion_data):
    """Over speech, "thank you very much" is an agent's words, not a hallucination."""
    speech = load_audio(clip_of(emotion_data, AGENT, "TIE_NEU_XX"))[0]
    out = transcribe_utterances(InventsThanks(tiny, start=1.0 + len(speech) / 16000 * 0.8, end=1.2),
                                [speech], [0.0], "en", 1)
    assert "thank you very much" in out.text(0).lower()
    assert out.counts["dropped_boilerplate"] == 0


class InventsOneWord:
    """A real model that adds one word, with the given probability, over the middle of the track:
    what Whisper did over noise bursts in the noisy telephone calls ("The" at p 0.01)."""

    def __init__(self, real, word: str, probability: float):
        self.real, self.word, self.probability = real, word, probability

    def transcribe(self, samples, language, beam_size, initial_prompt=None):
        segments, info = self.real.transcribe(samples, language, beam_size, initial_prompt)
        mid = len(samples) / 16000 / 2
        words = [FWWord(mid - 0.2, mid + 0.1, self.word, self.probability)]
        fake = Segment(len(segments), 0, mid - 0.2, mid + 0.1, self.word, [], -0.8, 1.0, 0.3, words, 0.0)
        return segments + [fake], info


def test_a_lone_word_whisper_doubts_is_dropped_and_a_confident_one_kept(tiny):
    """An utterance of noise alone (a burst VAD took for speech) gets no words, not "The"."""
    noise = (0.05 * np.random.default_rng(2).standard_normal(24000)).astype(np.float32)
    doubted = transcribe_utterances(InventsOneWord(tiny, " The", 0.01), [noise], [0.0], "en", 1)
    assert doubted.words == [[]] and doubted.notes == [NO_WORDS]
    assert doubted.counts["dropped_lone_word"] >= 1  # the joined pass and the retry alone
    assert asr_metrics(doubted.counts)["hallucinated_words_dropped"] >= 1
    confident = transcribe_utterances(InventsOneWord(tiny, " Yes.", 0.9), [noise], [0.0], "en", 1)
    assert [w.word for w in confident.words[0]] == [" Yes."] and confident.counts["dropped_lone_word"] == 0


def test_levelling_lifts_a_whisper_and_never_clips_a_shout():
    rng = np.random.default_rng(0)
    quiet = (0.003 * rng.standard_normal(16000)).astype(np.float32)
    shout = np.clip(1.5 * rng.standard_normal(16000), -1, 1).astype(np.float32)  # already clipped on the line
    for x in (quiet, shout):
        y = level_speech(x, -20.0)
        assert np.max(np.abs(y)) <= 0.95 + 1e-6
        assert np.mean(np.abs(y) >= 0.949) < 0.01  # no new flat tops
    assert -23 < 20 * np.log10(np.sqrt(np.mean(level_speech(quiet) ** 2))) < -17
