"""Redaction: is the personal data callers say taken out of Whisper's transcripts and the audio?

Assembled two-party stereo calls (agent left, customer right): the agent (espeak-ng) greets and
asks for details; the customer says them as people do (espeak-ng, varied voices and speeds) —
card numbers in groups of digit words, with "double" and "oh"; phone numbers ("oh seven seven
double oh ..."); e-mail addresses spelled out ("mary underscore jones at outlook dot com"); names;
dates of birth; a mother's maiden name — between real CREMA-D turns and turns with numbers that
identify no one (order numbers, prices, times). Each PII value is synthesised on its own and
placed between its sentence's other words, so the time it was said is known exactly.

Each call is written at 16 kHz PCM and 8 kHz G.711 mu-law, each turn transcribed by the project's
Whisper (analysis/transcription.transcribe_utterances, the configured model) and the call
redacted by analysis/redaction (default policy); the spans are cut from the WAV itself with
redact_wav and the result decoded again. Reported per condition and entity type:

- recall: the entity's words are gone from the redacted text and words (digits: no digit, said or
  written, left in the turn; names and addresses: no word within edit ratio 0.8 of the value's);
  `typed_recall` also needs a placeholder of the right type in the turn;
- precision: redacted stretches (consecutive redacted words) that overlap a said PII value;
- card_digits_left: digits left in the text or words of every card turn (target 0);
- audio: the share of PII speech (10 ms frames above -50 dBFS in the original) silent in the
  redacted WAV, and seconds of other speech silenced.

Sentence frames, prompts and trap sentences come in two disjoint sets: `--split dev` (used while
writing the recognizers) and `--split test` (reported). Values and voices are drawn per seed.

    python benchmarks/redaction.py [--calls 30] [--split test|dev] [--conditions 16k,8k_mulaw]
"""

from __future__ import annotations

import argparse
import difflib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

RATE = 16000
CONDITIONS = {"16k": ["-c:a", "pcm_s16le"], "8k_mulaw": ["-ar", "8000", "-c:a", "pcm_mulaw"]}
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f2", "en-gb+f3", "en-us+m3"]
DIGIT = "zero one two three four five six seven eight nine".split()
MONTHS = "January February March April May June July August September October November December".split()
ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
            "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth twenty-first twenty-second "
            "twenty-third twenty-fourth twenty-fifth twenty-sixth twenty-seventh twenty-eighth").split()
FIRST = "John Mary David Sarah Michael Emma James Olivia Robert Sophie Daniel Laura Peter Hannah Thomas Grace".split()
LAST = "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Walker White Hughes".split()
PROVIDERS = [("gmail", "com"), ("yahoo", "com"), ("outlook", "com"), ("hotmail", "co dot uk"), ("icloud", "com")]
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()

# what each split says around the values: {entity: (agent prompts, customer frames with {v})}
FRAMES = {
    "dev": {
        "CREDIT_CARD": (["Can I take the long number on the card, please?", "What is the card number?"],
                        ["My card number is {v}.", "Sure, it's {v}.", "{v}."]),
        "PHONE_NUMBER": (["What is the best number to reach you on?", "Can I have a contact number?"],
                         ["You can reach me on {v}.", "It's {v}.", "My phone number is {v}."]),
        "EMAIL_ADDRESS": (["And your email address?", "What email should I send the receipt to?"],
                          ["It's {v}.", "My email is {v}."]),
        "PERSON": (["Can I take your full name, please?", "Who am I speaking with today?"],
                   ["My name is {v}.", "Yes, it's {v}."]),
        "DATE_OF_BIRTH": (["Can you confirm your date of birth?", "And what is your date of birth?"],
                          ["It's {v}.", "I was born on {v}."]),
        "SECURITY_ANSWER": (["For security, what is your mother's maiden name?"],
                            ["It's {v}.", "My mother's maiden name is {v}."]),
    },
    "test": {
        "CREDIT_CARD": (["Could you read me the sixteen digits on the front of the card?",
                         "Okay, go ahead with the card number when you are ready."],
                        ["Okay, the number is {v}.", "Yeah, so that's {v}.", "Right, it's a Visa, {v}."]),
        "PHONE_NUMBER": (["Is there a phone number we can call you back on?", "What's your mobile number?"],
                         ["Yeah, call me on {v}.", "My mobile is {v}.", "Sure, {v}."]),
        "EMAIL_ADDRESS": (["Can I get an email address for the confirmation?", "What's the email on the account?"],
                          ["Sure, it's {v}.", "Yeah, send it to {v}.", "{v}."]),
        "PERSON": (["May I have your name, please?", "And who do I have the pleasure of speaking to?"],
                   ["Yeah, my name's {v}.", "Sure, my name is {v}.", "Hi, this is {v}."]),
        "DATE_OF_BIRTH": (["I just need your date of birth to confirm it's you.", "What's your birthday?"],
                          ["Sure, it's {v}.", "My date of birth is {v}.", "{v}."]),
        "SECURITY_ANSWER": (["And the answer to your security question, your mother's maiden name?"],
                            ["Okay, it's {v}.", "Her maiden name was {v}."]),
    },
}
GREETINGS = {"dev": ["Thank you for calling, how can I help you today?", "Hello, you're through to customer services."],
             "test": ["Good morning, thanks for calling, what can I do for you?", "Hi there, how can I help?"]}
