"""Redaction of numbers as Whisper hears them on an 8 kHz line (issue 15), with the real Presidio +
spaCy pipeline: homophones of digit words inside a run, and the customer's answer to the agent's
question for a card or phone number taken out however Whisper broke it up. Numbers that identify
no one stay, whether or not a number was just asked for."""

from __future__ import annotations

import pytest

from emotivoice.analysis.redaction.spoken import digit_runs, tokenize
from emotivoice.analysis.redaction.stage import Redactor
from emotivoice.config import RedactionConfig
from tests.test_redaction import _no_digits_left, _redacted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactionConfig())


@pytest.mark.parametrize("said, digits", [
    ("I'm free, six, four. I'm double, three, five.", ["364", "335"]),  # "three" heard as "free"
    ("Nero seven five nine", ["0759"]), ("8 Nero. Double 4.", ["8044"]),
    ("six for nine two", ["6492"]), ("It's 07 049 941 double-free fix.", ["0704994133"]),
    ("Double-I-1-2-2-6", ["xx1226"]),  # a repeat of a digit Whisper did not make out
    ("I'm free on Tuesday", []), ("I'm free, six", ["6"]), ("free 6", ["6"]), ("a ticket for two", ["2"]),
    ("I ate at nine", ["9"]),
    ("waiting for twenty minutes", ["20"]), ("I called three times last week.", ["3"]),
])
def test_homophones_are_digits_only_inside_a_run(said, digits):
    assert [r.digits for r in digit_runs(tokenize(said))] == digits


@pytest.mark.parametrize("asked, answer", [
    ("What is the card number?", "My phone number is 3-4-6-6. Nero I'm 8-1-2. I'm Maiming 3-1-2-8."),
    ("What in the car number?", "Sure, it's normal time 1 year old. 7, 1, 9, 1, 2, 8, 2, 9, 6, 9, 1, 9."),
    ("Can I have a contact, Dane?", "It's so M-3-2-9-2-M-0-9-3."),
    ("What's your mobile number?", "My phone number is Nero M and I'm 6 and I'm Nero Nero 4 and I'm 7."),
    ("Could you read me the digits on the card?", "Yeah, four free six, I'm, one one two, Nero, seven."),
])
def test_the_answer_to_an_ask_for_a_number_is_taken_out_however_heard(redactor, asked, answer):
    agent, customer = _redacted(redactor, asked, answer, speakers=("agent", "customer"))
    assert agent.text == asked
    assert "[CREDIT_CARD]" in customer.text or "[PHONE_NUMBER]" in customer.text
    _no_digits_left(customer)


@pytest.mark.parametrize("before, said", [
    ("Lovely, thank you, let me pull that up.", "It cost forty nine ninety nine and I paid twice."),
    ("Perfect, bear with me a second.", "My order reference is seven seven three one two, it arrived broken."),
    ("What's the card number?", "Sorry, my order number is four five seven eight, I don't have the card."),
    ("Is there a phone number we can call you back on?", "I called three times last week."),
    ("What's your mobile number?", "I'm free after two."),
])
def test_numbers_that_identify_no_one_stay_even_after_an_ask(redactor, before, said):
    agent, customer = _redacted(redactor, before, said, speakers=("agent", "customer"))
    assert customer.text == said
