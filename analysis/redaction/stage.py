"""The redaction stage: personal data out of utterances' text and words, and the time spans to cut.

Each utterance is analysed together with the one before it (the agent's "what's the card number?"
says what the customer's digits are), joined by a space when the same speaker goes on within
`JOIN_GAP_S` (a card read in two breaths is one number) and by a line break otherwise. An entity
that straddles two utterances is taken out of both.

Text is redacted per entity ("my card is [CREDIT_CARD]."); every word that is part of an entity is
replaced by the same placeholder and keeps its start, end and probability, so the speaking rate,
the timeline and the audio cuts still line up. The report gives the time spans to cut from the
audio (each redacted word, widened by `audio_margin_s`), counts per entity type, and the policy
(name and a digest of its settings) that the call records.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from emotivoice.analysis.redaction import engine
from emotivoice.analysis.redaction.recognizers import VALUE
from emotivoice.analysis.redaction.spoken import digit_runs, tokenize
from emotivoice.config import RedactionConfig

if TYPE_CHECKING:
    from emotivoice.analysis.results import CallResult, Utterance
    from emotivoice.config import Settings

CONTEXT_GAP_S = 10.0  # an utterance further than this after the previous one is analysed on its own
JOIN_GAP_S = 1.5  # the same speaker going on within this is one breath: digits may run across
DIGIT_ENTITIES = frozenset({"CREDIT_CARD", "CARD_SECURITY_CODE", "PHONE_NUMBER", "BANK_ACCOUNT", "US_BANK_NUMBER",
                            "US_SSN", "US_ITIN", "UK_NHS", "ABA_ROUTING_NUMBER"})
STYLES = ("label", "hash")


@dataclass(frozen=True)
class Entity:
    """One entity found in an utterance's text (character offsets in that text)."""

    entity_type: str
    start: int
    end: int
    score: float
    value: str  # normalised, for the stable hash


@dataclass(frozen=True)
class RedactedSpan:
    """Audio to cut: a redacted word's time (seconds from the start of the call) with the margin."""

    leg: int
    start: float
    end: float
    entity: str

    def to_json(self) -> dict:
        return {"leg": self.leg, "start": round(self.start, 3), "end": round(self.end, 3), "entity": self.entity}


@dataclass
class RedactionReport:
    policy: dict[str, str]
    counts: Counter = field(default_factory=Counter)  # entities per type
    spans: list[RedactedSpan] = field(default_factory=list)
    changed: list[Utterance] = field(default_factory=list)  # utterances whose text or words changed

    def summary(self) -> dict:
        """What the call records: the policy and how much of what was taken out (never a value)."""
        return {"policy": self.policy, "entities": dict(sorted(self.counts.items())),
                "redacted_utterances": len(self.changed),
                "redacted_audio_s": round(sum(s.end - s.start for s in merge_spans(self.spans)), 3)}

    def to_json(self) -> dict:
        return {**self.summary(), "spans": [s.to_json() for s in merge_spans(self.spans)]}


def merge_spans(spans: Iterable[RedactedSpan]) -> list[RedactedSpan]:
    """Overlapping or touching spans of one leg as one (the first entity's name kept)."""
    out: list[RedactedSpan] = []
    for s in sorted(spans, key=lambda s: (s.leg, s.start)):
        if out and out[-1].leg == s.leg and s.start <= out[-1].end:
            out[-1] = replace(out[-1], end=max(out[-1].end, s.end))
        else:
            out.append(s)
    return out


