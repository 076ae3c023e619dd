"""PII redaction with the real Presidio + spaCy en_core_web_sm pipeline (no stubs), on utterances
shaped like Whisper's (words with leading spaces, punctuation and times), and on real WAV files."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emotivoice.analysis.redaction.audio import read_layout, redact_wav
from emotivoice.analysis.redaction.spoken import digit_runs, tokenize
from emotivoice.analysis.redaction.stage import RedactedSpan, Redactor, load_hash_key, policy_of
from emotivoice.analysis.results import CallResult, Utterance
from emotivoice.analysis.transcription import Word
from emotivoice.config import RedactionConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo" / "demo_call.opus"
DIGIT_WORDS = re.compile(r"\b(zero|oh|one|two|three|four|five|six|seven|eight|nine|double|triple)\b|\d", re.I)

pytestmark = pytest.mark.slow


def utterance(text: str, start: float = 0.0, speaker: str = "customer", leg: int = 1, word_s: float = 0.3) -> Utterance:
    """An utterance as Whisper leaves it: words with their leading space, punctuation attached."""
    pieces = text.split()
    words = [Word(f" {p}", round(start + k * word_s, 3), round(start + (k + 1) * word_s - 0.02, 3), 0.9)
             for k, p in enumerate(pieces)]
    return Utterance(call_id="c1", leg=leg, speaker=speaker, start=start, end=start + len(pieces) * word_s,
                     loudness_dbfs=-20.0, text="".join(w.word for w in words).strip(), words=words)


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactionConfig())


def _redacted(redactor: Redactor, *texts: str, speakers: tuple[str, ...] = ()) -> list[Utterance]:
    utts, t = [], 0.0
    for i, text in enumerate(texts):
        speaker = speakers[i] if speakers else "customer"
        u = utterance(text, t, speaker, leg=0 if speaker == "agent" else 1)
        utts.append(u)
        t = u.end + 0.8
    redactor.redact_utterances(utts)
    return utts


def _no_digits_left(u: Utterance) -> None:
    assert not DIGIT_WORDS.search(u.text), u.text
    assert not any(DIGIT_WORDS.search(w.word) for w in u.words), [w.word for w in u.words]


def _times_kept(before: Utterance, after: Utterance) -> None:
    assert [(w.start, w.end) for w in before.words] == [(w.start, w.end) for w in after.words]


@pytest.mark.parametrize("said", [
    "It's four one one one, one one one one, one one one one, one one one one.",
    "Sure, 4111 1111 1111 1111.",
    "Yeah it's 4111-1111-1111-1111.",
    "My card number is five five double five, five five five five, four four four four, four four four four.",
    "It's forty-one eleven, eleven eleven, eleven eleven, eleven eleven.",
    "My card number is 4-1-I-1-1-1-1-1-1-1-1-1-1-1-1-1.",  # a digit Whisper did not make out
    "Card number, six two double, oh double seven nine seven, oh I mean, four four five six two one.",
])
def test_card_numbers_said_any_way_are_redacted_in_text_and_words(redactor, said):
    before = utterance(said)
    (u,) = _redacted(redactor, said)
    assert "[CREDIT_CARD]" in u.text
    _no_digits_left(u)
    _times_kept(before, u)
    assert any(w.word.strip().startswith("[CREDIT_CARD]") for w in u.words)


@pytest.mark.parametrize("said, expected", [
    ("You can reach me on 555-123-4567.", "[PHONE_NUMBER]"),
    ("My number is oh two one two, double five, three four five six.", "[PHONE_NUMBER]"),
    ("Call me back on oh seven seven double oh, nine double oh one two three.", "[PHONE_NUMBER]"),
    ("It's john dot smith at gmail dot com.", "[EMAIL_ADDRESS]"),
    ("My email is mary underscore jones eighty five at outlook dot com", "[EMAIL_ADDRESS]"),
    ("My name is Sarah Connor.", "[PERSON]"),
    ("Smith, that's S-M-I-T-H.", "[PERSON]"),
    ("I was born on the fifteenth of June nineteen seventy two.", "[DATE_OF_BIRTH]"),
    ("My date of birth is March 3rd, 1985.", "[DATE_OF_BIRTH]"),
    ("My mother's maiden name is Robinson.", "[SECURITY_ANSWER]"),
    ("And my social is 123-45-6789.", "[US_SSN]"),
    ("My phone number is 683219. I'm 731.", "[PHONE_NUMBER]"),  # chunks split by a misheard word
    ("It's 18th of October 1945.", "[DATE_OF_BIRTH]"),  # a full date long ago, the question lost
    ("Peter. Johnson. At Outlook.com.", "[EMAIL_ADDRESS]"),  # Whisper punctuating a spelled address
])
def test_personal_data_is_redacted(redactor, said, expected):
    (u,) = _redacted(redactor, said)
    assert expected in u.text, u.text
    assert any(expected in w.word for w in u.words)


def test_a_number_read_in_chunks_leaves_no_digit(redactor):
    (u,) = _redacted(redactor, "My phone number is 683219. I'm 731.")
    _no_digits_left(u)


def test_what_was_said_is_gone_not_only_labelled(redactor):
    (email,) = _redacted(redactor, "It's john dot smith at gmail dot com.")
    assert not re.search(r"john|smith|gmail", email.text + "".join(w.word for w in email.words), re.I)
    (name,) = _redacted(redactor, "My mother's maiden name is Robinson.")
    assert "Robinson" not in name.text and "maiden name" in name.text
    (dob,) = _redacted(redactor, "I was born on the 9th of November 1965.")
    assert dob.text == "I was born on [DATE_OF_BIRTH]."


def test_answers_to_the_agents_question_are_redacted(redactor):
    utts = _redacted(redactor, "And what is your mother's maiden name?", "It's Robinson.",
                     "Can I take your date of birth?", "March the third, nineteen eighty five.",
                     speakers=("agent", "customer", "agent", "customer"))
    assert utts[1].text == "It's [SECURITY_ANSWER]."
    assert "[DATE_OF_BIRTH]" in utts[3].text and "eighty" not in utts[3].text
    assert utts[0].text == "And what is your mother's maiden name?"


def test_an_agent_naming_the_number_asks_for_it_however_the_prompt_was_heard(redactor):
    """8 kHz Whisper turns "Can I have the card number" into "I'll head with the card number": the
    answer is still a card, read in misheard chunks that are no card on their own."""
    utts = _redacted(redactor, "I'll head with the card number.",
                     "Right. I'm free, six, four. I'm double, three, five.", speakers=("agent", "customer"))
    assert "[CREDIT_CARD]" in utts[1].text
    _no_digits_left(utts[1])
    assert utts[0].text == "I'll head with the card number."


def test_i_am_is_no_time_of_day_between_the_chunks_of_a_phone_number(redactor):
    """Whisper breaks a phone number read in chunks with misheard words ("0M and I am 3N"); the
    answer's chunks are one number unless the words between them name something else, and "I am"
    names no time."""
    _, u = _redacted(redactor, "What's the best number to reach you on?",
                     "My mobile is 0M and I am 3N. I am 8. I am 1.3.1.", speakers=("agent", "customer"))
    assert "[PHONE_NUMBER]" in u.text
    _no_digits_left(u)
    (time_of_day,) = _redacted(redactor, "The branch opens at 8 am and I am there at nine.")
    assert time_of_day.text == "The branch opens at 8 am and I am there at nine."


def test_a_card_read_in_two_breaths_is_one_number(redactor):
    utts = _redacted(redactor, "It's four one one one, one one one one,", "one one one one, one one one one.")
    for u in utts:
        assert "[CREDIT_CARD]" in u.text
        _no_digits_left(u)


@pytest.mark.parametrize("said", [
    "It's eleven o'clock.", "I think I have a doctor's appointment.", "That is exactly what happened.",
    "I'm on my way to the meeting.", "I wonder what this is about.", "The airplane is almost full.",
    "Maybe tomorrow it will be cold.", "I would like a new alarm clock.", "Don't forget a jacket.",
    "I think I've seen this before.", "The surface is slick.", "We'll stop in a couple of minutes.",
    "I'd like a refund for order number four five seven eight nine two, it arrived broken.",
    "My order number is 4578 9231 and I want a refund.", "It cost forty nine ninety nine and I paid twice.",
    "Oh, I see. I've been waiting for twenty minutes.", "I have two kids and three dogs.",
    "Thank you for calling, how can I help you today?", "Can I take the long number on the card, please?",
])
def test_ordinary_contact_center_speech_is_left_alone(redactor, said):
    (u,) = _redacted(redactor, said)
    assert u.text == said
    assert u.words == utterance(said).words


def test_redact_call_reports_spans_counts_and_policy(redactor):
    call = CallResult("c1", "x.wav", 20.0, 2, "channel-per-speaker (stereo)", "base", "head", False)
    call.utterances = [utterance("Thank you for calling.", 0.0, "agent", 0),
                       utterance("My card is four one one one, one one one one, one one one one, one one one one.",
                                 2.0, "customer", 1)]
    report = redactor.redact_call(call)
    assert report.counts == {"CREDIT_CARD": 1}
    assert call.metrics["redaction"]["policy"] == policy_of(RedactionConfig())
    assert call.metrics["redaction"]["entities"] == {"CREDIT_CARD": 1}
    spans = report.to_json()["spans"]
    card_words = [w for w in call.utterances[1].words if "[CREDIT_CARD]" in w.word]
    assert len(card_words) == 16
    # the card ends the utterance, so its audio is cut to the utterance's end (Whisper times a last
    # word worst), with the margin
    assert spans == [{"leg": 1, "start": round(card_words[0].start - 0.15, 3),
                      "end": round(call.utterances[1].end + 0.15, 3), "entity": "CREDIT_CARD"}]
    assert call.utterances[1].end > card_words[-1].end
    assert "4111" not in json.dumps(call.to_json()) and " one one" not in json.dumps(call.to_json())


def test_policy_version_follows_the_settings():
    base = RedactionConfig()
    assert policy_of(base) == policy_of(RedactionConfig())
    assert policy_of(base)["version"] != policy_of(replace(base, entities="CREDIT_CARD"))["version"]
    assert policy_of(base)["version"] == policy_of(replace(base, hash_key_file="/elsewhere"))["version"]


def test_entities_are_configurable():
    only_cards = Redactor(RedactionConfig(entities="CREDIT_CARD"))
    (u,) = _redacted(only_cards, "My name is Sarah Connor and my card is 4111 1111 1111 1111.")
    assert "Sarah Connor" in u.text and "[CREDIT_CARD]" in u.text
    off = Redactor(RedactionConfig(transcripts=False))
    (v,) = _redacted(off, "My card is 4111 1111 1111 1111.")
    assert "4111" in v.text


def test_stable_hash_is_stable_keyed_and_the_same_however_said(tmp_path):
    key_file = tmp_path / "redaction.key"
    key = load_hash_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and load_hash_key(key_file) == key
    cfg = RedactionConfig(replacement="hash")
    a = _redacted(Redactor(cfg, key), "It's four one one one, one one one one, one one one one, one one one one.")[0]
    b = _redacted(Redactor(cfg, key), "Sure, 4111 1111 1111 1111.")[0]
    c = _redacted(Redactor(cfg, key), "Sure, 4111 1111 1111 1129.")[0]
    d = _redacted(Redactor(cfg, b"another key of thirty two bytes!"), "Sure, 4111 1111 1111 1111.")[0]
    tag = re.compile(r"\[CREDIT_CARD:[0-9a-f]{8}\]")
    ta, tb, tc, td = (tag.search(u.text).group() for u in (a, b, c, d))
    assert ta == tb and ta != tc and ta != td
    e = _redacted(Redactor(cfg, key), "My email is john dot smith at gmail dot com.")[0]
    f = _redacted(Redactor(cfg, key), "My email is john.smith@gmail.com.")[0]
    mail = re.compile(r"\[EMAIL_ADDRESS:\w{8}\]")
    assert mail.search(e.text).group() == mail.search(f.text).group()


def test_spoken_digits_are_read_as_people_say_them():
    def said(text):
        return [r.digits for r in digit_runs(tokenize(text))]
    assert said("one eight hundred five five five one two one two") == ["18005551212"]
    assert said("oh two one two, double five, triple seven") == ["02125577" + "7"]
    assert said("nineteen eighty-five") == ["1985"]
    assert said("two thousand and five") == ["2005"]
    assert said("Oh, I see. It's eleven o'clock.") == ["11"]


NO_NETWORK = r"""
import json, socket, sys
def refuse(*a, **k):
    raise OSError("network refused by the test")
