"""What the analysis produces, as messages keyed by call and leg.

Each `Utterance` names its call and leg, so stages can later run on separate workers (Ray or
similar) and meet again in storage. `CallResult.to_json()` is the documented `--json` shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emotivoice.analysis.emotion.tiers import GranularEmotion
from emotivoice.analysis.transcription import Word

if TYPE_CHECKING:
    from emotivoice.analysis.insight.prosody import Prosody
    from emotivoice.analysis.insight.risk import Alert, RiskScore
    from emotivoice.analysis.insight.sarcasm import SarcasmCheck
    from emotivoice.analysis.redaction.stage import RedactionReport


@dataclass
class Utterance:
    call_id: str
    leg: int  # channel index for recordings, call leg for live audio
    speaker: str
    start: float
    end: float
    loudness_dbfs: float  # before normalisation: raised voice is a signal
    text: str = ""
    language: str = ""
    words: list[Word] = field(default_factory=list)
    transcript_note: str = ""  # "no words recognised" when speech was found but no words survived
    emotions: dict[str, float] = field(default_factory=dict)
    granular: list[GranularEmotion] = field(default_factory=list)
    complex: str | None = None
    prosody: Prosody | None = None
    prosody_z: dict[str, float] = field(default_factory=dict)  # against this speaker earlier in the call
    sentiment: float = 0.0  # VADER compound of the text
    sarcasm: SarcasmCheck | None = None
    phrases: dict[str, list[str]] = field(default_factory=dict)  # escalation / churn phrases found
    interrupts: bool = False  # started while another speaker was still talking
    risk: RiskScore | None = None  # this speaker's escalation risk after this utterance
    partial: bool = False  # live: still being spoken, stored as a rolling update

    @property
    def top_emotion(self) -> tuple[str, float]:
        if not self.emotions:
            return "", 0.0
        name = max(self.emotions, key=self.emotions.__getitem__)
        return name, self.emotions[name]

    def to_json(self) -> dict:
        return {
            "speaker": self.speaker, "start": round(self.start, 3), "end": round(self.end, 3),
            "text": self.text, "transcript_note": self.transcript_note,
            "words": [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                      for w in self.words],
            "loudness_dbfs": round(self.loudness_dbfs, 2),
            "emotions": {k: round(v, 4) for k, v in self.emotions.items()},
            "granular": [g.to_dict() for g in self.granular],
            "complex": self.complex,
            "sentiment": round(self.sentiment, 3),
            "prosody": self.prosody.as_dict() if self.prosody else None, "prosody_z": self.prosody_z,
            "sarcasm": self.sarcasm.to_json() if self.sarcasm else None,
            "phrases": self.phrases, "interrupts": self.interrupts,
            "risk": self.risk.to_json() if self.risk else None,
        }


@dataclass
class Speaker:
    label: str
    role: str  # "agent", "customer" or "unknown"
    leg: int
    role_confidence: float = 1.0
    role_source: str = "channel"  # channel | override | cues
    role_reason: str = ""
    talk_time_s: float = 0.0
    metrics: dict = field(default_factory=dict)  # analysis.conversation's per-speaker metrics

    def to_json(self) -> dict:
        return {"label": self.label, "role": self.role, "leg": self.leg,
                "role_confidence": round(self.role_confidence, 3), "role_source": self.role_source,
                "role_reason": self.role_reason,
                "talk_time_s": round(self.talk_time_s, 2), "metrics": self.metrics}


@dataclass
class CallResult:
    call_id: str
    source: str
    duration_s: float
    channels: int
    diarization: str  # how speakers were separated, said plainly
    asr_model: str
    emotion_model: str
    emotion_provisional: bool
    speakers: list[Speaker] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    languages: dict[str, str] = field(default_factory=dict)  # speaker -> detected language
    vad: str = ""
    metrics: dict = field(default_factory=dict)  # call-level conversation metrics
    warnings: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    # what the redaction stage took out (spans to cut from the audio); its summary is metrics["redaction"]
    redaction: RedactionReport | None = field(default=None, repr=False, compare=False)
    # conversation analytics (analysis.insight.analytics), computed once the call is scored
    quarters: list[dict] = field(default_factory=list)  # per speaker and quarter of the call
    customer_start_vs_end: dict | None = None  # the customer's first quarter with speech against the last
    summary: dict | None = None  # post-call summary: reason, key moments, commitments, ending (insight.summary)
    categories: list[dict] = field(default_factory=list)  # rule matches with evidence (insight.rules)
    # the deployment's emotion correction the call was scored under (analysis/emotion/recalibration.py)
    calibration: dict | None = None
    scorecard: dict | None = None  # QA scorecard: answers and score (insight.scorecard)

    def to_json(self) -> dict:
        return {
            "call_id": self.call_id, "source": self.source, "duration_s": round(self.duration_s, 3),
            "channels": self.channels, "diarization": self.diarization, "vad": self.vad,
            "models": {"asr": self.asr_model, "emotion": self.emotion_model,
                       "emotion_provisional": self.emotion_provisional},
            "languages": self.languages, "metrics": self.metrics,
            "speakers": [s.to_json() for s in self.speakers],
            "utterances": [u.to_json() for u in self.utterances],
            "alerts": [a.to_json() for a in self.alerts],
            "quarters": self.quarters, "customer_start_vs_end": self.customer_start_vs_end,
            "summary": self.summary, "categories": self.categories, "calibration": self.calibration,
            "scorecard": self.scorecard,
            "warnings": self.warnings,
            "redaction": self.metrics.get("redaction"),  # the policy the call was analysed under, counts
        }