CLOSINGS = {"dev": ["Thank you, one moment while I check that.", "Great, thanks for confirming."],
            "test": ["Perfect, bear with me a second.", "Lovely, thank you, let me pull that up."]}
# numbers that identify no one, said by the customer: they must stay in the transcript
TRAPS = {"dev": ["I'd like a refund for order number four five seven eight nine two.",
                 "It cost forty nine ninety nine and I was charged twice.", "I've been waiting for twenty minutes.",
                 "The parcel was meant to come on Tuesday."],
         "test": ["My order reference is seven seven three one two, it arrived broken.",
                  "I paid a hundred and twenty dollars for it.", "I called three times last week.",
                  "It's eleven o'clock and nobody has called me back."]}


@dataclass
class Truth:
    entity: str
    leg: int
    start: float
    end: float
    value: str  # as said (the spoken words)
    digits: str = ""  # for number entities


@dataclass
class Turn:
    leg: int
    audio: np.ndarray
    text: str
    truths: list[Truth] = field(default_factory=list)  # times relative to the turn's start
    kind: str = ""  # "pii:<ENTITY>", "trap", "cremad", "agent"


# ---- how people say things ------------------------------------------------------------------


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    from emotivoice.analysis.redaction.spoken import luhn

    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn(body + d))


def say_digits(digits: str, rng: random.Random, doubles: bool, oh: bool) -> str:
    """Digit words as callers read them: "double five" for a pair where they like, "oh" for 0."""
    out, i = [], 0
    while i < len(digits):
        d = digits[i]
        word = "oh" if d == "0" and oh else DIGIT[int(d)]
        if doubles and digits[i:i + 3] == d * 3 and rng.random() < 0.5:
            out.append(f"triple {word}")
            i += 3
        elif doubles and digits[i:i + 2] == d * 2:
            out.append(f"double {word}")
            i += 2
        else:
            out.append(word)
            i += 1
    return " ".join(out)


def say_groups(digits: str, sizes: list[int], rng: random.Random) -> str:
    doubles, oh = rng.random() < 0.5, rng.random() < 0.6
    groups, i = [], 0
    for n in sizes:
        groups.append(say_digits(digits[i:i + n], rng, doubles, oh))
        i += n
    return ", ".join(groups)


def card_value(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["visa", "visa", "mastercard", "amex"])
    if kind == "amex":
        digits = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return digits, say_groups(digits, [4, 6, 5], rng)
    digits = luhn_complete("4" if kind == "visa" else rng.choice(["51", "52", "53", "54", "55"]), 16, rng)
    return digits, say_groups(digits, [4, 4, 4, 4], rng)