def policy_of(cfg: RedactionConfig) -> dict[str, str]:
    """The policy's name and a digest of everything that decides what is taken out, so a call
    analysed under other settings (or other recognizers) says so."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "hash_key_file"}
    doc = json.dumps({"settings": settings, "recognizers": engine.RECOGNIZERS_VERSION, "spacy": engine.SPACY_MODEL},
                     sort_keys=True)
    return {"name": cfg.policy_name, "version": hashlib.sha256(doc.encode()).hexdigest()[:12]}


def load_hash_key(path: Path) -> bytes:
    """The HMAC key for stable hashes: read, or made once (32 random bytes, 0600). Made by a hard
    link from a finished temp file, so two processes starting together agree on one key."""
    from emotivoice.storage.files import write_private

    path = Path(path)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        write_private(tmp, secrets.token_bytes(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"redaction hash key {path} is shorter than 16 bytes")
    return key


def normalised(entity_type: str, text: str) -> str:
    """What a typed entity hashes as: digits for numbers (so "4111 1111 ..." and "four one one one
    ..." agree), lower-case words otherwise."""
    if entity_type in DIGIT_ENTITIES:
        digits = "".join(r.digits for r in digit_runs(tokenize(text)))
        if digits:
            return digits
    if entity_type == "EMAIL_ADDRESS":
        return "".join(text.lower().split())
    return " ".join("".join(ch for ch in w if ch.isalnum()) for w in text.lower().split()).strip()


class Redactor:
    """Redacts utterances under one policy. Build it once: the spaCy pipeline loads on first use."""

    def __init__(self, cfg: RedactionConfig, key: bytes | None = None):
        if cfg.replacement not in STYLES:
            raise ValueError(f"redaction.replacement must be one of {STYLES}, not {cfg.replacement!r}")
        if cfg.replacement == "hash" and not key:
            raise ValueError("hash replacement needs a key (Redactor.from_settings reads or makes it)")
        self.cfg = cfg
        self.key = key
        self.entities = [e.strip() for e in cfg.entities.split(",") if e.strip()]
        self.policy = policy_of(cfg)

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        cfg = settings.redaction
        key = None
        if cfg.replacement == "hash":
            key = load_hash_key(Path(cfg.hash_key_file).expanduser() if cfg.hash_key_file
                                else settings.data_dir / "redaction.key")
        return cls(cfg, key)

    # ---- finding ------------------------------------------------------------------------------

    def find(self, text: str, prompt: str = "", joined: bool = False) -> tuple[list[Entity], list[Entity]]:
        """Entities in `text`, analysed after `prompt` (the previous utterance); also those that
        reach back into the prompt (only when `joined`: the same speaker going on)."""
        if not text.strip() or not self.entities:
            return [], []
        sep = " " if joined else "\n"
        window = f"{prompt}{sep}{text}" if prompt else text
        offset = len(prompt) + 1 if prompt else 0
        mine, theirs = [], []
        for r in engine.analyze(window, self.entities, self.cfg.min_score):
            if r.end <= offset:
                continue  # the prompt's own entities: found when the prompt itself was redacted
            meta = r.recognition_metadata or {}
            value = meta.get(VALUE) or normalised(r.entity_type, window[r.start:r.end])
            mine.append(Entity(r.entity_type, max(r.start, offset) - offset, r.end - offset, r.score, value))
            if r.start < offset - 1 and joined:
                theirs.append(Entity(r.entity_type, r.start, offset - 1, r.score, value))
        return _resolve(mine), _resolve(theirs)

    def placeholder(self, entity: Entity) -> str:
        if self.cfg.replacement == "hash":
            digest = hmac.new(self.key, f"{entity.entity_type}:{entity.value}".encode(), hashlib.sha256).hexdigest()
            return f"[{entity.entity_type}:{digest[:8]}]"
        return f"[{entity.entity_type}]"

    # ---- applying -----------------------------------------------------------------------------

    def redact_utterances(self, utterances: list[Utterance], context: Iterable[Utterance] = ()) -> RedactionReport:
        """Redact `utterances` (in place) in time order; `context` are earlier utterances of the
        same call, already redacted (live: the call so far), used as prompts and themselves
        redacted further where an entity runs into them (they are then in `report.changed`)."""
        report = RedactionReport(self.policy)
        if not self.cfg.transcripts:
            return report
        todo = {id(u) for u in utterances}
        seq = sorted([*context, *utterances], key=lambda u: (u.start, u.leg))
        sources = {id(u): _source(u) for u in seq}  # analysed as transcribed, before any redaction
        found: dict[int, list[Entity]] = {}
        for i, u in enumerate(seq):
            if id(u) not in todo:
                continue
            prev = seq[i - 1] if i and u.start - seq[i - 1].end <= CONTEXT_GAP_S else None
            joined = prev is not None and prev.speaker == u.speaker and u.start - prev.end <= JOIN_GAP_S
            mine, theirs = self.find(sources[id(u)], sources[id(prev)] if prev else "", joined)
            found.setdefault(id(u), []).extend(mine)
            if theirs:
                found.setdefault(id(prev), []).extend(theirs)
        for u in seq:
            entities = _resolve(found.get(id(u), []))
            if entities:
                self._apply(u, sources[id(u)], entities, report)
        return report

    def redact_call(self, result: CallResult) -> RedactionReport:
        """Redact every utterance of a finished call and record the policy on it
        (`result.metrics["redaction"]`: policy, counts per entity, redacted seconds; the report,
        with the audio spans to cut, as `result.redaction`). Phrases the insight stage quoted from
        the words as said are kept only where the redacted text still says them."""
        report = self.redact_utterances(result.utterances)
        for u in report.changed:
            lowered = u.text.lower()
            u.phrases = {kind: [p for p in found if p in lowered] for kind, found in u.phrases.items()}
        result.metrics["redaction"] = report.summary()
        result.redaction = report
        return report

    def _apply(self, u: Utterance, source: str, entities: list[Entity], report: RedactionReport) -> None:
        margin = self.cfg.audio_margin_s
        report.counts.update(e.entity_type for e in entities)
        if u.words:
            first, last = u.words[0].start, u.words[-1].end
            new_words, spans = _redact_words(u.words, entities, self.placeholder)
            u.words = new_words
            # an entity at an edge of the utterance is cut to that edge: Whisper times the last word
            # of an utterance worst (a read-out card's last group was timed to end before its audio did)
            spans = [(min(a, u.start) if a <= first else a, max(b, u.end) if b >= last else b, e)
                     for a, b, e in spans]
            report.spans += [RedactedSpan(u.leg, max(0.0, a - margin), b + margin, e) for a, b, e in spans]
            redacted = _redact_text(source, entities, self.placeholder).strip()
            u.text = redacted if source.strip() == u.text.strip() else self._redact_text_alone(u.text)
        else:
            u.text = _redact_text(source, entities, self.placeholder).strip()
            # no word times: the whole utterance is cut
            report.spans.append(RedactedSpan(u.leg, max(0.0, u.start - margin), u.end + margin,
                                             entities[0].entity_type))
        report.changed.append(u)

    def _redact_text_alone(self, text: str) -> str:
        entities, _ = self.find(text)
        return _redact_text(text, entities, self.placeholder).strip()


def _source(u: Utterance) -> str:
    """What the utterance's text was made of: its words joined as Whisper wrote them."""
    return "".join(w.word for w in u.words) if u.words else u.text


def _resolve(entities: list[Entity]) -> list[Entity]:
    """Overlapping entities as one span, named by the most confident of them."""
    out: list[Entity] = []
    for e in sorted(entities, key=lambda e: (e.start, -e.end)):
        if out and e.start < out[-1].end:
            top = out[-1] if out[-1].score >= e.score else e
            out[-1] = Entity(top.entity_type, out[-1].start, max(out[-1].end, e.end), max(out[-1].score, e.score),
                             top.value)
        else:
            out.append(e)
    return out


def _redact_text(text: str, entities: list[Entity], placeholder) -> str:
    for e in sorted(entities, key=lambda e: e.start, reverse=True):
        text = text[:e.start] + placeholder(e) + text[e.end:]
    return text


def _redact_words(words: list, entities: list[Entity], placeholder) -> tuple[list, list[tuple[float, float, str]]]:
    """Each word that overlaps an entity becomes the entity's placeholder (with the characters
    of the word outside the entity, such as its leading space and a trailing comma), keeping
    its times; returns the words and the (start, end, entity) times cut."""
    out, spans, pos = [], [], 0
    for w in words:
        a, b = pos, pos + len(w.word)
        pos = b
        hit = next((e for e in entities if e.start < b and e.end > a and w.word[max(0, e.start - a):e.end - a].strip()),
                   None)
        if hit is None:
            out.append(w)
            continue
        lead = w.word[:len(w.word) - len(w.word.lstrip())]
        before = w.word[:hit.start - a] if hit.start > a else lead
        after = w.word[max(0, hit.end - a):] if hit.end < b else ""
        out.append(replace(w, word=before + placeholder(hit) + after))
        spans.append((w.start, w.end, hit.entity_type))
    return out, spans


def redact_call(result: CallResult, settings: Settings, redactor: Redactor | None = None) -> RedactionReport:
    """The stage as the batch pipeline calls it: redact `result` under `settings.redaction`."""
    return (redactor or Redactor.from_settings(settings)).redact_call(result)
