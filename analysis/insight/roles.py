"""Who is the agent: from the leg or channel when known, otherwise from what people say and do.

Agents open the call ("thank you for calling, my name is ..."), offer help and close politely;
customers state a problem about "my account". Speaking first counts a little (the agent usually
answers), talk share barely at all. The result carries a confidence and the cues behind it, and
any assignment can be overridden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emotivoice.analysis.insight.phrases import AGENT_CUES, CUSTOMER_CUES, matches
from emotivoice.analysis.results import CallResult


@dataclass(frozen=True)
class RoleGuess:
    role: str  # agent | customer | unknown
    confidence: float  # 0..1
    source: str  # channel | override | cues
    reason: str = ""


def guess_roles(first_start: dict[str, float], texts: dict[str, str],
                talk_share: dict[str, float]) -> dict[str, RoleGuess]:
    """Roles for diarized speakers: the one with the strongest agent cues is the agent."""
    speakers = list(first_start)
    if not speakers:
        return {}
    if len(speakers) == 1:
        return {speakers[0]: RoleGuess("unknown", 0.0, "cues", "one speaker only")}
    first = min(speakers, key=first_start.__getitem__)
    score, why = {}, {}
    for sp in speakers:
        agent_hits = matches(texts.get(sp, ""), AGENT_CUES)
        customer_hits = matches(texts.get(sp, ""), CUSTOMER_CUES)
        score[sp] = 1.5 * len(agent_hits) - 1.0 * len(customer_hits) + (0.7 if sp == first else 0.0) \
            + 0.3 * (talk_share.get(sp, 0.0) - 0.5)
        why[sp] = ", ".join([*(f'"{h}"' for h in agent_hits + customer_hits),
                             *(["spoke first"] if sp == first else [])])
    ranked = sorted(speakers, key=lambda s: -score[s])
    margin = score[ranked[0]] - score[ranked[1]]
    confidence = round(1 / (1 + math.exp(-2 * margin)), 3)  # 0.5 when nothing tells them apart
    out = {ranked[0]: RoleGuess("agent", confidence, "cues", why[ranked[0]] or "no cues")}
    for sp in ranked[1:]:
        out[sp] = RoleGuess("customer", confidence, "cues", why[sp] or "no cues")
    return out


def assign_roles(result: CallResult, agent: str | None = None) -> None:
    """Set the role of each diarized speaker: `agent` names the agent's label (an override),
    otherwise the cues decide. An unknown label is reported in the warnings and ignored."""
    labels = [s.label for s in result.speakers]
    if agent and agent not in labels:
        result.warnings.append(f"--agent {agent}: no such speaker (have {', '.join(labels) or 'none'}); roles guessed")
        agent = None
    if agent:
        guesses = {label: RoleGuess("agent" if label == agent else "customer", 1.0, "override", "set by the user")
                   for label in labels}
    else:
        mine = {label: [u for u in result.utterances if u.speaker == label] for label in labels}
        guesses = guess_roles({k: v[0].start for k, v in mine.items() if v},
                              {k: " ".join(u.text for u in v) for k, v in mine.items() if v},
                              {s.label: s.metrics.get("talk_share", 0.0) for s in result.speakers})
    for s in result.speakers:
        g = guesses.get(s.label, RoleGuess("unknown", 0.0, "cues", "no speech"))
        s.role, s.role_confidence, s.role_source, s.role_reason = g.role, g.confidence, g.source, g.reason
