"""Sign-in throttling: exponential back-off per user name and per client address.

Every attempt is counted as a failure the moment it is admitted and forgiven only when the
password turns out right, so parallel guesses cannot slip in between a check and its result.
After `free_failures` failures on a key, that key waits `backoff_s`, doubling with every further
failure up to `backoff_max_s`; while it waits, no password is even checked (the right one is
refused too, and the answer says when to try again). A key that stays quiet for `backoff_max_s`
after its wait is forgotten. Unknown user names are throttled exactly like known ones, so the
lockout does not tell which names exist.

One throttle is shared by every Streamlit session of the server process (module state behind a
lock): a reload, a new tab or a second browser does not start a fresh count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Key = tuple[str, str]  # ("user", name) or ("client", address)
MAX_KEYS = 10_000  # bound on remembered keys; a flood of made-up names evicts the stalest first


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0  # when the last failure was counted
    blocked_until: float = 0.0
    before: tuple[float, float] = (0.0, 0.0)  # (last, blocked_until) before the latest attempt, to forgive it


class LoginThrottle:
    """Back-off state for sign-in keys; thread-safe, with an injectable clock for tests."""

    def __init__(self, free_failures: int, backoff_s: float, backoff_max_s: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.free_failures = max(free_failures, 0)
        self.backoff_s = backoff_s
        self.backoff_max_s = max(backoff_max_s, backoff_s)
        self.clock = clock
        self.max_keys = max_keys
        self._records: dict[Key, _Record] = {}
        self._lock = threading.Lock()

    def _backoff(self, failures: int) -> float:
        """The wait after `failures` failures: none until free_failures, then doubling, capped."""
        if failures < self.free_failures or failures <= 0:
            return 0.0
        return min(self.backoff_s * 2.0 ** min(failures - self.free_failures, 64), self.backoff_max_s)

    def _live(self, key: Key, now: float) -> _Record | None:
        record = self._records.get(key)
        if record and now - max(record.last, record.blocked_until) > self.backoff_max_s:
            del self._records[key]  # quiet long enough: forgiven
            return None
        return record

    def _wait(self, keys: Iterable[Key], now: float) -> float:
        return max([0.0, *(r.blocked_until - now for k in keys if (r := self._live(k, now)))])

    def retry_after(self, keys: Iterable[Key]) -> float:
        """Seconds until these keys may try again (0.0: now)."""
        now = self.clock()
        with self._lock:
            return self._wait(keys, now)

    def admit(self, keys: Iterable[Key]) -> float:
        """0.0 and the attempt counted as a failure (until `forgive`), or the seconds still to wait."""
        keys = list(keys)
        now = self.clock()
        with self._lock:
            wait = self._wait(keys, now)
            if wait > 0:
                return wait
            for key in keys:
                record = self._records.get(key) or self._records.setdefault(key, _Record())
                record.before = (record.last, record.blocked_until)
                record.failures += 1
                record.last = now
                record.blocked_until = now + self._backoff(record.failures)
            self._evict()
        return 0.0

    def forgive(self, user_key: Key, other_keys: Iterable[Key] = ()) -> None:
        """The password was right: the user starts afresh; the other keys get this attempt back."""
        with self._lock:
            self._records.pop(user_key, None)
            for key in other_keys:
                record = self._records.get(key)
                if record:
                    record.failures = max(record.failures - 1, 0)
                    record.last, record.blocked_until = record.before

    def failures(self, key: Key) -> int:
        with self._lock:
            record = self._live(key, self.clock())
            return record.failures if record else 0

    def _evict(self) -> None:
        if len(self._records) <= self.max_keys:
            return
        now = self.clock()
        for key in list(self._records):
            self._live(key, now)
        overflow = len(self._records) - self.max_keys
        if overflow > 0:
            for key, _ in sorted(self._records.items(), key=lambda kv: kv[1].last)[:overflow]:
                del self._records[key]


def report_lockout(throttle: LoginThrottle, name: str, client: str, wait_s: float) -> None:
    """Log (structured) that a failed sign-in put its user name and/or client address on back-off."""
    log.warning("dashboard sign-in backed off", extra={
        "event": "login_lockout", "user_name": name[:64], "client": client,
        "user_failures": throttle.failures(("user", name)), "client_failures": throttle.failures(("client", client)),
        "retry_after_s": round(wait_s, 1)})
