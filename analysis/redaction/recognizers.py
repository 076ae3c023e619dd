"""Presidio recognizers for what callers say and Presidio's defaults miss.

Presidio's own recognizers read typed text: "4111 1111 1111 1111" is a card to them, "four one one
one ..." is nothing, "john dot smith at gmail dot com" is a person called "john dot smith", and a
mother's maiden name is only caught where spaCy happens to tag it. These read Whisper transcripts
as people speak them (see `spoken.py`), with the words before a number deciding what it is: the
agent's question counts, since the stage analyses each utterance with the one before it.

Each result carries `recognition_metadata["value"]`, the entity normalised (digits, the rebuilt
address, the lower-cased words), so a stable hash is the same however the value was said.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import EmailRecognizer

from emotivoice.analysis.redaction.numbers import CONTEXT_CHARS, number_entities
from emotivoice.analysis.redaction.spoken import DigitRun, Token, digit_runs, email_spans, tokenize

VALUE = "value"  # recognition_metadata key of the normalised entity
def _result(entity: str, start: int, end: int, score: float, value: str, name: str) -> RecognizerResult:
    return RecognizerResult(entity, start, end, score,
                            recognition_metadata={VALUE: value, RecognizerResult.RECOGNIZER_NAME_KEY: name})


class SpokenNumberRecognizer(EntityRecognizer):
    """Card, phone, account and social security numbers, card security codes and numeric dates
    of birth, said as digits, words or groups ("oh two one two", "double five")."""

    ENTITIES = ["CREDIT_CARD", "CARD_SECURITY_CODE", "PHONE_NUMBER", "BANK_ACCOUNT", "US_SSN", "DATE_OF_BIRTH"]

    def __init__(self) -> None:
        super().__init__(supported_entities=self.ENTITIES, name="SpokenNumberRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list:
        out = []
        for (start, end, digits), got in number_entities(text, digit_runs(tokenize(text))):
            if not entities or got[0] in entities:
                out.append(_result(got[0], start, end, got[1], digits, self.name))
        return out


class SpokenEmailRecognizer(EntityRecognizer):
    """E-mail addresses spelled out: "john dot smith at gmail dot com", "j o h n at yahoo dot co dot uk"."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["EMAIL_ADDRESS"], name="SpokenEmailRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list:
        spans = email_spans(tokenize(text))
        return [_result("EMAIL_ADDRESS", a, b, 0.9, address, self.name) for a, b, address in spans]


# ---- answers after a prompt: names and security answers ---------------------------------------

# said between the prompt and the answer: "your name, please?\nSure, it's John Smith."
SKIP = frozenset("""is was it's its it that's that uh um er erm so well oh yeah yes sure okay ok the please would be
called named a an answer just umm hmm mm hi hello hey right this me , : ? - \n""".split()) | {"\n"}
# words no answer is made of (names and pets are capitalised by Whisper, these are not)
STOP = frozenset("""and but or i i'm i've i'd calling from with here speaking to of about because for so thanks
thank you sir ma'am madam how what can could would will if not no don't do does did have has had am are be been
on in at by this that my your his her our their me we they he she them us let think know remember sorry can't
isn't wasn't""".split())
MAX_ANSWER_WORDS = 3


def _answer_tokens(tokens: list[Token], i: int, proper: dict[int, bool] | None = None,
                   max_words: int = MAX_ANSWER_WORDS) -> list[Token]:
    """The answer that follows a prompt ending at token i: up to `max_words` words after the
    fillers. With `proper` (start offset -> spaCy says proper noun), only proper nouns count."""
    n = len(tokens)
    while i < n and (tokens[i].low in SKIP or tokens[i].text in SKIP):
        i += 1
    got: list[Token] = []
    while i < n and len(got) < max_words:
        tok = tokens[i]
        if tok.text in {"-", "'"} and got and i + 1 < n and tokens[i + 1].text[0].isalpha():
            i += 1  # Mary-Jane, O'Neil
            continue
        if not tok.text[0].isalnum() or tok.low in STOP:
            break
        if proper is not None and not proper.get(tok.start, False):
            break
        got.append(tok)
        i += 1
    return got


def _token_after(tokens: list[Token], offset: int) -> int:
    return next((k for k, t in enumerate(tokens) if t.start >= offset), len(tokens))


