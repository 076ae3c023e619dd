"""What the analysis produces, as messages keyed by call and leg.

Each `Utterance` names its call and leg, so stages can later run on separate workers (Ray or
similar) and meet again in storage. `CallResult.to_json()` is the documented `--json` shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.emotion.tiers import GranularEmotion
from analysis.transcription import Word


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
    emotions: dict[str, float] = field(default_factory=dict)
    granular: list[GranularEmotion] = field(default_factory=list)
    complex: str | None = None

    @property
    def top_emotion(self) -> tuple[str, float]:
        if not self.emotions:
            return "", 0.0
        name = max(self.emotions, key=self.emotions.__getitem__)
        return name, self.emotions[name]

    def to_json(self) -> dict:
        return {
            "speaker": self.speaker, "start": round(self.start, 3), "end": round(self.end, 3),
            "text": self.text,
            "words": [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                      for w in self.words],
            "loudness_dbfs": round(self.loudness_dbfs, 2),
            "emotions": {k: round(v, 4) for k, v in self.emotions.items()},
            "granular": [g.to_dict() for g in self.granular],
            "complex": self.complex,
        }


@dataclass
class Speaker:
    label: str
    role: str  # "agent", "customer" or "unknown"
    leg: int
    talk_time_s: float = 0.0
    metrics: dict = field(default_factory=dict)  # analysis.conversation's per-speaker metrics

    def to_json(self) -> dict:
        return {"label": self.label, "role": self.role, "leg": self.leg,
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

    def to_json(self) -> dict:
        return {
            "call_id": self.call_id, "source": self.source, "duration_s": round(self.duration_s, 3),
            "channels": self.channels, "diarization": self.diarization, "vad": self.vad,
            "models": {"asr": self.asr_model, "emotion": self.emotion_model,
                       "emotion_provisional": self.emotion_provisional},
            "languages": self.languages, "metrics": self.metrics,
            "speakers": [s.to_json() for s in self.speakers],
            "utterances": [u.to_json() for u in self.utterances],
            "warnings": self.warnings,
        }
