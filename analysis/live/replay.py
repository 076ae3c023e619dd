"""Play recorded legs into a LiveSink as 20 ms frames, paced like a real call.

The engine's own tests and benchmarks use it to drive the live path without a network peer;
the connector tests drive the same path through real SIP and media-fork sockets.
"""

from __future__ import annotations

import time

import numpy as np

from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo, LiveSink

FRAME_S = 0.02


def replay(sink: LiveSink, call_id: str, legs: dict[str, np.ndarray], rate: int = 8000,
           roles: dict[str, str] | None = None, speed: float = 1.0, metadata: dict | None = None) -> int:
    """Send int16 legs (same length or not) as one call; returns frames dropped by the sink.
    speed=1 is real time; 0 sends as fast as the sink takes them."""
    roles = roles or {}
    sink.start(CallStarted(call_id, "replay", tuple(LegInfo(name, roles.get(name), name, rate) for name in legs),
                           "local", dict(metadata or {})))
    step = int(rate * FRAME_S)
    frames = max(-(-len(x) // step) for x in legs.values())
    t0, dropped = time.monotonic(), 0
    for i in range(frames):
        for name, x in legs.items():
            chunk = x[i * step:(i + 1) * step]
            if len(chunk):
                chunk = np.pad(chunk, (0, step - len(chunk))).astype("<i2")
                dropped += not sink.push(Frame(call_id, name, i, chunk.tobytes()))
        if speed > 0:
            delay = t0 + (i + 1) * FRAME_S / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    sink.end(CallEnded(call_id))
    return dropped
