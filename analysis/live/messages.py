"""The live boundary: what a connector says about a call, keyed by call and leg.

Plain frozen dataclasses of str/int/bytes, so the same messages can cross a process or machine
boundary (a queue, Ray, a socket) unchanged when analysis workers move off the connector's host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol


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
    metadata: dict = field(default_factory=dict)  # agent_id, customer_id, team, from/to... when known
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
    """Where a connector hands messages. push() never blocks; it returns False for a dropped frame."""

    def start(self, call: CallStarted) -> None: ...

    def push(self, frame: Frame) -> bool: ...

    def end(self, call: CallEnded) -> None: ...