def _proper_nouns(nlp_artifacts: NlpArtifacts | None) -> dict[int, bool]:
    if nlp_artifacts is None or nlp_artifacts.tokens is None:
        return {}
    return {t.idx: t.pos_ == "PROPN" or t.ent_type_ == "PERSON" for t in nlp_artifacts.tokens}


def _span_result(entity: str, got: list[Token], score: float, name: str) -> RecognizerResult:
    value = " ".join(t.low for t in got)
    return _result(entity, got[0].start, got[-1].end, score, value, name)


NAME_STRONG = re.compile(r"\b((my|the|his|her)\s+(full\s+|first\s+|last\s+|middle\s+|family\s+|sur)?name(\s+is|'s)|"
                         r"name's|surname is|last name is|first name is|name on the card is)\b")
# the agent asking: the name is what the next line (the customer's answer) starts with
NAME_ASKED = re.compile(r"\b(your\s+(full\s+|first\s+|last\s+|middle\s+|family\s+|sur)?name|name on the card|"
                        r"who (am i|i'm) (speaking|talking) (with|to)|who do i have the pleasure)\b[^\n]*\n")
NAME_WEAK = re.compile(r"\b(this is|i'm|i am|it's|speaking with|speak to|talking to|ask for|mister|mr|mrs|ms|miss|"
                       r"dr|doctor)\b")
SPELLED = re.compile(r"\b(spell|spelled|spelt|spelling|name|surname|that's)\b")


class NameRecognizer(EntityRecognizer):
    """Names given when asked: after "my name is" any words, after "this is" or "I'm" proper
    nouns only, and names spelled letter by letter ("S-M-I-T-H")."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="NameRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list:
        tokens = tokenize(text)
        low = text.lower().replace("’", "'")
        proper = _proper_nouns(nlp_artifacts)
        out = []
        for pattern, only_proper, score in ((NAME_STRONG, None, 0.85), (NAME_ASKED, None, 0.75),
                                            (NAME_WEAK, proper, 0.7)):
            for m in pattern.finditer(low):
                got = _answer_tokens(tokens, _token_after(tokens, m.end()), only_proper)
                if got:
                    out.append(_span_result("PERSON", got, score, self.name))
        out.extend(self._spelled(tokens, low))
        return out

    def _spelled(self, tokens: list[Token], low: str) -> list[RecognizerResult]:
        out, i, n = [], 0, len(tokens)
        while i < n:
            j, letters = i, []
            while j < n and ((len(tokens[j].text) == 1 and tokens[j].text.isalpha())
                             or (letters and tokens[j].text in {"-", "."})):
                if tokens[j].text.isalpha():
                    letters.append(j)
                j += 1
            if len(letters) >= 3 and SPELLED.search(low[max(0, tokens[i].start - 60):tokens[i].start]):
                got = [tokens[k] for k in letters]
                out.append(_result("PERSON", got[0].start, got[-1].end, 0.7, "".join(t.low for t in got), self.name))
            i = max(j, i + 1)
        return out


SECURITY = re.compile(r"\b(maiden name|first pet('s)?( name)?|pet's name|name of (my|your|the) first pet|"
                      r"(first|favou?rite) (school|teacher|car|pet|food|movie|film|book|band|song|colou?r|sports? team|"
                      r"city|place|holiday)|(city|town|place) (i was|you were|where (i was|you were)) born( in)?|"
                      r"place of birth|street (i|you) grew up on|memorable (word|name|place|date|phrase)|"
                      r"(security|secret) (answer|word|phrase)|pass ?(word|code|phrase)|pin( number| code)?|"
                      r"(mother's|father's) (first|middle) name)\b")


SECURITY_SCORE = 0.9  # above spaCy's PERSON (0.85): a maiden name is reported as the answer it is


class SecurityAnswerRecognizer(EntityRecognizer):
    """The answer to a security question: "my mother's maiden name is Robinson", a PIN, a
    password, or the customer's reply to the agent asking for one."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["SECURITY_ANSWER"], name="SecurityAnswerRecognizer",
                         supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list:
        tokens = tokenize(text)
        runs = digit_runs(tokens)
        out = []
        for m in SECURITY.finditer(text.lower().replace("’", "'")):
            k = _token_after(tokens, m.end())
            run = _run_after(runs, tokens, k)
            if run is not None:  # a PIN or a passcode read as digits
                out.append(_result("SECURITY_ANSWER", run.start, run.end, SECURITY_SCORE, run.digits, self.name))
                continue
            got = _answer_tokens(tokens, k)
            if got:
                out.append(_span_result("SECURITY_ANSWER", got, SECURITY_SCORE, self.name))
        return out


