"""Transcription of one leg's utterances with faster-whisper, words mapped back to call time.

The utterances of a leg are levelled (analysis.audio.level_speech), joined with short silences
into one speech-only track and decoded in one pass: Whisper always encodes 30 s windows, so a 3 s
utterance decoded alone would pay for ten times its length. Each word then goes back to the
utterance its midpoint falls in. With `batch_size` > 1 the track is cut at utterance edges into
stretches under 30 s, decoded together by faster-whisper's batched pipeline.

No utterance is left silently empty, and nothing Whisper invents is kept:

- guards drop segments Whisper itself marks as silence (no-speech probability over
  `max_no_speech_prob` with a low log probability), an utterance's words when they loop (their
  gzip compression ratio over `max_compression_ratio`; judged per utterance, since a customer
  repeating a sentence in several turns is no loop), words timed more than `word_slack_s` outside
  every speech region of their utterance (over the join gaps or the pauses a merge bridged), and
  stock phrases ("thank you very much", "thanks for watching") over audio far quieter than the
  utterance's own speech;
- an utterance the joined pass leaves without words is transcribed alone, prompted with its
  neighbours' text; one that still has none carries the note "no words recognised". What that
  pass writes only from its prompt is checked by a pass without it (`_retry`);
- an utterance whose words say one phrase twice is transcribed alone, without a prompt, and
  takes that result: in a joined pass Whisper's own earlier text is its context, and on quiet,
  noisy turns it copies it ("Kids are talking by the door" written as the previous turn's "dogs
  are sitting by the door, dogs are sitting by the door, dogs"). A phrase really said twice
  comes back twice from the lone pass and is kept.

The counts go on the call (CallResult.metrics["asr"]), so what was dropped is never invisible.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from emotivoice.analysis.audio import SAMPLE_RATE, level_speech
from emotivoice.config import TranscriptionConfig

REPEAT_WORDS = 3  # a phrase this long written twice in one utterance is a loop or a copy
JOIN_GAP_S = 1.0  # silence between joined utterances, so Whisper sees a clear pause
NO_WORDS = "no words recognised"
LOW_LOGPROB = -1.0  # with a high no-speech probability, this marks a segment as silence (Whisper's rule)
# what Whisper writes over silence and noise, learnt from subtitled video
BOILERPLATE = frozenset({
    "thank you", "thank you very much", "thank you so much", "thanks", "thanks for watching",
    "thank you for watching", "thanks for listening", "thank you for listening", "please subscribe",
    "subscribe", "like and subscribe", "bye", "bye bye", "goodbye", "you", "so", "okay", "oh",
    "subtitles by the amaraorg community", "transcribed by", "music",
})


@dataclass(frozen=True)
class Word:
    word: str  # as Whisper wrote it, with its leading space and punctuation
    start: float  # seconds from the start of the call
    end: float
    probability: float


@dataclass
class LegTranscript:
    language: str
    language_probability: float
    words: list[list[Word]]  # per utterance, in order
    notes: list[str] = field(default_factory=list)  # per utterance: "" or NO_WORDS
    events: list[Counter] = field(default_factory=list)  # per utterance: dropped_* (words), retried, ...

    def text(self, index: int) -> str:
        return "".join(w.word for w in self.words[index]).strip()

    @property
    def counts(self) -> Counter:
        return sum(self.events, Counter())


def plain(text: str) -> str:
    """Lower case, letters, digits and single spaces: for matching stock phrases."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", "", text.lower().replace("-", " ")).split())


def _tokens(words: list[Word]) -> list[str]:
    return plain("".join(w.word for w in words)).split()


def repeats_phrase(words: list[Word], n: int = REPEAT_WORDS) -> bool:
    """Whether some run of `n` words occurs twice in these words (as plain text)."""
    tokens = _tokens(words)
    grams = [tuple(tokens[k:k + n]) for k in range(len(tokens) - n + 1)]
    return len(set(grams)) < len(grams)


def _within(words: list[Word], text: str) -> bool:
    """Whether these words, as plain text, are a run of the words of `text`."""
    mine, theirs = _tokens(words), plain(text).split()
    return any(theirs[k:k + len(mine)] == mine for k in range(len(theirs) - len(mine) + 1))


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-12) if x.size else -120.0


def speech_level_db(clip: np.ndarray) -> float:
    """The utterance's own speaking level: the power of its loudest 20 ms frames (90th percentile)."""
    frames = clip[: len(clip) // 320 * 320].reshape(-1, 320)
    if not len(frames):
        return _db(clip)
    return float(np.percentile(10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12), 90))