socket.socket.connect = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
from emotivoice.analysis.redaction.stage import Redactor
from emotivoice.config import RedactionConfig
r = Redactor(RedactionConfig())
found = [e.entity_type for e in r.find("Write to john.smith@example.co.uk or mary@gmail.com, or call 555-123-4567.")[0]]
import tldextract.tldextract as t
print(json.dumps({"found": found}))
"""


def test_nothing_goes_to_the_network(tmp_path):
    """A fresh process with sockets refused builds the engine and validates typed e-mail domains
    (Presidio's e-mail recognizer goes through tldextract), writing no suffix-list cache."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path),
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "TLDEXTRACT_CACHE": ""}
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "network refused" not in proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])["found"]
    assert found.count("EMAIL_ADDRESS") == 2 and "PHONE_NUMBER" in found
    assert not any("tldextract" in str(p) for p in tmp_path.rglob("*"))


# ---- audio ------------------------------------------------------------------------------------


def _wav(tmp_path: Path, name: str, rate: int, codec: str, channels: int) -> Path:
    """A real recording (the bundled demo call, CREMA-D speech) as a WAV of this kind."""
    path = tmp_path / name
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(DEMO), "-t", "10", "-ac", str(channels),
                    "-ar", str(rate), "-c:a", codec, str(path)], check=True)
    return path