def phone_value(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:  # North American: 3-3-4
        digits = str(rng.randint(2, 9)) + "".join(rng.choice("0123456789") for _ in range(2)) + \
            str(rng.randint(2, 9)) + "".join(rng.choice("0123456789") for _ in range(6))
        return digits, say_groups(digits, [3, 3, 4], rng)
    digits = "07" + "".join(rng.choice("0123456789") for _ in range(9))  # UK mobile: 5-6 or 5-3-3
    return digits, say_groups(digits, rng.choice([[5, 6], [5, 3, 3]]), rng)


def say_number(n: int) -> str:
    """0-99 in words, as in "eighty five"."""
    if n < 10:
        return DIGIT[n]
    if n < 20:
        return TEENS[n - 10]
    return TENS[n // 10 - 2] + ("" if n % 10 == 0 else f" {DIGIT[n % 10]}")


def say_year(y: int) -> str:
    if y >= 2000:
        return "two thousand" + (f" and {say_number(y - 2000)}" if y > 2000 else "")
    century = say_number(y // 100)
    return f"{century} {say_number(y % 100)}" if y % 100 >= 10 else f"{century} oh {DIGIT[y % 10]}"


def dob_value(rng: random.Random) -> tuple[str, str]:
    y, m, d = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
    style = rng.choice(["month_ordinal", "ordinal_of", "numeric"])
    if style == "month_ordinal":
        said = f"{MONTHS[m - 1]} {ORDINALS[d - 1]}, {say_year(y)}"
    elif style == "ordinal_of":
        said = f"the {ORDINALS[d - 1]} of {MONTHS[m - 1]}, {say_year(y)}"
    else:
        said = f"{say_digits(f'{m:02d}', rng, False, True)}, {say_digits(f'{d:02d}', rng, False, True)}, {say_year(y)}"
    return f"{y:04d}{m:02d}{d:02d}", said


def email_value(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
    host, tld = rng.choice(PROVIDERS)
    style = rng.choice(["dot", "underscore", "number", "joined", "spelled"])
    if style == "dot":
        local = f"{first} dot {last}"
    elif style == "underscore":
        local = f"{first} underscore {last}"
    elif style == "number":
        local = f"{first[0]} {last} {say_number(rng.randint(21, 99))}"
    elif style == "joined":
        local = f"{first}{last}"
    else:
        local = " ".join(last.upper())
    return "", f"{local} at {host} dot {tld}"


def name_value(rng: random.Random) -> tuple[str, str]:
    return "", f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def maiden_value(rng: random.Random) -> tuple[str, str]:
    return "", rng.choice(LAST)


VALUES = {"CREDIT_CARD": card_value, "PHONE_NUMBER": phone_value, "EMAIL_ADDRESS": email_value,
          "PERSON": name_value, "DATE_OF_BIRTH": dob_value, "SECURITY_ANSWER": maiden_value}
# a redaction under any of these types counts as the right kind for the truth's type
ACCEPT = {"CREDIT_CARD": {"CREDIT_CARD"}, "PHONE_NUMBER": {"PHONE_NUMBER"}, "EMAIL_ADDRESS": {"EMAIL_ADDRESS"},
          "PERSON": {"PERSON"}, "DATE_OF_BIRTH": {"DATE_OF_BIRTH"}, "SECURITY_ANSWER": {"SECURITY_ANSWER", "PERSON"}}


# ---- speech ---------------------------------------------------------------------------------


def espeak(text: str, voice: str, speed: int, pitch: int, workdir: Path, deliberate: bool = False) -> np.ndarray:
    """espeak-ng's reading of `text` at 16 kHz, leading and trailing silence trimmed. `deliberate`:
    slower, with a short gap between words, as people read out a number or spell a name."""
    from emotivoice.analysis.audio import load_audio

    path = workdir / f"tts-{abs(hash((text, voice, speed, pitch, deliberate)))}.wav"
    extra = ["-g", "4"] if deliberate else []
    speed = speed - 25 if deliberate else speed
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), *extra, "-w", str(path), text],
                   check=True)
    x = load_audio(path, channels=1)[0]
    loud = np.flatnonzero(np.abs(x) > 0.01)
    x = x[max(0, loud[0] - 160):loud[-1] + 160] if loud.size else x
    peak = float(np.max(np.abs(x))) or 1.0
    return (x * (0.5 / peak)).astype(np.float32)


def pii_turn(entity: str, frame: str, rng: random.Random, voice, workdir: Path) -> Turn:
    """The frame's words and the value synthesised apart and joined, so the value's time is known."""
    digits, said = VALUES[entity](rng)
    before, after = frame.split("{v}")
    pieces, pos, truth = [], 0.0, None
    for part, is_value in ((before, False), (said, True), (after, False)):
        if not part.strip(" ,"):
            continue
        audio = espeak(part, *voice, workdir, deliberate=is_value)
        if is_value:
            truth = Truth(entity, 1, pos, pos + len(audio) / RATE, said, digits)
        pieces += [audio, np.zeros(int(0.12 * RATE), np.float32)]
        pos += len(audio) / RATE + 0.12
    return Turn(1, np.concatenate(pieces[:-1]), frame.replace("{v}", said), [truth], f"pii:{entity}")


def said_turn(text: str, leg: int, voice, workdir: Path, kind: str) -> Turn:
    return Turn(leg, espeak(text, *voice, workdir), text, [], kind)


def build_call(i: int, split: str, rng: random.Random, cremad: list, workdir: Path) -> list[Turn]:
    """greeting, a CREMA-D turn, two or three asked-for details, a trap or CREMA-D turn, closing."""
    from emotivoice.analysis.audio import load_audio

    agent_voice = (rng.choice(VOICES), rng.randint(150, 175), rng.randint(35, 60))
    customer_voice = (rng.choice([v for v in VOICES if v != agent_voice[0]]), rng.randint(140, 180),
                      rng.randint(30, 70))
    frames = FRAMES[split]
    entities = list(VALUES)
    # every call has a card or a phone number (the targets), and one or two other details
    asked = [("CREDIT_CARD", "PHONE_NUMBER")[i % 2]] + rng.sample([e for e in entities if e not in
                                                                   ("CREDIT_CARD", "PHONE_NUMBER")], 1)
    asked += rng.sample([e for e in entities if e not in asked], 1 if i % 3 else 0)
    rng.shuffle(asked)
    clip = rng.choice(cremad)
    turns = [said_turn(rng.choice(GREETINGS[split]), 0, agent_voice, workdir, "agent"),
             Turn(1, load_audio(clip.path, channels=1)[0], clip.text, [], "cremad")]
    for entity in asked:
        prompts, customer = frames[entity]
        turns.append(said_turn(rng.choice(prompts), 0, agent_voice, workdir, "agent"))
        turns.append(pii_turn(entity, rng.choice(customer), rng, customer_voice, workdir))
    turns.append(said_turn(rng.choice(CLOSINGS[split]), 0, agent_voice, workdir, "agent"))
    if rng.random() < 0.6:
        turns.append(said_turn(rng.choice(TRAPS[split]), 1, customer_voice, workdir, "trap"))
    else:
        clip = rng.choice(cremad)
        turns.append(Turn(1, load_audio(clip.path, channels=1)[0], clip.text, [], "cremad"))
    return turns


@dataclass
class Placed:
    turn: Turn
    start: float
    end: float


def assemble(turns: list[Turn], rng: random.Random) -> tuple[np.ndarray, list[Placed], list[Truth]]:
    placed, cursor = [], 0.5
    for t in turns:
        start = cursor + (rng.uniform(0.4, 1.0) if placed else 0.0)
        placed.append(Placed(t, start, start + len(t.audio) / RATE))
        cursor = placed[-1].end
    audio = np.zeros((2, int((cursor + 0.5) * RATE)), np.float32)
    truths = []
    for p in placed:
        k = int(p.start * RATE)
        audio[p.turn.leg, k:k + len(p.turn.audio)] += p.turn.audio
        truths += [Truth(x.entity, x.leg, p.start + x.start, p.start + x.end, x.value, x.digits) for x in p.turn.truths]
    return audio, placed, truths


# ---- transcription and redaction -------------------------------------------------------------


def transcribe(whisper, audio: np.ndarray, placed: list[Placed], tc) -> list:
    """Each turn transcribed as an utterance of its leg (the turn edges padded by 0.15 s)."""
    from emotivoice.analysis.results import Utterance
    from emotivoice.analysis.transcription import transcribe_utterances

    utterances = []
    for leg, speaker in ((0, "agent"), (1, "customer")):
        mine = [p for p in placed if p.turn.leg == leg]
        starts = [max(0.0, p.start - 0.15) for p in mine]
        clips = [audio[leg, int(s * RATE):int((p.end + 0.15) * RATE)] for s, p in zip(starts, mine)]
        lt = transcribe_utterances(whisper, clips, starts, "en", tc.beam_size, None, tc, [leg] * len(clips))
        for p, words in zip(mine, lt.words):
            utterances.append(Utterance("bench", leg, speaker, p.start, p.end, -20.0,
                                        text="".join(w.word for w in words).strip(), language="en", words=words))
    return sorted(utterances, key=lambda u: u.start)


# ---- scoring ---------------------------------------------------------------------------------

NUMBER_WORD = re.compile(r"\b(zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
                         r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
                         r"seventy|eighty|ninety|hundred|thousand|double|triple)\b|\d", re.I)
PLACEHOLDER = re.compile(r"\[([A-Z_]+)(?::[0-9a-f]{8})?\]")


def _plain(s: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", PLACEHOLDER.sub(" ", s).lower())


def value_words(t: Truth) -> list[str]:
    skip = {"dot", "at", "underscore", "com", "co", "uk", "the", "of"}
    return [w for w in re.findall(r"[a-z]+", t.value.lower()) if w not in skip and len(w) > 1]


def number_words_left(text: str, strict: bool = True) -> list[str]:
    """Number words and digits left in a redacted text. Not `strict`: an "oh" with no number word
    beside it is the interjection ("Yes, oh yes, [CREDIT_CARD]"), and a "double" or "triple" with
    no number word after it says no digit ("Double-[CREDIT_CARD]"), so neither counts."""
    found = [m.group() for m in NUMBER_WORD.finditer(PLACEHOLDER.sub(" ", text))]
    if strict:
        return found
    words = [w for w in re.findall(r"\[[A-Z_]+(?::[0-9a-f]{8})?\]|[A-Za-z]+|\d", text)]
    is_number = [bool(NUMBER_WORD.fullmatch(w)) for w in words]
    out = []
    for k, w in enumerate(words):
        if not is_number[k]:
            continue
        before, after = k > 0 and is_number[k - 1], k + 1 < len(words) and is_number[k + 1]
        if w.lower() in ("oh", "o") and not (before or after):
            continue
        if w.lower() in ("double", "triple") and not after:
            continue
        out.append(w)
    return out


def leaked(t: Truth, text: str, strict: bool = True) -> list[str]:
    """What of the value is still in a turn's redacted text (`strict`: see number_words_left)."""
    if t.entity in ("CREDIT_CARD", "PHONE_NUMBER"):
        return number_words_left(text, strict)
    left = _plain(text)
    out = [w for w in value_words(t) if difflib.get_close_matches(w, left, n=1, cutoff=0.8)]
    if t.entity == "DATE_OF_BIRTH":
        out += [m.group() for m in NUMBER_WORD.finditer(PLACEHOLDER.sub(" ", text))]
    if t.entity == "EMAIL_ADDRESS" and len(t.value.split(" at ")[0].split()) > 2:  # spelled letters
        letters = [w for w in re.findall(r"\b[a-z]\b", PLACEHOLDER.sub(" ", text).lower())]
        out += letters if len(letters) >= 3 else []
    return out


def redacted_stretches(u) -> list[tuple[str, float, float, str]]:
    """(type, start, end, original words) of each run of consecutive words redacted as one type."""
    out: list[list] = []
    last = None
    for k, (w, orig) in enumerate(zip(u.words, u.original_words)):
        m = PLACEHOLDER.search(w.word)
        if m and out and last == k - 1 and out[-1][0] == m.group(1):
            out[-1][2], out[-1][3] = w.end, out[-1][3] + orig.word
        elif m:
            out.append([m.group(1), w.start, w.end, orig.word])
        last = k if m else last
    return [(t, a, b, s.strip()) for t, a, b, s in out]


def score(placed: list[Placed], truths: list[Truth], utterances: list, rows: dict, fps: list) -> None:
    """Fill `rows` (per entity type) and `fps` from one redacted call."""
    by_turn = {id(p): u for p, u in zip(sorted(placed, key=lambda p: p.start), utterances)}
    for p in placed:
        u = by_turn[id(p)]
        redacted_text = u.text + " " + "".join(w.word for w in u.words)
        for t in p.turn.truths:
            t_abs = next(x for x in truths if x.value == t.value and abs(x.start - (p.start + t.start)) < 1e-6)
            r = rows[t.entity]
            left = leaked(t_abs, redacted_text, strict=False)
            strict_left = leaked(t_abs, redacted_text)
            types = {m.group(1) for m in PLACEHOLDER.finditer(u.text)}
            r["n"] += 1
            r["recalled"] += not left
            r["strict"] += not strict_left
            r["typed"] += (not left) and bool(types & ACCEPT[t.entity])
            if left:
                r["misses"].append({"said": t.value, "heard": "".join(w.word for w in u.original_words).strip(),
                                    "left": left[:6]})
            if t.entity == "CREDIT_CARD":
                r["card_digits_left"] += len(left)
                r["card_digits_left_strict"] += len(strict_left)
        if p.turn.kind == "trap":
            rows["_trap"]["n"] += 1
            rows["_trap"]["redacted"] += bool(PLACEHOLDER.search(u.text))
    for u in utterances:
        for kind, a, b, original in redacted_stretches(u):
            hit = any(t.leg == u.leg and a < t.end + 0.3 and b > t.start - 0.3 for t in truths)
            rows["_pred"][kind]["tp" if hit else "fp"] += 1
            if not hit:
                fps.append({"type": kind, "words": original, "utterance": u.original_text})


def audio_scores(original: np.ndarray, redacted: np.ndarray, truths: list[Truth]) -> tuple[float, float, float]:
    """(PII speech frames, of them silenced, other speech silenced) in seconds, 10 ms frames."""
    hop = RATE // 100
    n = min(original.shape[1], redacted.shape[1]) // hop
    pii_s = silenced_s = other_s = 0.0
    for leg in range(2):
        o = original[leg, :n * hop].reshape(n, hop)
        r = redacted[leg, :n * hop].reshape(n, hop)
        speech = np.sqrt(np.mean(o.astype(np.float64) ** 2, axis=1)) > 10 ** (-50 / 20)
        silent = np.max(np.abs(r), axis=1) < 1e-3
        inside = np.zeros(n, bool)
        for t in truths:
            if t.leg == leg:
                inside[int(t.start * 100):int(np.ceil(t.end * 100))] = True
        pii_s += np.sum(speech & inside) / 100
        silenced_s += np.sum(speech & inside & silent) / 100
        other_s += np.sum(speech & ~inside & silent) / 100
    return pii_s, silenced_s, other_s


def summarise(rows: dict, fps: list, audio: list, redact_s: float, asr_s: float, calls: int) -> dict:
    entities = {}
    for e in VALUES:
        r = rows[e]
        entities[e] = {"n": r["n"], "recall": round(r["recalled"] / max(1, r["n"]), 4),
                       "strict_recall": round(r["strict"] / max(1, r["n"]), 4),
                       "typed_recall": round(r["typed"] / max(1, r["n"]), 4), "misses": r["misses"][:8]}
    entities["CREDIT_CARD"]["card_digits_left"] = rows["CREDIT_CARD"]["card_digits_left"]
    entities["CREDIT_CARD"]["card_digits_left_strict"] = rows["CREDIT_CARD"]["card_digits_left_strict"]
    pred = rows["_pred"]
    tp, fp = sum(v["tp"] for v in pred.values()), sum(v["fp"] for v in pred.values())
    pii, silenced, other = (sum(a[k] for a in audio) for k in range(3))
    return {
        "entities": entities,
        "recall_all": round(sum(rows[e]["recalled"] for e in VALUES) / max(1, sum(rows[e]["n"] for e in VALUES)), 4),
        "precision": round(tp / max(1, tp + fp), 4), "redacted_stretches": tp + fp,
        "precision_by_type": {k: {"tp": v["tp"], "fp": v["fp"],
                                  "precision": round(v["tp"] / max(1, v["tp"] + v["fp"]), 4)}
                              for k, v in sorted(pred.items())},
        "false_positives": fps[:15],
        "trap_turns_redacted": f"{rows['_trap']['redacted']}/{rows['_trap']['n']}",
        "audio": {"pii_speech_s": round(pii, 2), "silenced_share": round(silenced / max(1e-9, pii), 4),
                  "other_speech_silenced_s": round(other, 2)},
        "redaction_ms_per_call": round(1000 * redact_s / max(1, calls), 1),
        "transcription_s": round(asr_s, 1),
    }


def _cached(cache: Path | None, name: str, make):
    """`make()`, or what an earlier run with the same split, seed, calls and model pickled."""
    import pickle

    path = cache / f"{name}.pkl" if cache else None
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes())
    value = make()
    if path is not None:
        from emotivoice.storage.files import write_private

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, pickle.dumps(value))
    return value


