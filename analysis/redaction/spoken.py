"""How people say numbers and addresses on a call, turned back into what they mean.

Whisper writes a card number as "4111 1111 1111 1111", "4111-1111-...", "four one one one, one
one one one" or "forty-one eleven ..."; a phone number as "oh two one two" or "double five". The
recognizers need the digits those words stand for and where in the text they were said, so this
module tokenizes a transcript with character offsets and reads runs of spoken or written digits
(with the fillers people put between groups) into one digit string per run. Pure functions, no
models: the recognizers in `recognizers.py` decide what a run is from its length and the words
before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN = re.compile(r"\d+|[A-Za-z]+(?:['’][A-Za-z]+)?|\n|[^\sA-Za-z\d]")

UNITS = {"zero": 0, "oh": 0, "o": 0, "nought": 0, "naught": 0, "nil": 0, "one": 1, "two": 2, "three": 3,
         "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
         "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
        "eighty": 80, "ninety": 90}
REPEAT = {"double": 2, "triple": 3, "treble": 3}
# said between digit groups without ending the number ("four one one one, uh, one one ...")
FILLER_WORDS = frozenset({"uh", "um", "er", "erm", "ah", "hmm", "mm", "dash", "hyphen", "and", "then", "space"})
FILLER_PUNCT = frozenset(",.-/()+:;–—")
# "oh" and "o" are digits only among other digits: "Oh, I see" is no number
WEAK_ZERO = frozenset({"oh", "o"})
# what Whisper writes for a digit word it half heard (telephone audio): digits only inside a run of
# digit words, never on their own ("I'm free on Tuesday", "a ticket for two" stay words). The
# strong ones may also start or end a run next to two other digits; the weak ones ("for", "to",
# common words) only stand between two digits ("six for nine").
STRONG_HOMOPHONES = {"free": 3, "tree": 3, "nero": 0, "ate": 8, "won": 1, "fife": 5, "sicks": 6, "nein": 9,
                     "niner": 9}
WEAK_HOMOPHONES = {"for": 4, "fore": 4, "to": 2, "too": 2}
HOMOPHONES = STRONG_HOMOPHONES | WEAK_HOMOPHONES


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offsets in the analysed text
    end: int

    @property
    def low(self) -> str:
        return self.text.lower().replace("’", "'")


@dataclass(frozen=True)
class DigitRun:
    digits: str  # what was said, as digits
    start: int  # character span of the run in the text (first to last digit word)
    end: int
    spoken: bool  # at least one digit was said as a word


def tokenize(text: str) -> list[Token]:
    """Words, digit groups, line breaks and single punctuation marks, with their offsets."""
    return [Token(m.group(), m.start(), m.end()) for m in TOKEN.finditer(text)]


def _unit(tok: Token) -> int | None:
    if tok.text.isdigit() and len(tok.text) == 1:
        return int(tok.text)
    return UNITS.get(tok.low)


def _tight(tokens: list[Token], i: int, j: int) -> bool:
    """Tokens i and j (j = i +- 2) are joined by a hyphen with no space: "7-1", "1-I"."""
    if not 0 <= j < len(tokens):
        return False
    a, b = sorted((i, j))
    return tokens[a + 1].text == "-" and tokens[a].end == tokens[a + 1].start and tokens[a + 1].end == tokens[b].start


def _misheard_digit(tokens: list[Token], i: int) -> bool:
    """A letter in a hyphenated digit string: Whisper's "7-1-I-1-2-8" for a digit it did not
    make out. Counted as a digit so the whole number is taken out, not all of it but one."""
    tok = tokens[i]
    if len(tok.text) != 1 or not tok.text.isalpha():
        return False
    for j in (i - 2, i + 2):
        if _tight(tokens, i, j) and tokens[j].text.isdigit():
            return True
    for j in (i - 1, i + 1):  # "0756i040497"
        near = 0 <= j < len(tokens) and tokens[j].start <= tok.end and tok.start <= tokens[j].end
        if near and tokens[j].text.isdigit():
            return True
    return False


def _number_at(tokens: list[Token], i: int) -> tuple[str, int, bool] | None:
    """The digits said from token i on, how many tokens they took, and whether they were words
    (a misheard digit is "x")."""
    tok = tokens[i]
    low = tok.low
    if tok.text.isdigit():
        return tok.text, 1, False
    if _misheard_digit(tokens, i):
        return "x", 1, True
    if low in REPEAT:
        j = i + 1
        while j < len(tokens) and tokens[j].text in ",.-":  # Whisper's "double, oh" for "double oh"
            j += 1
        unit = _unit(tokens[j]) if j < len(tokens) else None
        if unit is None and j < len(tokens):  # "double free", "Double-I-1-2": a repeat says a digit follows
            unit = HOMOPHONES.get(tokens[j].low, "x" if _misheard_digit(tokens, j) else None)
        if unit is not None:
            return str(unit) * REPEAT[low], j + 1 - i, True
        return None
    if low in TEENS:
        return str(TEENS[low]), 1, True
    if low in TENS:
        j = i + 1
        if j < len(tokens) and tokens[j].text == "-":
            j += 1
        if j < len(tokens) and tokens[j].low in UNITS and UNITS[tokens[j].low] > 0 and tokens[j].low not in WEAK_ZERO:
            return str(TENS[low] + UNITS[tokens[j].low]), j + 1 - i, True
        return str(TENS[low]), 1, True
    if low in UNITS:
        return str(UNITS[low]), 1, True
    return None


def _scale(tokens: list[Token], i: int, value: str, used: int) -> tuple[str, int]:
    """"eight hundred" is 800 and "two thousand and five" 2005; a phone's "eight hundred five
    five five" keeps its digits apart, so a hundred joins what follows only after "and"."""
    j = i + used
    if j >= len(tokens) or len(value) > 2:
        return value, used
    word = tokens[j].low
    if word == "hundred":
        k = j + 1
        if k + 1 < len(tokens) and tokens[k].low == "and":
            nxt = _number_at(tokens, k + 1)
            if nxt and len(nxt[0]) <= 2 and not nxt[0].startswith("0"):
                return str(int(value) * 100 + int(nxt[0])), k + 1 + nxt[1] - i
        return value + "00", j + 1 - i
    if word == "thousand":
        k = j + 1
        if k < len(tokens) and tokens[k].low == "and":
            k += 1
        nxt = _number_at(tokens, k) if k < len(tokens) else None
        if nxt and len(nxt[0]) <= 3 and not nxt[0].startswith("0"):
            nxt_value, nxt_used = _scale(tokens, k, nxt[0], nxt[1])
            if len(nxt_value) <= 3:
                return str(int(value) * 1000 + int(nxt_value)), k + nxt_used - i
        return value + "000", j + 1 - i
    return value, used