@dataclass
class _Track:
    """Clips joined into one track, and where each one sits in it."""

    clips: list[np.ndarray]
    offsets: list[float]  # track time each clip begins at
    ends: list[float]
    audio: np.ndarray

    @classmethod
    def join(cls, clips: list[np.ndarray]) -> _Track:
        gap = np.zeros(int(JOIN_GAP_S * SAMPLE_RATE), dtype=np.float32)
        offsets, pieces, cursor = [], [], 0
        for clip in clips:
            offsets.append(cursor / SAMPLE_RATE)
            pieces += [clip, gap]
            cursor += len(clip) + len(gap)
        ends = [o + len(c) / SAMPLE_RATE for o, c in zip(offsets, clips)]
        return cls(clips, offsets, ends, np.concatenate(pieces) if pieces else np.zeros(0, np.float32))

    def chunks(self, limit_s: float = 28.0) -> list[tuple[float, float]]:
        """Stretches of whole clips, each under Whisper's 30 s window, for a batched pass."""
        out: list[tuple[float, float]] = []
        start, last_end = None, 0.0
        for offset, end in zip(self.offsets, self.ends):
            if start is not None and end - start > limit_s:
                out.append((start, last_end + JOIN_GAP_S / 2))
                start = None
            start = offset if start is None else start
            last_end = end
        if start is not None:
            out.append((start, last_end + JOIN_GAP_S / 2))
        return out

    def owner(self, t: float) -> int:
        """The clip a track time belongs to: the one it falls in, or the nearer one across a gap."""
        i = min(max(int(np.searchsorted(self.offsets, t, side="right")) - 1, 0), len(self.clips) - 1)
        if t > self.ends[i] and i + 1 < len(self.clips) and self.offsets[i + 1] - t < t - self.ends[i]:
            i += 1
        return i


def _silent(segment, tc: TranscriptionConfig) -> bool:
    """Whisper's own sign that a segment is not speech (its rule, applied to every segment)."""
    return segment.no_speech_prob > tc.max_no_speech_prob and segment.avg_logprob < LOW_LOGPROB


def compression_ratio(text: str) -> float:
    """gzip's ratio, as Whisper measures repetition loops ("thank you thank you thank you ...")."""
    raw = text.encode()
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def _decode(whisper, track: _Track, starts: list[float], speech: list[tuple[tuple[float, float], ...]],
            tc: TranscriptionConfig, language: str | None, beam_size: int, events: list[Counter],
            prompt: str | None = None):
    """One Whisper pass over a track; guarded words per clip (call time) and the detected language."""
    if tc.batch_size > 1 and prompt is None and hasattr(whisper, "transcribe_chunks"):
        segments, info = whisper.transcribe_chunks(track.audio, track.chunks(), language, beam_size, tc.batch_size)
    else:
        segments, info = whisper.transcribe(track.audio, language=language, beam_size=beam_size,
                                            initial_prompt=prompt)
    words: list[list[Word]] = [[] for _ in track.clips]
    levels = [speech_level_db(c) for c in track.clips]
    for segment in segments:
        seg_words = list(segment.words or [])
        if not seg_words:
            continue
        i = track.owner((seg_words[0].start + seg_words[-1].end) / 2)
        if _silent(segment, tc):
            events[i]["dropped_no_speech"] += len(seg_words)
            continue
        if plain(segment.text) in BOILERPLATE:
            a = int((seg_words[0].start - track.offsets[i]) * SAMPLE_RATE)
            b = int((seg_words[-1].end - track.offsets[i]) * SAMPLE_RATE)
            span = track.clips[i][max(0, a):max(0, b)]
            if _db(span) < levels[i] - tc.boilerplate_quiet_db:
                events[i]["dropped_boilerplate"] += len(seg_words)
                continue
        for w in seg_words:
            i = track.owner((w.start + w.end) / 2)
            shift = starts[i] - track.offsets[i]
            if not any(w.end + shift > a - tc.word_slack_s and w.start + shift < b + tc.word_slack_s
                       for a, b in speech[i]):
                events[i]["dropped_outside_speech"] += 1
                continue
            start = min(max(w.start, track.offsets[i]), track.ends[i]) + shift
            end = min(max(w.end, track.offsets[i]), track.ends[i]) + shift
            words[i].append(Word(w.word, round(start, 3), round(end, 3), round(float(w.probability), 4)))
    for i, mine in enumerate(words):  # per utterance: a sentence said in several turns is no loop
        if compression_ratio("".join(w.word for w in mine)) > tc.max_compression_ratio:
            events[i]["dropped_repetition"] += len(mine)
            words[i] = []
        elif len(mine) == 1 and mine[0].probability < tc.min_lone_word_probability:
            events[i]["dropped_lone_word"] += 1  # a real "Yes." comes with Whisper's confidence
            words[i] = []
    return words, info


