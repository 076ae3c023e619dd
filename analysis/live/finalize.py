"""A live call's end: keep its audio, let the full batch pass supersede the live results.

The batch pass runs outside the engine (`Finalizer`, given by the process that wires things up:
`emotivoice serve` runs `emotivoice analyze` niced in a child process), so a slow or failing
pass never holds up live calls. If it fails, or is off, the live results are stored as final.

A call that ended without any audio (no frame carried a sound: the caller hung up at once, a
SIP peer never sent RTP, a media fork opened and closed) is not a call anyone can review: it is
not stored, its recording is discarded and it gets no batch pass; the engine logs and counts it
("calls_without_media"). One whose frames the engine itself dropped (its inbox was full) is
stored as before, with the drops in its warnings: the source did send something. The kept
audio is handed on only after checking it lies inside the audio dir. The recording itself is
made by the recording front (analysis/live/recording.py), which ends the call for the engine
only once it is complete on disk, so the batch pass always gets the whole call.

Storing is one attempt at a time (`store_final`): any exception from the store is a fault noted
in the engine's StoreHealth, and the engine's finaliser (analysis/live/writer.py) tries again
later, for as long as it takes, so a full disk delays a call's final save but never loses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from emotivoice.analysis.live.call import LiveCall
from emotivoice.analysis.live.storehealth import StoreHealth
from emotivoice.analysis.redaction.audio import redact_wav
from emotivoice.analysis.sink import to_record
from emotivoice.config import LiveConfig, RedactionConfig
from emotivoice.storage.db import CallRecord
from emotivoice.storage.files import UnsafePath, inside
from emotivoice.storage.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinishedCall:
    """What the final batch pass needs: the kept audio and who is on which channel."""

    call_id: str
    audio: Path
    channels: tuple[str, ...]  # role per channel, e.g. ("agent", "customer"); one entry: mono, diarize


Finalizer = Callable[[FinishedCall], None]  # runs the batch pass and stores its result; raises on failure


def roles_to_channels(roles: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Roles of the kept WAV's channels for the batch pass, from the legs' speaker roles in order:
    agent/customer when the legs say so."""
    roles = tuple(roles)
    if sorted(roles) == ["agent", "customer"]:
        return roles
    return ("agent", "customer") if len(roles) == 2 else ("mono",)


def channel_roles(call: LiveCall) -> tuple[str, ...]:
    return roles_to_channels([leg.speaker.role for leg in call.legs.values()])


def sidecar_metadata(call: LiveCall) -> dict:
    """What the kept WAV's sidecar says about the call (and so what the batch pass stores)."""
    return {**call.metadata(), "mode": "live"}


def kept_audio(call: LiveCall, cfg: LiveConfig) -> Path | None:
    """The call's finished WAV, or None when it was not kept or does not lie inside the audio dir."""
    if call.recorder is None:
        return None
    audio = call.recorder.finish(sidecar_metadata(call))
    if audio is None:
        return None
    try:
        return inside(cfg.audio_dir, audio)
    except UnsafePath:
        log.error("call audio outside the audio dir ignored", extra={"call_id": call.call_id})
        return None


def begin_final(call: LiveCall, cfg: LiveConfig) -> tuple[bool, Path | None]:
    """At hang-up, once: (whether the call is to be stored, its kept WAV). A call without any
    audio is not stored and its recording is discarded."""
    if not call.has_media and not call.dropped_frames:  # dropped by us: it may have had sound, so say so
        if call.recorder:
            call.recorder.discard()
        log.warning("live call ended without any audio; not stored",
                    extra={"call_id": call.call_id, "source": call.started.source,
                           "remote": call.started.remote, "external": call.started.metadata.get("external")})
        return False, None
    return True, kept_audio(call, cfg)


def store_final(call: LiveCall, audio: Path | None, store: Store, cfg: LiveConfig, finalizer: Finalizer | None,
                health: StoreHealth, redaction: RedactionConfig | None = None) -> bool:
    """One attempt to store the finished call for good; False when the store refused it (the fault
    is noted in `health`; the caller tries again later, and nothing of the call is lost meanwhile).

    The batch pass redacts the kept WAV as it analyses it (analysis/redaction/keep.py); without
    it (off, or failed) the spans live redaction found are cut from it here, under `redaction`.

    With the batch pass on and the store faulted, the live results are first saved (still
    'live') as a probe: the pass runs only once the store takes writes again."""
    final_pass = cfg.finalize == "batch" and audio is not None and finalizer is not None
    if final_pass and health.faulted and not _save(store, _record(call, audio, [], "live"), health):
        return False
    warnings = []
    if final_pass:
        try:
            t0, began = time.perf_counter(), time.monotonic()
            finalizer(FinishedCall(call.call_id, audio, channel_roles(call)))
            log.info("live call finalised by the batch pass",
                     extra={"call_id": call.call_id, "seconds": round(time.perf_counter() - t0, 1)})
            health.ok(began)  # it stored its result through the same store
        except Exception as exc:
            final_pass = False
            warnings.append(f"final batch pass failed: {str(exc).splitlines()[0] if str(exc) else exc}")
            log.error("final batch pass failed; keeping the live results",
                      extra={"call_id": call.call_id, "error": str(exc)})
    if not final_pass and audio and cfg.keep_audio and redaction is not None and redaction.audio:
        warnings += redact_with_live_spans(call, audio, redaction)
    if not final_pass and not _save(store, _record(call, audio, warnings, "complete"), health):
        return False
    if audio and not cfg.keep_audio:
        audio.unlink(missing_ok=True)
        audio.with_suffix(".json").unlink(missing_ok=True)
    return True


def redact_with_live_spans(call: LiveCall, audio: Path, redaction: RedactionConfig) -> list[str]:
    """Cut what live redaction took out of the transcripts from the kept WAV (no final pass ran);
    the warnings to store with the call. A recording that cannot be redacted is deleted rather
    than kept unredacted."""
    report = call.redaction
    summary = call.result.metrics.setdefault("redaction", {})
    if report is None:  # live redaction off: nothing says where the personal data is
        summary["audio"] = "not redacted"
        return ["recording kept without audio redaction (live redaction off and no final batch pass)"]
    try:
        cut = redact_wav(audio, report.spans, fill=redaction.audio_fill, all_channels=redaction.audio_all_channels)
    except (OSError, ValueError) as exc:
        log.error("kept audio could not be redacted; deleted", extra={"call_id": call.call_id, "error": str(exc)})
        audio.unlink(missing_ok=True)
        summary["audio"] = "deleted"
        return [f"recording deleted: it could not be redacted ({exc})"]
    summary["audio"], summary["audio_cut_s"] = redaction.audio_fill, round(cut, 3)
    if call.shed_transcripts:
        return [f"recording redacted from live transcripts only: {call.shed_transcripts} utterance(s) "
                "without a transcript were not checked for personal data"]
    return []


def _record(call: LiveCall, audio: Path | None, warnings: list[str], status: str) -> CallRecord:
    result = call.snapshot()  # the call's own result: a copy carries this attempt's warnings
    result = replace(result, source=str(audio) if audio else result.source, warnings=[*result.warnings, *warnings])
    return to_record(result, mode="live", metadata=call.metadata(), status=status)


def _save(store: Store, record: CallRecord, health: StoreHealth) -> bool:
    """Any exception out of the store is a fault to report and retry, whatever its class."""
    began = time.monotonic()
    try:
        store.save_call(record)
    except Exception as exc:
        health.failed("final save", exc, record.call["call_id"], began)
        return False
    health.ok(began)
    return True
