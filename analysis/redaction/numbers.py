"""What a run of spoken digits is: a card, a phone, an account number, or nothing that names anyone.

The words before a number decide it (the closest keyword within CONTEXT_CHARS, the agent's
question included, since the stage analyses each utterance after the one before it), then its
length and Luhn's check. Two rules read telephone transcripts as they come out of Whisper: a
chunk of a number that cannot be placed alone is absorbed by the classified number beside it,
and the customer's answer to the agent asking for a card or phone number is one number however
Whisper broke it up ("My number is 3-4-6-6. Nero I'm 8-1-2. I'm Maiming 3-1-2-8."): every
number-like run of that answer, with the misheard words between its runs, is taken out.
"""

from __future__ import annotations

import re

from emotivoice.analysis.redaction.spoken import DigitRun, digit_runs, luhn, tokenize

CONTEXT_CHARS = 100  # words this far before a number (the agent's question included) say what it is

# what the words before a number say it is; the keyword closest to the number wins
CONTEXT = [
    ("cvv", re.compile(r"\b(security code|cvv|cvc|cv2|card verification|three digits?|3 digits?|four digits on the "
                       r"front|back of (the|your|my) card|code on the back)\b")),
    ("card", re.compile(r"\b(card|visa|master ?card|amex|american express|discover|credit|debit|long number|"
                        r"car number)\b")),  # Whisper's "car number" on a telephone line
    ("ssn", re.compile(r"\b(social|ssn|social security|national insurance|ni number|tax id|taxpayer)\b")),
    ("dob", re.compile(r"\b(born|birth|birthday|date of birth|dob|d o b|birth ?date)\b")),
    ("account", re.compile(r"\b(account|acct|routing|sort code|bank|checking|savings|iban|member number|"
                           r"customer number|membership number)\b")),
    ("phone", re.compile(r"\b(phone|telephone|cell|cellphone|mobile|landline|call (me|you|him|her|back)|reach (me|you)|"
                         r"text me|contact|callback|call-back|number to call|best number|my number|ring me|"
                         r"home number|work number)\b")),
    # numbers that identify no one: "my order number is 4 5 7 8 9 2, I want a refund"
    ("other", re.compile(r"\b(order|reference|ref|confirmation|tracking|ticket|case|invoice|claim|booking|item|"
                         r"model|serial|parcel|package|extension|flight|room|zip|zip code|postcode|post code|price|"
                         r"cost|dollars|pounds|euros|bucks|total|minutes|hours|days|weeks|months|years|percent|"
                         r"o'clock)\b")),
    # a time of day only right after its number ("8 am", "eight p.m."): "I am 8" is no time, and a
    # bare "am" keyword voided every number said after "I am" (a caller's "my mobile is 0... I am 3...")
    ("other", re.compile(r"(?:\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)) ?"
                         r"(?:am|pm|a\.m\.|p\.m\.)(?!\w)")),
]


def context_kind(text: str, start: int, chars: int = CONTEXT_CHARS) -> str | None:
    """What the words just before `start` say a number is, by the closest keyword."""
    window = text[max(0, start - chars):start].lower().replace("’", "'")
    best, best_end = None, -1
    for kind, pattern in CONTEXT:
        for m in pattern.finditer(window):
            if m.end() > best_end:
                best, best_end = kind, m.end()
    return best


def classify_digits(digits: str, kind: str | None) -> tuple[str, float] | None:
    """What a run of digits is, given the closest context keyword; None when it identifies no one.

    A card number passes Luhn's check; one that fails it by a misheard digit is still a card when
    the caller said "card" or it has a card's 15-16 digits. Ten digits (eleven after a 1 or 0)
    with no other context are a phone number, since that is what callers most often read out.
    """
    n = len(digits)
    card_like = 13 <= n <= 19 and luhn(digits)
    long_card = n >= 20 and any(luhn(digits[:k]) for k in range(13, 20))  # card then expiry or CVV in one breath
    if kind == "other":
        return ("CREDIT_CARD", 0.6) if card_like else None
    if card_like or long_card:
        return "CREDIT_CARD", 0.95
    if kind == "card":  # part of a card is still a card (Whisper drops digits); the last four alone are not
        return ("CREDIT_CARD", 0.8) if n >= 6 else None
    if kind == "cvv":
        return ("CARD_SECURITY_CODE", 0.85) if 3 <= n <= 4 else None
    if kind == "ssn":
        return ("US_SSN", 0.85) if n in (4, 9) else None
    if kind == "dob":
        return ("DATE_OF_BIRTH", 0.8) if 4 <= n <= 8 else None
    if kind == "account":
        return ("BANK_ACCOUNT", 0.8) if 6 <= n <= 17 else None
    if kind == "phone":
        return ("PHONE_NUMBER", 0.85) if 6 <= n <= 15 else None
    if n in (15, 16):
        return "CREDIT_CARD", 0.5  # a card's length with a misheard digit
    if n == 10 or (n == 11 and digits[0] in "10") or (12 <= n <= 13 and digits.startswith(("44", "353", "61"))):
        return "PHONE_NUMBER", 0.6
    return None


