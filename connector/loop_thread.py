"""An asyncio event loop in a daemon thread, so a receiver's start() returns at once.

The media receivers are asyncio servers; the rest of the program (CLI, dashboard, tests) is
threaded. Each receiver owns one of these: start() runs its coroutine until the listening
socket is bound (so `port` is known when start() returns), stop() runs its shutdown coroutine
on the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class LoopThread:
    """One event loop, one daemon thread, started once and stopped once."""

    def __init__(self, name: str):
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=self.name, daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[T]], timeout: float | None = 10.0) -> T:
        """Run a coroutine on the loop from another thread and wait for its result."""
        if self.loop is None:
            raise RuntimeError(f"{self.name} not started")
        future = asyncio.run_coroutine_threadsafe(_call(make), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop (after the caller has run its shutdown coroutine) and join the thread."""
        if self.loop is None or self._thread is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10.0)
        if not self._thread.is_alive():
            self.loop.close()
        self.loop, self._thread = None, None


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