def _transcribe_all(whisper, built: list, condition: str, work: Path, tc) -> list[tuple[bytes, list, float]]:
    """Each call written as the condition's WAV and transcribed: (the WAV's bytes, utterances, seconds)."""
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.synth import write_audio

    out = []
    for i, (audio, placed, _) in enumerate(built):
        path = write_audio(audio, work / f"{condition}-{i:02d}.wav", CONDITIONS[condition])
        t = time.perf_counter()
        utterances = transcribe(whisper, load_audio(path), placed, tc)
        out.append((path.read_bytes(), utterances, time.perf_counter() - t))
        print(f"{condition} call {i} transcribed", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--name", default="")
    parser.add_argument("--cache", default="", help="a dir keeping the built calls and Whisper's transcripts between "
                        "runs, so a recognizer change is re-scored without re-transcribing (only while tuning)")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is missing: python3 launch.py installs it (apt-get install espeak-ng)")

    from dataclasses import asdict

    from emotivoice.analysis.emotion.corpus import read_manifest
    from emotivoice.analysis.audio import load_audio
    from emotivoice.analysis.redaction.audio import redact_wav
    from emotivoice.analysis.redaction.stage import Redactor
    from emotivoice.analysis.whisper import load_whisper
    from emotivoice.config import load_settings

    settings = load_settings()
    tc = settings.transcription
    rng = random.Random(args.seed + (1000 if args.split == "dev" else 0))
    parity = 1 if args.split == "dev" else 0  # dev and test calls use different CREMA-D actors
    cremad = [c for c in read_manifest(settings.emotion_data_dir / "manifest.csv", {"cremad"})
              if c.emotion in ("neutral", "anger", "sadness", "happiness")
              and int(c.speaker.split("-")[1]) % 2 == parity]
    t0 = time.perf_counter()
    cache = Path(args.cache) / f"{args.split}-s{args.seed}-n{args.calls}-{tc.model}" if args.cache else None
    whisper = None
    if cache is None or not all((cache / f"{c}.pkl").exists() for c in args.conditions.split(",")):
        whisper = load_whisper(tc.model, settings.model_cache_dir, tc.compute_type, tc.cpu_threads)
    redactor = Redactor(settings.redaction)
    redactor.find("warm up the spaCy pipeline")
    load_s = time.perf_counter() - t0
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        built = _cached(cache, "built", lambda: [assemble(build_call(i, args.split, rng, cremad, work), rng)
                                                 for i in range(args.calls)])
        for condition in args.conditions.split(","):
            heard_calls = _cached(cache, condition, lambda: _transcribe_all(whisper, built, condition, work, tc))
            rows = defaultdict(lambda: {"n": 0, "recalled": 0, "strict": 0, "typed": 0, "misses": [],
                                        "card_digits_left": 0, "card_digits_left_strict": 0})
            rows["_trap"] = {"n": 0, "redacted": 0}
            rows["_pred"] = defaultdict(Counter)
            fps, audio_rows, redact_s, asr_s = [], [], 0.0, 0.0
            for i, (audio, placed, truths) in enumerate(built):
                wav_bytes, utterances, took = heard_calls[i]
                asr_s += took
                path = work / f"{condition}-{i:02d}.wav"
                path.write_bytes(wav_bytes)
                heard = load_audio(path)
                for u in utterances:
                    u.original_words, u.original_text = list(u.words), u.text
                t = time.perf_counter()
                result = redactor.redact_utterances(utterances)
                redact_s += time.perf_counter() - t
                redacted_path = work / f"{condition}-{i:02d}-redacted.wav"
                redact_wav(path, result.spans, redacted_path, settings.redaction.audio_fill,
                           settings.redaction.audio_all_channels)
                score(placed, truths, utterances, rows, fps)
                audio_rows.append(audio_scores(heard, load_audio(redacted_path), truths))
                print(f"{condition} call {i}: {dict(result.counts)}", file=sys.stderr, flush=True)
            report[condition] = summarise(rows, fps, audio_rows, redact_s, asr_s, len(built))
    counts = Counter(t.entity for _, _, truths in built for t in truths)
    write_result(args.name or ("redaction" if args.split == "test" else "redaction_dev"), {
        "calls": args.calls, "split": args.split, "transcripts_cached": whisper is None, "seed": args.seed,
        "model": tc.model, "load_s": round(load_s, 1),
        "set": "two-party stereo calls: espeak-ng agent prompts and customer PII turns (values synthesised apart, "
               "times exact) between real CREMA-D turns and number-bearing trap turns; each turn one utterance",
        "entities_said": dict(sorted(counts.items())), "audio_s": round(sum(a.shape[1] for a, _, _ in built) / RATE, 1),
        "policy": redactor.policy, "redaction": asdict(settings.redaction) | {"hash_key_file": "(not recorded)"},
        "conditions": report,
    })


if __name__ == "__main__":
    main()