def digit_runs(tokens: list[Token], lenient: bool = False) -> list[DigitRun]:
    """Every run of digits said in a row, fillers and group punctuation allowed between them,
    with Whisper's homophones of digit words inside it ("I'm free, six, four", "nero seven");
    a line break (the edge of an utterance) always ends a run. `lenient` (where a number was
    just asked for) reads a strong homophone as its digit wherever it stands."""
    runs: list[DigitRun] = []
    i, n = 0, len(tokens)
    while i < n:
        first = _number_at(tokens, i) or _homophone(tokens, i, 0, lenient)
        if first is None or (tokens[i].low in WEAK_ZERO and not _has_digit_after(tokens, i + 1)):
            i += 1
            continue
        digits, spoken, start, end = "", False, tokens[i].start, tokens[i].end
        while i < n:
            got = _number_at(tokens, i) or _homophone(tokens, i, len(digits), lenient)
            if got is None:
                if tokens[i].low in FILLER_WORDS or tokens[i].text in FILLER_PUNCT:
                    i += 1
                    continue
                break
            value, used = _scale(tokens, i, got[0], got[1])
            digits += value
            spoken |= got[2]
            end = tokens[i + used - 1].end
            i += used
        runs.append(DigitRun(digits, start, end, spoken))
    return runs