def transcribe_utterances(whisper, clips: list[np.ndarray], starts: list[float], language: str | None = None,
                          beam_size: int = 5, speech: list[tuple[tuple[float, float], ...]] | None = None,
                          config: TranscriptionConfig | None = None, groups: list | None = None) -> LegTranscript:
    """Transcribe raw clips that start at `starts` (call time); returns guarded words per clip.

    `speech` gives each clip's speech regions in call time (default: the whole clip). `groups`
    names each clip's call and leg: a retried utterance is prompted only with its own leg's
    neighbours. Without it a retry gets no prompt, since a live pass mixes calls and one call's
    words must never prompt (and so leak into) another's."""
    tc = config or TranscriptionConfig()
    if not clips:
        return LegTranscript(language or "", 0.0, [], [], [])
    levelled = [level_speech(c, tc.target_dbfs) for c in clips]
    speech = speech or [((s, s + len(c) / SAMPLE_RATE),) for s, c in zip(starts, clips)]
    events = [Counter() for _ in clips]
    words, info = _decode(whisper, _Track.join(levelled), starts, speech, tc, language, beam_size, events)
    language = language or info.language
    for i in [i for i, w in enumerate(words) if repeats_phrase(w)]:
        events[i]["retried_repeat"] += 1  # alone and unprompted: the loop may be copying its context
        words[i] = _decode_alone(whisper, levelled[i], starts[i], speech[i], tc, language, beam_size,
                                 events[i]) or words[i]
    empty = [i for i, w in enumerate(words) if not w]
    if tc.retry_empty:
        for i in empty:
            events[i]["retried"] += 1
            words[i] = _retry(whisper, levelled[i], starts[i], speech[i], tc, language, beam_size, events[i],
                              _neighbours_text(words, i, groups))
    notes = ["" if w else NO_WORDS for w in words]
    for i, note in enumerate(notes):
        events[i]["no_words"] += note == NO_WORDS
    return LegTranscript(language, float(info.language_probability), words, notes, events)


def _decode_alone(whisper, clip: np.ndarray, start: float, speech: tuple[tuple[float, float], ...],
                  tc: TranscriptionConfig, language: str | None, beam_size: int, events: Counter,
                  prompt: str | None = None) -> list[Word]:
    """One utterance decoded on its own (optionally prompted): its guarded words in call time."""
    return _decode(whisper, _Track.join([clip]), [start], [speech], tc, language, beam_size, [events], prompt)[0][0]


def _retry(whisper, clip: np.ndarray, start: float, speech: tuple[tuple[float, float], ...],
           tc: TranscriptionConfig, language: str | None, beam_size: int, events: Counter,
           prompt: str | None) -> list[Word]:
    """An utterance the joined pass left empty, decoded alone with its neighbours' text as prompt.

    Words that only repeat a run of that prompt are checked by a pass without it, whose words win
    when it has any (Whisper copies its prompt: a retried "Kids are talking by the door" came back
    as the neighbour's "dogs are sitting by the door"). When that pass hears nothing, one or two
    copied words are dropped (over a noise burst before a call's first turn Whisper wrote the next
    turn's "I'm" or "Don't") and three or more kept: a customer may say a sentence again.
    """
    heard = _decode_alone(whisper, clip, start, speech, tc, language, beam_size, events, prompt)
    if heard and prompt and _within(heard, prompt):
        events["retried_unprompted"] += 1
        plain_pass = _decode_alone(whisper, clip, start, speech, tc, language, beam_size, events)
        if plain_pass:
            heard = plain_pass
        elif len(heard) < REPEAT_WORDS:
            events["dropped_prompt_copy"] += len(heard)
            heard = []
    events["recovered"] += bool(heard)
    return heard


def _neighbours_text(words: list[list[Word]], i: int, groups: list | None) -> str | None:
    """The text of the nearest worded utterances before and after `i` in its own group (leg)."""
    if groups is None:
        return None
    same = [j for j in range(len(words)) if groups[j] == groups[i]]
    before = [j for j in same if j < i and words[j]]
    after = [j for j in same if j > i and words[j]]
    picked = before[-1:] + after[:1]
    return " ".join("".join(w.word for w in words[j]).strip() for j in picked) or None


ASR_COUNTS = ("dropped_no_speech", "dropped_repetition", "dropped_boilerplate", "dropped_outside_speech",
              "dropped_lone_word", "dropped_prompt_copy", "retried", "recovered", "retried_unprompted",
              "retried_repeat", "no_words")


def asr_metrics(counts: Counter) -> dict[str, int]:
    """What the transcript guards did on a call (CallResult.metrics["asr"]), every key always there."""
    out = {k: int(counts.get(k, 0)) for k in ASR_COUNTS}
    out["hallucinated_words_dropped"] = sum(out[k] for k in ASR_COUNTS if k.startswith("dropped_"))
    return out