def _samples(path: Path) -> np.ndarray:
    """(frames, channels) as float, decoded by FFmpeg at the file's own rate."""
    layout = read_layout(path)
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ar", str(layout.rate),
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32).reshape(-1, layout.channels)


@pytest.mark.parametrize("rate, codec, channels", [(16000, "pcm_s16le", 2), (8000, "pcm_mulaw", 2),
                                                   (8000, "pcm_s16le", 1), (16000, "pcm_alaw", 1)])
def test_audio_spans_are_silenced_in_a_real_wav(tmp_path, rate, codec, channels):
    src = _wav(tmp_path, "call.wav", rate, codec, channels)
    before = _samples(src)
    # the demo's customer speaks 3.7-6.4 s (right channel), the agent 7.0-9.9 s (left)
    spans = [RedactedSpan(1, 4.0, 5.5, "CREDIT_CARD"), RedactedSpan(1, 5.4, 6.0, "CREDIT_CARD"),
             RedactedSpan(0, 7.5, 8.0, "PERSON")]
    out = tmp_path / "redacted.wav"
    cut = redact_wav(src, spans, out, all_channels=False)
    assert cut == pytest.approx(2.5, abs=2 / rate)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    after = _samples(out)
    assert after.shape == before.shape
    leg1 = 1 if channels == 2 else 0  # a mono file has no leg 1: the whole mix is cut
    customer, agent = slice(4 * rate, 6 * rate), slice(int(7.5 * rate), 8 * rate)
    silent = 1 / 4096  # A-law has no zero code: its quietest decodes to 8/32768
    assert np.abs(after[customer, leg1]).max() <= silent and np.abs(after[agent, 0]).max() <= silent
    assert np.abs(before[customer, leg1]).max() > 0.01 and np.abs(before[agent, 0]).max() > 0.01  # speech was cut
    keep = np.ones(len(before), bool)
    keep[4 * rate - 1:6 * rate + 1] = keep[int(7.5 * rate) - 1:8 * rate + 1] = False
    assert np.array_equal(after[keep], before[keep])
    if channels == 2:  # only the speaker's own channel
        assert np.array_equal(after[customer, 0], before[customer, 0])


def test_audio_tone_and_in_place_rewrite(tmp_path):
    src = _wav(tmp_path, "call.wav", 8000, "pcm_mulaw", 2)
    redact_wav(src, [RedactedSpan(1, 4.0, 5.0, "PHONE_NUMBER")], fill="tone")
    after = _samples(src)
    assert stat.S_IMODE(src.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))
    for ch in range(2):  # all channels by default
        x = after[32000:40000, ch]
        spectrum = np.abs(np.fft.rfft(x))
        assert abs(np.argmax(spectrum) * 8000 / len(x) - 1000) < 5
        assert 20 * np.log10(np.sqrt(np.mean(x ** 2)) * np.sqrt(2)) == pytest.approx(-20, abs=0.5)