def _next_word(tokens: list[Token], i: int) -> int:
    """The first token from i on that is not a filler or group punctuation (len(tokens) if none)."""
    while i < len(tokens) and (tokens[i].low in FILLER_WORDS or tokens[i].text in FILLER_PUNCT):
        i += 1
    return i


def _hard_digit(tokens: list[Token], i: int) -> bool:
    return i < len(tokens) and _number_at(tokens, i) is not None and tokens[i].low not in WEAK_ZERO


def _homophone(tokens: list[Token], i: int, before: int, lenient: bool = False) -> tuple[str, int, bool] | None:
    """A homophone of a digit word at token i, read as that digit where the run allows it:
    `before` digits of this run precede it. Between two digits any homophone counts; a strong one
    also counts at the start of a run of two more digits, or at its end after two."""
    value = HOMOPHONES.get(tokens[i].low)
    if value is None:
        return None
    nxt = _next_word(tokens, i + 1)
    after = _hard_digit(tokens, nxt) or (nxt < len(tokens) and tokens[nxt].low in HOMOPHONES
                                         and _hard_digit(tokens, _next_word(tokens, nxt + 1)))
    strong = tokens[i].low in STRONG_HOMOPHONES
    if (before and after) or (strong and lenient):
        return str(value), 1, True
    if strong and before >= 2:
        return str(value), 1, True
    third = _next_word(tokens, nxt + 1)
    if strong and not before and after and _hard_digit(tokens, nxt) and third < len(tokens) and \
            _number_at(tokens, third) is not None:
        return str(value), 1, True
    return None


def _has_digit_after(tokens: list[Token], i: int) -> bool:
    """Whether a digit follows (past fillers) before anything else: "oh two" yes, "oh, I see" no."""
    while i < len(tokens):
        tok = tokens[i]
        if _number_at(tokens, i) is not None:
            return tok.low not in WEAK_ZERO or _has_digit_after(tokens, i + 1)
        if tok.low not in FILLER_WORDS and tok.text not in FILLER_PUNCT:
            return False
        i += 1
    return False


def luhn(digits: str) -> bool:
    """The check digit of every payment card number (ISO/IEC 7812); False with a misheard digit."""
    if not digits.isdigit():
        return False
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch)
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0 and len(digits) > 1


# ---- spelled-out e-mail addresses ------------------------------------------------------------

AT_WORDS = frozenset({"at", "@"})
DOT_WORDS = frozenset({"dot", "period", "point", "."})
JOIN_WORDS = frozenset({"underscore", "_", "dash", "hyphen", "-", "plus", "+"})
TLDS = frozenset("com net org edu gov mil io co uk us ca au nz ie de fr es it nl be ch se no dk fi in info biz me "
                 "tv cc ly ai app dev email online".split())
PROVIDERS = frozenset("gmail googlemail yahoo ymail hotmail outlook live msn aol icloud me mac protonmail proton "
                      "comcast verizon att btinternet sky virgin gmx yandex zoho fastmail mail".split())
# words that end the local part when reading backwards from "at": nobody's address starts with them
LOCAL_STOP = frozenset("""is it's its was email e-mail mail address my your his her our their the a an that's
that this me you him us them be at to on in of for from with by and or but so um uh er yeah yes okay ok sure
please send sent reach contact write look stay home work here there it i i'm we they he she just
then well oh like use using under""".split())
# words that are no domain label ("email" is one: Whisper hears "gmail" as "email.com")
DOMAIN_STOP = frozenset("is it's its was my your the a an and or but so please thanks thank you i".split())
MAX_LOCAL_WORDS = 3  # "john smith at gmail" is one address; more words before "at" are the sentence


