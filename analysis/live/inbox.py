"""The bounded queue between the recording front and the analysis workers.

Every frame reaches it only after the recording front (analysis/live/recording.py) has taken
it into the call's recording, so what it drops is shed from live analysis only. A media thread
must never wait on analysis: when the queue is full the frame is dropped and counted per call
and leg, and the count is reported with the call (never silently lost). Call
start and end messages are never dropped: they are small and rare, and losing one would leave
a call open forever.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading

from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, Message

log = logging.getLogger(__name__)


class FrameInbox:
    """Implements messages.LiveSink; get() hands messages to the consumer in arrival order."""

    def __init__(self, max_frames: int = 3000):
        self.max_frames = max_frames  # 3000 x 20 ms = 60 s of one leg, or 2 s of 30 calls' legs
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._frames = 0
        self._lock = threading.Lock()
        self.dropped: collections.Counter[tuple[str, str]] = collections.Counter()  # open calls, per leg
        self.total_dropped = 0  # since start, finished calls included

    def start(self, call: CallStarted) -> None:
        self._queue.put(call)

    def end(self, call: CallEnded) -> None:
        self._queue.put(call)

    def push(self, frame: Frame) -> bool:
        key = (frame.call_id, frame.leg)
        with self._lock:
            if self._frames >= self.max_frames:
                self.dropped[key] += 1
                self.total_dropped += 1
                if self.dropped[key] in (1, 50, 500) or self.dropped[key] % 5000 == 0:
                    log.warning("live inbox full, dropping frames",
                                extra={"call_id": frame.call_id, "leg": frame.leg, "dropped": self.dropped[key]})
                return False
            self._frames += 1
        self._queue.put(frame)
        return True

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after timeout seconds with nothing to hand."""
        try:
            msg = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(msg, Frame):
            with self._lock:
                self._frames -= 1
        return msg

    def pending(self) -> int:
        """Messages not yet taken (approximate while producers run)."""
        return self._queue.qsize()

    def drops(self, call_id: str) -> dict[str, int]:
        """Frames dropped for this call, per leg (legs with none are left out)."""
        with self._lock:
            return {leg: n for (cid, leg), n in self.dropped.items() if cid == call_id}

    def forget(self, call_id: str) -> None:
        with self._lock:
            for key in [k for k in self.dropped if k[0] == call_id]:
                del self.dropped[key]
