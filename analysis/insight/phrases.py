"""Phrase lists that carry meaning in contact-center calls, matched on lower-cased transcripts.

Kept as data in one place so a deployment can read and extend them; matching is by regular
expression on word boundaries, so "cancel" also catches "cancelling" but not "can".
"""

from __future__ import annotations

import re

ESCALATION = (
    r"speak (?:to|with) (?:your|a|the) (?:manager|supervisor)", r"\bmanager\b", r"\bsupervisor\b",
    r"\bcancel\w*", r"\blawyer\w*", r"\battorney\b", r"\bsue\b", r"\bunacceptable\b", r"\bridiculous\b",
    r"\bcomplain\w*", r"\bworst\b", r"\bfed up\b", r"\bsick of\b", r"\bnever again\b", r"\bclose my account\b",
    r"\bthird time\b", r"\bwaste of (?:my )?time\b",
)
CHURN = (r"\bcancel\w*", r"\bswitch\w*", r"\bcompetitor\w*", r"\bclose my account\b", r"\bleav(?:e|ing) you\b",
         r"\bgo(?:ing)? elsewhere\b", r"\bother provider\b")
AGENT_CUES = (r"thank(?:s| you) for calling", r"\bmy name is\b", r"how (?:can|may) i (?:help|assist)",
              r"\bspeaking\b", r"\bis there anything else\b", r"\bhave a (?:great|nice|good) day\b",
              r"\bfor calling\b", r"\bwelcome to\b", r"\bi can help\b")
CUSTOMER_CUES = (r"\bi'?m calling (?:about|because|to)\b", r"\bmy (?:account|bill|order|card)\b",
                 r"\bi (?:want|need) to\b", r"\bi have a problem\b", r"\bi was charged\b")


def matches(text: str, patterns: tuple[str, ...]) -> list[str]:
    """The phrases of `patterns` found in `text`, as they appear there."""
    lowered = text.lower()
    found = []
    for pattern in patterns:
        m = re.search(pattern, lowered)
        if m and m.group(0) not in found:
            found.append(m.group(0))
    return found
