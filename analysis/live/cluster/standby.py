"""Warm call actors waiting for their calls, topped up one at a time and out of the live calls' way.

A new call actor is a new Ray worker process: about 3 CPU seconds of imports and the VAD's model
session, more on a loaded machine. The engine used to start a replacement the moment a call took
a standby, so N calls arriving together started N processes while their first utterances were
being analysed; on 2 cores that starved the emotion pool (4 calls: emotion p95 2.96 to 20 s
across runs, the new processes at 0.65 cores; the same 4 calls with no replacement started, p95
1.47 s; benchmarks/live_ray.py). Now the pool is topped up by one keeper thread, one actor at a
time, and only when the engine has been quiet for `quiet_s` (no call started) or when fewer than
`floor` actors are waiting (a call that finds none waits for a cold process, 3-14 s of its live
analysis, which is worse). Actors of finished calls come back first in line (engine._recycle).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable


class StandbyPool:
    """Call actors ready (or being made) for the next calls. Thread-safe: the sender thread takes,
    the finaliser gives back, the collector takes for replacements, the keeper tops up."""

    def __init__(self, create: Callable[[], object], target: int, floor: int = 1, quiet_s: float = 10.0,
                 ready: Callable[[object], bool] | None = None):
        self._create, self.target, self.floor, self.quiet_s = create, target, min(floor, target), quiet_s
        self._ready = ready or (lambda actor: True)  # whether an actor made by the keeper has started
        self._lock = threading.Lock()
        self._waiting: collections.deque = collections.deque()
        self._making: object | None = None  # the one actor the keeper is making, until it has started
        self._last_call = float("-inf")
        self.made = 0

    def fill(self) -> list:
        """At start: `target` actors at once (the engine waits for them before its first call)."""
        with self._lock:
            while len(self._waiting) < self.target:
                self._waiting.append(self._create())
                self.made += 1
            return list(self._waiting)

    def take(self):
        """The next call's actor: a waiting one, else the one being made, else None (make a cold one)."""
        with self._lock:
            self._last_call = time.monotonic()
            if self._waiting:
                return self._waiting.popleft()
            actor, self._making = self._making, None
            return actor

    def give_back(self, actor, limit: int) -> bool:
        """A finished call's actor, first in line; False when `limit` already wait (kill it)."""
        with self._lock:
            if len(self._waiting) >= limit:
                return False
            self._waiting.appendleft(actor)
            return True

    def tick(self) -> None:
        """The keeper's turn: let the actor being made join when started; maybe start the next."""
        with self._lock:
            if self._making is not None:
                if not self._ready(self._making):
                    return
                self._waiting.append(self._making)
                self._making = None
            short = len(self._waiting) < self.target
            quiet = time.monotonic() - self._last_call >= self.quiet_s
            if short and (quiet or len(self._waiting) < self.floor):
                self._making = self._create()
                self.made += 1

    def drain(self) -> list:
        """Every actor waiting or being made (at stop: the engine kills them)."""
        with self._lock:
            actors = list(self._waiting) + ([self._making] if self._making is not None else [])
            self._waiting.clear()
            self._making = None
            return actors

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def peek(self):
        """The actor the next call will get (tests)."""
        with self._lock:
            return self._waiting[0] if self._waiting else None
