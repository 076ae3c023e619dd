"""The connector side of the Ray engine: the analysis sink behind the recording front.

The listeners feed the recording front (analysis/live/recording.py), which records each frame
and then hands it here (it takes the FrameInbox's place). Each frame is appended to its leg's
buffer, gaps in frame numbers filled with silence by the front's rule (so leg time is the
recording's); every `chunk_s` (200 ms) of a leg becomes one chunk, which a sender thread ships to
the call's actor with its offset. So a 20 ms frame never crosses a process boundary on its own
(an actor call costs about 2 ms here), and a media thread never waits on Ray: push() only
appends to memory. Nothing is shed here: the recording is whole whatever happens to analysis.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame

if TYPE_CHECKING:
    from emotivoice.analysis.live.cluster.engine import ClusterCall, RayEngine

log = logging.getLogger(__name__)



@dataclass
class _Leg:
    rate: int
    next_seq: int = 0
    samples: int = 0  # recorded so far (gaps filled)
    sent: int = 0  # samples handed to the sender
    buf: list[bytes] = field(default_factory=list)
    buffered: int = 0
    arrived: float = 0.0


class RaySink:
    """Implements messages.LiveSink for the Ray engine; push() never blocks and never drops."""

    def __init__(self, engine: RayEngine):
        self.engine = engine
        self.chunk_s = engine.config.chunk_s
        self.max_gap_fill_s = getattr(engine.cfg, "max_gap_fill_s", 5.0)  # the recording front's rule
        self._lock = threading.Lock()
        self._legs: dict[str, dict[str, _Leg]] = {}
        self._calls: dict[str, ClusterCall] = {}
        self._outbox: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self.total_dropped = 0  # the embedded inbox's figure: this sink never drops a frame
        self.counters: collections.Counter[str] = collections.Counter()

    def start_thread(self) -> RaySink:
        self._running = True
        self._thread = threading.Thread(target=self._send, name="ray-sender", daemon=True)
        self._thread.start()
        return self

    def stop_thread(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread:
            self._thread.join(10)

    # ---- LiveSink -------------------------------------------------------------------------------

    def start(self, call: CallStarted) -> None:
        with self._lock:
            if call.call_id in self._calls:
                log.warning("call started twice; ignoring the second start", extra={"call_id": call.call_id})
                return
        cc = self.engine.open_call(call)  # its recording and manifest, before any frame
        with self._lock:
            self._calls[call.call_id] = cc
            self._legs[call.call_id] = {info.leg: _Leg(info.sample_rate) for info in call.legs}
            self._outbox.append(("start", cc))
        self._wake.set()

    def push(self, frame: Frame) -> bool:
        with self._lock:
            cc = self._calls.get(frame.call_id)
            leg = self._legs.get(frame.call_id, {}).get(frame.leg)
            if leg is None or cc.ended:
                self.counters["orphan_frames"] += 1
                return True
            if frame.seq < leg.next_seq:
                self.counters["late_frames"] += 1
                return True
            pcm = frame.pcm[: len(frame.pcm) // 2 * 2]
            gap = frame.seq - leg.next_seq
            if 0 < gap and gap * len(pcm) // 2 <= self.max_gap_fill_s * leg.rate:  # as the recording
                cc.shadow.lost_frames += gap
                pcm = bytes(gap * len(pcm)) + pcm
            leg.next_seq = frame.seq + 1
            if not cc.shadow.has_media and np.frombuffer(pcm, "<i2").any():
                cc.shadow.has_media = True
            leg.samples += len(pcm) // 2
            leg.buf.append(pcm)
            leg.buffered += len(pcm) // 2
            leg.arrived = time.time()
            if leg.buffered >= self.chunk_s * leg.rate:
                self._cut(cc, frame.leg, leg)
        return True

    def end(self, call: CallEnded) -> None:
        with self._lock:
            cc = self._calls.get(call.call_id)
            if cc is None or cc.ended:
                return
            cc.ended = True
            legs = self._legs.pop(call.call_id, {})
            for name, leg in legs.items():
                if leg.buffered:
                    self._cut(cc, name, leg)
            totals = {name: leg.samples for name, leg in legs.items()}
            cc.shadow.missing_frames = sum(call.missing_frames.values())
            self._outbox.append(("end", cc, totals))
            del self._calls[call.call_id]
        self.engine.counters["missing_frames"] += cc.shadow.missing_frames
        self._wake.set()
        log.info("live call ended", extra={"call_id": call.call_id, "reason": call.reason})

    # what the recording front asks of the analysis inbox it stands in front of
    def drops(self, call_id: str) -> dict[str, int]:
        return {}

    def forget(self, call_id: str) -> None:
        pass

    def open_calls(self) -> list[str]:
        with self._lock:
            return list(self._calls)

    def pending(self) -> int:
        return len(self._outbox)

    # ---- chunks to the actors -------------------------------------------------------------------------

    def _cut(self, cc: ClusterCall, name: str, leg: _Leg) -> None:
        """The leg's buffered audio becomes one chunk (called under the lock)."""
        self._outbox.append(("chunk", cc, name, leg.sent, b"".join(leg.buf), leg.arrived, cc.shadow.lost_frames))
        leg.sent += leg.buffered
        leg.buf, leg.buffered = [], 0
        self._wake.set()

    def _send(self) -> None:
        while self._running or self._outbox:
            if not self._outbox:
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            item = self._outbox.popleft()
            try:
                self._ship(item)
            except Exception:  # one call's failure must not stop the others' audio
                log.exception("chunk not sent to its call actor", extra={"call_id": item[1].call_id})

    def _ship(self, item: tuple) -> None:
        kind, cc = item[0], item[1]
        if kind == "start":
            self.engine.spawn(cc)
        elif kind == "chunk":
            _, _, leg, offset, pcm, arrived, lost = item
            cc.actor.feed.remote(cc.call_id, leg, offset, pcm, arrived, lost)
            self.counters["chunks"] += 1
        elif kind == "end":
            with self.engine._lock:  # a replacement actor (engine.replace_actor) is sent the end again
                cc.totals, actor = item[2], cc.actor
            actor.end.remote(cc.call_id, item[2], cc.shadow.missing_frames)
            self.engine.ended(cc)