ABSORB_GAP_CHARS = 20  # "683219. I'm 731": Whisper breaks a number read in chunks with a misheard word
ABSORBING = {"CREDIT_CARD", "PHONE_NUMBER", "BANK_ACCOUNT", "US_SSN"}


def _absorb(text: str, runs: list[DigitRun], kinds: list) -> list[tuple[tuple[int, int, str], tuple[str, float]]]:
    """Classified number runs, each grown over the unclassified runs said just before or after it
    on the same line (a chunk of the same number the recognizer could not place alone)."""
    groups: list[list[int]] = []
    for k, got in enumerate(kinds):
        near = groups and k - 1 == groups[-1][-1] and _close(text, runs[k - 1], runs[k])
        both = near and (kinds[groups[-1][0]] is None or got is None)
        grows = both and any(kinds[j] and kinds[j][0] in ABSORBING for j in groups[-1] + [k])
        if grows and not (got and any(kinds[j] for j in groups[-1])):
            groups[-1].append(k)
        else:
            groups.append([k])
    out = []
    for g in groups:
        got = next((kinds[j] for j in g if kinds[j]), None)
        if got:
            out.append(((runs[g[0]].start, runs[g[-1]].end, "".join(runs[j].digits for j in g)), got))
    return out


def _close(text: str, a: DigitRun, b: DigitRun) -> bool:
    gap = text[a.end:b.start]
    return len(gap) <= ABSORB_GAP_CHARS and "\n" not in gap


# ---- the answer to the agent's question ------------------------------------------------------

# an ask: a question, or a request to read something out, in the line before the answer
ASK = re.compile(r"\?|\b(what|what's|which|can i|could i|could you|can you|may i|would you|go ahead|read|tell me|"
                 r"give me|let me (have|take|get)|is there|do you have|confirm)\b")
# the agent naming the number is an ask too, however Whisper heard the words around it on a
# telephone line ("Can I have the card number" heard as "I'll head with the card number")
NAMED = re.compile(r"\b(card|phone|mobile|telephone|cell|contact|long) number\b|\bnumber on (the|your) card\b")
ASKED_KINDS = {"card": "CREDIT_CARD", "phone": "PHONE_NUMBER"}
ANSWER_GAP_CHARS = 30  # misheard words between two chunks of the answer ("I'm Maiming") are part of it
ANSWER_MIN_DIGITS = 4  # fewer digits in the whole answer are no card or phone ("the one on the left")
ANSWER_SCORE = 0.9  # above spaCy's PERSON (0.85), which tags a run of misheard words as a name


def asked_kind(prompt: str) -> str | None:
    """"card" or "phone" when the line before an answer asks for that number, else None."""
    low = prompt.lower().replace("’", "'")
    if not (ASK.search(low) or NAMED.search(low)):
        return None
    kind = context_kind(low, len(low), len(low))
    return kind if kind in ASKED_KINDS else None


def answer_entities(text: str) -> list[tuple[tuple[int, int, str], tuple[str, float]]]:
    """The number in the last line of `text` when the line before it asked for a card or phone
    number: its runs (strong homophones read as digits wherever they stand, "Nero") joined across
    short gaps of misheard words, each group of at least
    ANSWER_MIN_DIGITS digits one entity of the kind asked for (or the kind the answer itself names
    before it). A group that the answer's own words say is something else ("order", "born") is left
    to the ordinary reading."""
    cut = text.rfind("\n")
    if cut < 0:
        return []
    asked = asked_kind(text[text.rfind("\n", 0, cut) + 1:cut])
    if asked is None:
        return []
    shift = cut + 1
    runs = [DigitRun(r.digits, r.start + shift, r.end + shift, r.spoken)
            for r in digit_runs(tokenize(text[shift:]), lenient=True)]
    groups: list[list[DigitRun]] = []
    for run in runs:
        if groups and run.start - groups[-1][-1].end <= ANSWER_GAP_CHARS and \
                context_kind(text[groups[-1][-1].end:run.start], run.start - groups[-1][-1].end) is None:
            groups[-1].append(run)
        else:
            groups.append([run])
    out = []
    for g in groups:
        digits = "".join(r.digits for r in g)
        said = context_kind(text[cut + 1:g[0].start], g[0].start - cut - 1)
        kind = said if said is not None else asked
        if len(digits) < ANSWER_MIN_DIGITS or kind not in ASKED_KINDS:
            continue
        out.append(((g[0].start, g[-1].end, digits), (ASKED_KINDS[kind], ANSWER_SCORE)))
    return out


def number_entities(text: str, runs: list[DigitRun]) -> list[tuple[tuple[int, int, str], tuple[str, float]]]:
    """((start, end, digits), (entity, score)) for every number in `text` that identifies someone:
    each run read by its context and length (chunks absorbed), and the answer to an ask. They may
    overlap; the stage takes the union, named by the more confident."""
    kinds = [classify_digits(r.digits, context_kind(text, r.start)) for r in runs]
    return _absorb(text, runs, kinds) + answer_entities(text)
