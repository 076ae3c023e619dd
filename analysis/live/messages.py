"""The live boundary: what a connector says about a call, keyed by call and leg.

Plain frozen dataclasses of str/int/bytes, so the same messages can cross a process or machine
boundary (a queue, Ray, a socket) unchanged when analysis workers move off the connector's host.

A call's id is always one the connector made (storage.files.new_call_id): it names the call's
recording. Whatever the source calls the call (a SIP Call-ID, a Twilio callSid or streamSid, an
AudioHook conversation id, an AudioSocket UUID, a custom parameter) is data, kept in
CallStarted.metadata through `call_metadata`: bounded strings, under "external" (the source's
ids) and "custom" (parameters we do not know), never a file name or a column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

CALL_FIELDS = ("agent_id", "customer_id", "team")  # the metadata the store and the reports use
MAX_TEXT = 256  # characters kept of any value from the wire
MAX_KEY = 64  # characters kept of a custom parameter's name
MAX_CUSTOM = 16  # custom parameters kept per call


@dataclass(frozen=True)
class LegInfo:
    """One stream of a call: one participant's audio."""

    leg: str  # stable within the call: "agent", "customer", a SIPREC stream label, "inbound"...
    role: str | None = None  # "agent" | "customer" | None when the source does not say
    name: str | None = None  # participant name or address from the source's metadata
    sample_rate: int = 8000  # of the Frame.pcm this leg will carry


@dataclass(frozen=True)
class CallStarted:
    call_id: str
    source: str  # "siprec" | "sip" | "audiosocket" | "twilio" | "audiohook"
    legs: tuple[LegInfo, ...]
    remote: str = ""  # peer address, for the log
    # agent_id, customer_id, team when known; "external" and "custom" sub-dicts (see call_metadata)
    metadata: dict = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True)
class Frame:
    """A short piece of one leg's audio, normally 20 ms."""

    call_id: str
    leg: str
    seq: int  # per leg, from 0; a gap means frames were lost before they reached us
    pcm: bytes  # signed 16-bit little-endian mono at the leg's sample_rate


@dataclass(frozen=True)
class CallEnded:
    call_id: str
    reason: str = "hangup"
    # per leg: 20 ms frames the source did not deliver in real time (network loss, jitter, or a
    # connector falling behind), sent as silence or not at all; reported with the call
    missing_frames: dict[str, int] = field(default_factory=dict)


Message = CallStarted | Frame | CallEnded


class LiveSink(Protocol):
    """Where a connector hands messages. push() never blocks; it returns False for a dropped frame.

    The engine's sink (analysis/live/recording.py) records every frame before analysis sees it
    and also answers `admit(source)`: a connector asks it (through `refusal`) before it takes a
    new call, and refuses the call the way its protocol allows when it says why not."""

    def start(self, call: CallStarted) -> None: ...

    def push(self, frame: Frame) -> bool: ...

    def end(self, call: CallEnded) -> None: ...


def refusal(sink: LiveSink, source: str) -> str | None:
    """Why `sink` will not take a new call from `source` now (its recording cannot keep up), or
    None. A sink without admission control (a plain inbox, a test's collector) takes every call."""
    admit = getattr(sink, "admit", None)
    return admit(source) if callable(admit) else None


def wire_text(value: object, limit: int = MAX_TEXT) -> str | None:
    """A string from the wire, printable and cut to `limit` characters; None for anything else."""
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value[: limit * 2] if c.isprintable())[:limit]
    return text or None


def call_metadata(fields: dict, external: dict, custom: dict | None = None) -> dict:
    """CallStarted.metadata from what a source sent: the known call fields (agent_id, customer_id,
    team) when they are strings; the source's own ids under "external"; other parameters, at most
    MAX_CUSTOM, under "custom" (their names are data too). Everything else is dropped."""
    meta: dict = {k: text for k in CALL_FIELDS if (text := wire_text(fields.get(k))) is not None}
    ids = {str(k): text for k, v in external.items() if (text := wire_text(v)) is not None}
    if ids:
        meta["external"] = ids
    extra = {}
    for key, value in (custom or {}).items():
        name, text = wire_text(key, MAX_KEY), wire_text(value)
        if name is None or text is None or name in CALL_FIELDS:
            continue
        if len(extra) >= MAX_CUSTOM:
            break
        extra[name] = text
    if extra:
        meta["custom"] = extra
    return meta
