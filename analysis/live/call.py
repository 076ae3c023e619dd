"""One live call's state: its legs, its utterances as they are analysed, and its causal insight.

Plain data in, plain data out: the stages (analysis/stages/) and the chain that runs them
(analysis/live/steps.py, or a Ray call actor) change it; nothing here runs a model or a thread,
so a call can be held by another process. Utterances are numbered in the order they finish,
which is the order the insight stage (risk, sarcasm, alerts: analysis/stages/insight.py) sees
them, so live scores equal what the same stage gives a recording played in real time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from emotivoice.analysis.insight.stage import InsightState
from emotivoice.analysis.live.endpoint import Endpointer
from emotivoice.analysis.live.messages import CALL_FIELDS, CallStarted, LegInfo
from emotivoice.analysis.live.recorder import CallRecorder
from emotivoice.analysis.results import CallResult, Speaker, Utterance
from emotivoice.config import Settings

if TYPE_CHECKING:
    from emotivoice.analysis.live.recording import RecordingSummary
    from emotivoice.analysis.redaction.stage import RedactionReport


@dataclass
class LiveUtterance:
    """An utterance moving through the live stages; `utterance` exists once emotions are in."""

    call_id: str
    uid: int
    leg: "LiveLeg"
    start: float
    end: float
    clip: np.ndarray  # 16 kHz float32
    end_wall: float  # when the speaker stopped (arrival of the last speech audio)
    final: bool = True  # False: a rolling update of speech still going on
    utterance: Utterance | None = None
    emotion_at: float | None = None  # wall times: emotions computed, stored...
    emotion_stored_at: float | None = None
    transcript: str = "pending"  # pending | done | shed | off
    # wall times through the transcript stage (the latency breakdown in LiveEngine.latencies):
    # queued for Whisper, taken into a pass, words attached
    transcript_queued_at: float | None = None
    transcript_taken_at: float | None = None
    transcript_at: float | None = None
    transcript_stored_at: float | None = None
    scored: bool = False  # the insight stage has seen it
    scored_at: float | None = None  # wall time the live insight stage scored it
    latency: dict | None = None  # this utterance's entry in LiveEngine.latencies
    intensity: float | None = None  # the head's intensity, when another process (Ray's pool) predicted it


@dataclass
class LiveLeg:
    info: LegInfo
    index: int
    speaker: Speaker
    endpointer: Endpointer
    next_seq: int = 0
    samples: int = 0  # audio received (and gap-filled), at the leg's rate
    interim: LiveUtterance | None = None  # the latest rolling update, shown until the utterance ends


@dataclass
class LiveCall:
    started: CallStarted
    result: CallResult
    legs: dict[str, LiveLeg]
    insight: InsightState
    recorder: CallRecorder | None = None
    utterances: list[LiveUtterance] = field(default_factory=list)
    ended: bool = False
    finalizing: bool = False  # the finaliser owns it now: no more live saves
    ended_at: datetime | None = None
    shed_transcripts: int = 0
    dropped_frames: int = 0
    lost_frames: int = 0  # gaps in frame numbers (inbox drops, or loss upstream), filled with silence
    missing_frames: int = 0  # what the connector reported it never had (CallEnded.missing_frames)
    next_uid: int = 0
    recording: "RecordingSummary | None" = None  # the front's account of it, once complete
    # some frame carried sound (a non-zero sample); until then the call is not stored, and a call
    # that ends without it is dropped (connectors send digital silence for ticks without media)
    has_media: bool = False
    # what live redaction took out so far (its spans cut the kept audio if the final pass cannot)
    redaction: "RedactionReport | None" = None
    rule_memo: dict = field(default_factory=dict)  # analysis/live/rules.py: each utterance judged once

    @property
    def call_id(self) -> str:
        return self.started.call_id

    def new_utterance(self, leg: LiveLeg, start: float, end: float, clip: np.ndarray, end_wall: float,
                      final: bool) -> LiveUtterance:
        if not final:
            return LiveUtterance(self.call_id, -1, leg, start, end, clip, end_wall, final=False)
        item = LiveUtterance(self.call_id, self.next_uid, leg, start, end, clip, end_wall)
        self.next_uid += 1
        self.utterances.append(item)
        return item

    def pending_work(self) -> bool:
        return any(not u.scored for u in self.utterances)

    def snapshot(self) -> CallResult:
        """The call as it stands: finished utterances in order, then any rolling updates."""
        r = self.result
        done = [u.utterance for u in self.utterances if u.utterance is not None]
        interim = [leg.interim.utterance for leg in self.legs.values()
                   if leg.interim is not None and leg.interim.utterance is not None]
        r.utterances = done + interim
        r.duration_s = max((leg.samples / leg.info.sample_rate for leg in self.legs.values()), default=0.0)
        r.alerts = list(self.insight.alerts)
        for speaker in r.speakers:
            speaker.talk_time_s = sum(u.end - u.start for u in done if u.speaker == speaker.label)
        return r

    def metadata(self) -> dict:
        """What is stored with the call and written in its sidecar: the call fields, the source's
        own ids ("external") and custom parameters as data, start and end, dropped frames."""
        meta = started_metadata(self.started)
        if self.ended_at:
            meta["ended_at"] = self.ended_at.astimezone(timezone.utc).replace(tzinfo=None)
        meta["dropped_frames"] = self.dropped_frames
        return meta


def started_metadata(started: CallStarted) -> dict:
    """What a call's start says about it for the store and the sidecar: the call fields, the
    source's own ids ("external") and custom parameters as data, and when it started."""
    meta = {k: v for k, v in started.metadata.items() if k in CALL_FIELDS}
    meta.update({k: started.metadata[k] for k in ("external", "custom") if k in started.metadata})
    meta["started_at"] = started.started_at.astimezone(timezone.utc).replace(tzinfo=None)
    return meta