def _is_word(tok: Token) -> bool:
    return tok.text[0].isalnum()


def email_spans(tokens: list[Token]) -> list[tuple[int, int, str]]:
    """(start, end, address) for every "<local> at <domain> dot <tld>" said on a line, the address
    rebuilt ("john dot smith at gmail dot com" -> john.smith@gmail.com) so it hashes like the typed
    one. The domain must end in a known top-level domain or be a known mail provider."""
    found = []
    for k, tok in enumerate(tokens):
        if tok.low not in AT_WORDS:
            continue
        local = _local_part(tokens, k)
        domain = _domain(tokens, k + 1)
        if local is None or domain is None:
            continue
        (ls, local_text), (de, domain_text) = local, domain
        found.append((tokens[ls].start, tokens[de].end, f"{local_text}@{domain_text}"))
    return found


def _local_part(tokens: list[Token], at: int) -> tuple[int, str] | None:
    """Where the local part said before "at" starts, and the local part rebuilt."""
    i, words, start, prev_join = at - 1, 0, None, True
    while i >= 0 and tokens[i].text in {".", ","}:  # Whisper's sentence punctuation: "Peter. Johnson. At Outlook.com."
        i -= 1
    while i >= 0:
        tok = tokens[i]
        low = tok.low
        if tok.text == "\n":
            break
        if low in DOT_WORDS or low in JOIN_WORDS:
            if start is None:
                return None
            prev_join = True
            i -= 1
            continue
        single = len(tok.text) == 1 and tok.text.isalnum()  # a spelled letter or digit
        if not _is_word(tok) or (low in LOCAL_STOP and not single):
            break
        if not single and not prev_join:
            words += 1
            if words >= MAX_LOCAL_WORDS:
                break
        start, prev_join = i, single
        i -= 1
    if start is None:
        return None
    return start, _rebuild(tokens, start, at)


def _rebuild(tokens: list[Token], start: int, end: int) -> str:
    """Spoken local part to text: "j o h n dot smith eighty five" -> john.smith85 ("J-O-H-N"
    is spelling, not hyphens)."""
    out, i = [], start
    while i < end:
        low = tokens[i].low
        if low in DOT_WORDS:
            out.append(".")
        elif low in JOIN_WORDS:
            spelled = (0 < i < end - 1 and len(tokens[i - 1].text) == 1 and len(tokens[i + 1].text) == 1)
            if not spelled:
                out.append({"underscore": "_", "dash": "-", "hyphen": "-", "plus": "+"}.get(low, low))
        else:
            number = _number_at(tokens, i) if low not in WEAK_ZERO else None
            if number and number[2] and i + number[1] <= end:
                out.append(number[0])
                i += number[1]
                continue
            out.append(low)
        i += 1
    return "".join(out).strip("._-+")


def _domain(tokens: list[Token], i: int) -> tuple[int, str] | None:
    if i < len(tokens) and tokens[i].low in {"sign", "symbol"}:  # "at sign", "at symbol"
        i += 1
    labels: list[tuple[str, int]] = []  # (label, index of its last token)
    n = len(tokens)
    while i < n and _is_word(tokens[i]) and tokens[i].low not in DOMAIN_STOP:
        label, j = tokens[i].low, i + 1
        while j + 1 < n and tokens[j].low in {"-", "dash", "hyphen"} and _is_word(tokens[j + 1]):
            label += "-" + tokens[j + 1].low
            j += 2
        labels.append((label, j - 1))
        if j + 1 < n and tokens[j].low in DOT_WORDS and _is_word(tokens[j + 1]):
            i = j + 1
            continue
        break
    # the longest prefix that ends in a top-level domain, or a bare provider ("at gmail")
    for cut in range(len(labels), 1, -1):
        if labels[cut - 1][0] in TLDS:
            return labels[cut - 1][1], ".".join(label for label, _ in labels[:cut])
    if labels and labels[0][0] in PROVIDERS:
        return labels[0][1], labels[0][0]
    return None
