"""Whether the store is taking the live engine's writes, as its two storing threads see it.

A store fault (a full disk, a read-only file, the store service gone, an exception of any class
out of DuckDB) is noted here by whichever thread met it; the engine's stats() (and so the load
line `serve` logs every minute) then carry `store_fault`: what failed, since when and how many
attempts, until a write succeeds again. Retries back off from RETRY_FIRST_S, doubling, up to
RETRY_MAX_S, so a store that is down costs a few attempts a minute and one that comes back is
used within RETRY_MAX_S; any success (live or final save) resumes every waiting write at once.

Outcomes count in the order their attempts began, not the order they are reported: the writer and
the finaliser store concurrently, and a live save that failed before a final save went through
could otherwise be noted after it, leaving a healthy store reported faulted until the next call
wrote (CI met that once: the last injected fault, then the final save, noted the other way round).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from emotivoice.storage.db import first_line

log = logging.getLogger("emotivoice.analysis.live.engine")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
LOG_EVERY_S = 60.0  # while a fault lasts, one error line per this many seconds (and the first few)


class StoreHealth:
    """The fault (if any) and the next time a write should be tried; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fault: str | None = None  # "<what>: <ErrorClass>: <first line>"
        self.since: datetime | None = None
        self.failures = 0  # attempts failed in the current fault
        self.faults = 0  # faults since start (each ended by a successful write)
        self.recovered_at = 0.0  # monotonic time of the last recovery
        self._next_at = 0.0
        self._logged_at = 0.0
        self._ok_began = 0.0  # monotonic start of the newest attempt that succeeded
        self._fault_began = 0.0  # ... and of the newest that failed in the current fault

    @property
    def faulted(self) -> bool:
        return self.fault is not None

    def failed(self, what: str, exc: BaseException, call_id: str = "", began: float | None = None) -> float:
        """Note a failed write begun at `began` (time.monotonic(); now if None); returns how long to
        wait before trying again. A failure older than a write that has since gone through is stale:
        the store took that later write, so no fault is raised (the caller still retries its data)."""
        now = time.monotonic()
        began = now if began is None else began
        text = f"{what}: {type(exc).__name__}: {first_line(exc)}"
        with self._lock:
            if began < self._ok_began:
                log.info("store write failed before a later one went through; not a fault", extra={
                    "call_id": call_id, "error": text})
                return self.wait_s()
            self._fault_began = max(self._fault_began, began)
            if self.fault is None:
                self.since = datetime.now(timezone.utc)
                self.faults += 1
            self.fault = text
            self.failures += 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(self.failures - 1, 10))
            self._next_at = now + delay
            loud = self.failures <= 3 or now - self._logged_at >= LOG_EVERY_S
            if loud:
                self._logged_at = now
            failures, since = self.failures, self.since
        if loud:
            log.error("store fault: live results kept in memory and retried", extra={
                "call_id": call_id, "error": text, "failures": failures, "since": since.isoformat(),
                "retry_in_s": delay})
        return delay

    def ok(self, began: float | None = None) -> None:
        """A write begun at `began` (time.monotonic(); now if None) went through: the fault (if any)
        is over, unless a write begun after this one has failed since."""
        began = time.monotonic() if began is None else began
        with self._lock:
            self._ok_began = max(self._ok_began, began)
            if self.fault is None or began < self._fault_began:
                return
            fault, failures, since = self.fault, self.failures, self.since
            self.fault, self.since, self.failures, self._next_at = None, None, 0, 0.0
            self.recovered_at = time.monotonic()
        log.warning("store fault over: storing resumed", extra={
            "error": fault, "failures": failures, "since": since.isoformat(),
            "lasted_s": round((datetime.now(timezone.utc) - since).total_seconds(), 1)})

    def wait_s(self) -> float:
        """Seconds until the next write should be tried (0: now)."""
        return max(0.0, self._next_at - time.monotonic())

    def report(self) -> dict:
        """For stats(): the fault as one line, or nothing when the store is healthy."""
        with self._lock:
            if self.fault is None:
                return {"store_faults": self.faults} if self.faults else {}
            return {"store_fault": f"{self.fault} (since {self.since:%Y-%m-%dT%H:%M:%SZ}, "
                                   f"{self.failures} failed attempts)", "store_faults": self.faults}