def speakers_for(legs: tuple[LegInfo, ...]) -> list[Speaker]:
    """A speaker per leg, labelled by role when each role appears once (agent, customer)."""
    roles = [leg.role for leg in legs]
    out = []
    for i, leg in enumerate(legs):
        unique = leg.role in ("agent", "customer") and roles.count(leg.role) == 1
        label = leg.role if unique else f"leg_{leg.leg}"
        out.append(Speaker(label, leg.role if unique else "unknown", i,
                           role_confidence=1.0 if unique else 0.0, role_source="leg" if unique else "unknown",
                           role_reason=f"{leg.role} stream in the call's metadata" if unique else ""))
    return out


def new_call(started: CallStarted, settings: Settings, emotion_name: str, provisional: bool,
             endpointers: bool = True, recorder: CallRecorder | None = None) -> LiveCall:
    """A LiveCall for `started`: a speaker and an endpointer per leg (the final pass's VAD
    settings), the call header, a fresh insight state. Without `endpointers`: the Ray serving
    process's own copy, which only records and finalises."""
    sc, lc = settings.segmentation, settings.live
    speakers = speakers_for(started.legs)
    legs = {info.leg: LiveLeg(info, i, speakers[i], Endpointer(
        info.sample_rate, lc.endpoint_silence_s, sc.min_speech_s, sc.max_utterance_s, lc.rolling_update_s,
        sc.vad_threshold, sc.vad_neg_threshold, sc.vad_window_s, sc.vad_warmup_s, lc.pre_roll_s)
        if endpointers else None) for i, info in enumerate(started.legs)}
    result = CallResult(call_id=started.call_id, source=f"{started.source}:{started.remote}", duration_s=0.0,
                        channels=len(legs), diarization="one leg per speaker (live)", vad="silero (live)",
                        asr_model=f"faster-whisper:{settings.transcription.model}",
                        emotion_model=emotion_name, emotion_provisional=provisional, speakers=speakers)
    return LiveCall(started, result, legs, InsightState(settings.sarcasm, settings.risk), recorder)