def _run_after(runs: list[DigitRun], tokens: list[Token], k: int) -> DigitRun | None:
    """The digit run that starts right after token k, past the fillers, if one does."""
    while k < len(tokens) and (tokens[k].low in SKIP or tokens[k].text in SKIP):
        k += 1
    if k >= len(tokens):
        return None
    return next((r for r in runs if r.start == tokens[k].start), None)


# ---- dates of birth ---------------------------------------------------------------------------

NUMERIC_DATE = re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-](\d{4}|\d{2})\b|\b\d{4}-\d{2}-\d{2}\b")
DOB_CONTEXT = re.compile(r"\b(born|birth|birthday|date of birth|dob|d o b|d\.o\.b|birth ?date)\b")


class DateOfBirthRecognizer(EntityRecognizer):
    """A date (spaCy's DATE, or typed as 03/03/1985) said where birth was just mentioned; other
    dates ("it's eleven o'clock", "next Tuesday") are no one's identity and are kept."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["DATE_OF_BIRTH"], name="DateOfBirthRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list:
        spans = [(m.start(), m.end()) for m in NUMERIC_DATE.finditer(text)]
        if nlp_artifacts is not None and nlp_artifacts.entities:
            spans += [(e.start_char, e.end_char) for e in nlp_artifacts.entities if e.label_ in ("DATE", "DATE_TIME")]
        low = text.lower()
        out = []
        for a, b in spans:
            a = _day_before(low, a)
            value = " ".join(re.findall(r"[a-z0-9]+", low[a:b]))
            if DOB_CONTEXT.search(low[max(0, a - CONTEXT_CHARS):a]) or DOB_CONTEXT.search(low[b:b + 30]):
                out.append(_result("DATE_OF_BIRTH", a, b, 0.85, value, self.name))
            elif _full_date_long_ago(text[a:b]):
                out.append(_result("DATE_OF_BIRTH", a, b, 0.6, value, self.name))
        return out


DAY_BEFORE = re.compile(r"(\bthe\s+)?(\b\d{1,2}(st|nd|rd|th)?|\b[a-z]+(st|nd|rd|th))(\s+of)?[\s,]*$")


def _day_before(low: str, a: int) -> int:
    """Start the date at the day said before it: spaCy's DATE is often "November 1965" alone in
    "9th of November 1965"."""
    m = DAY_BEFORE.search(low[max(0, a - 30):a])
    if m and (m.group(2)[0].isdigit() or ORDINAL.fullmatch(m.group(2))):
        return a - (len(low[max(0, a - 30):a]) - m.start())
    return a


MONTH = re.compile(r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b", re.I)
BIRTH_YEARS = range(1900, 2011)  # a caller's own birth year; an order or a visit is recent


def _full_date_long_ago(span: str) -> bool:
    """A month or day and a year before 2011 ("the 18th of October 1945", "03/10/1945"): a date
    of birth even where the question was lost (the agent's "date of birth" misheard)."""
    numeric = [y for y in re.findall(r"\b\d{1,2}[/.-]\d{1,2}[/.-](\d{4})\b", span)]
    if any(int(y) in BIRTH_YEARS for y in numeric):
        return True
    years = [d for d in (r.digits for r in digit_runs(tokenize(span))) if len(d) == 4 and d.isdigit()]
    return any(int(y) in BIRTH_YEARS for y in years) and bool(MONTH.search(span) or ORDINAL.search(span))


ORDINAL = re.compile(r"\b\d{1,2}(st|nd|rd|th)\b|\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
                     r"eleventh|twelfth|[a-z]+teenth|twentieth|thirtieth)\b", re.I)


# ---- Presidio's e-mail recognizer, offline ----------------------------------------------------

_TLD = None


def offline_tld_extract():
    """tldextract with its bundled public-suffix snapshot: no download, no cache written.
    (Presidio's EmailRecognizer calls tldextract's default extractor, which fetches the list.)"""
    global _TLD
    if _TLD is None:
        import tldextract

        _TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    return _TLD


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's typed-address recognizer, validating the domain against the bundled suffix list."""

    def __init__(self) -> None:
        super().__init__(name="OfflineEmailRecognizer")

    def validate_result(self, pattern_text: str) -> bool:
        return offline_tld_extract()(pattern_text).fqdn != ""
