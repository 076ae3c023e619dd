"""The live chain's building block, in the style of diart's blocks and pipecat's processors:
a `Stage` has its input queue, one worker thread running the one loop below, its shedding
policy and its counters. analysis/live/steps.py and writer.py define the engine's stages.

Locking, one rule: a stage's own condition guards only its queue (`put`, `ready`, `take`,
`shed` run under it and never touch a call); the work itself (`process`, `on_shed`) runs
outside it and takes the engine's call lock where it reads or changes a call, handing results
on with the next stage's `put`. So no stage waits on another's queue, and nothing is published
while a lock is held.
"""

from __future__ import annotations

import collections
import logging
import os
import threading

log = logging.getLogger("emotivoice.analysis.live.engine")


class Stage:
    """Subclasses say what is ready, what to take, what to shed and what to do with a batch."""

    name = "stage"
    nice = 0  # added to the worker thread's niceness (Whisper's threads inherit it)

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: collections.deque = collections.deque()
        self.counters: collections.Counter[str] = collections.Counter()  # merged into LiveEngine.stats()
        self.running = False
        self.error: str | None = None  # why the stage cannot work (its model did not load), for stats()
        self.failure: str | None = None  # the latest batch its model failed on, for stats()
        self.started = threading.Event()  # set once setup() has run, well or not
        self.thread: threading.Thread | None = None

    # ---- the queue --------------------------------------------------------------------------------

    def put(self, item) -> None:
        with self.cond:
            self.queue.append(item)
            self.cond.notify()

    def pending(self) -> int:
        with self.cond:
            return len(self.queue)

    # ---- hooks ------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Runs first in the worker thread (load a model); raising marks the stage dead (`error`):
        its loop goes on, handing what reaches it to `on_dead`."""

    def ready(self) -> bool:
        return bool(self.queue)

    def wait_s(self) -> float | None:
        """How long to wait for a put() at most (a retry falling due); None: until one comes."""
        return None

    def shed(self) -> list:
        """What the policy drops before a take (under the stage's condition)."""
        return []

    def on_shed(self, items: list) -> None:
        """Account for shed items (outside the stage's condition)."""

    def take(self) -> list:
        return [self.queue.popleft()] if self.queue else []

    def process(self, batch: list) -> None:
        raise NotImplementedError

    def on_dead(self, batch: list) -> None:
        """What a stage whose setup failed does with what still reaches it (pass it on undone)."""

    def drained(self) -> bool:
        """Whether the stage may stop: nothing left it must do."""
        return not self.queue

    def on_stop(self) -> None:
        """Runs last in the worker thread."""

    # ---- the loop ---------------------------------------------------------------------------------

    def start(self, thread_name: str) -> threading.Thread:
        self.running = True
        self.thread = threading.Thread(target=self.run, name=thread_name, daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()

    def wake(self) -> None:
        """Look at the queue again (something `ready` depends on changed: the store recovered)."""
        with self.cond:
            self.cond.notify_all()

    def run(self) -> None:
        if self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:
                pass
        try:
            self.setup()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.counters[f"{self.name}_dead"] = 1
            log.error(f"live {self.name} stage unavailable", extra={"error": self.error})
        finally:
            self.started.set()
        while True:
            with self.cond:
                while self.running and not self.ready():
                    self.cond.wait(self.wait_s())
                if not self.running and self.drained():
                    break
                shed = self.shed()
                batch = self.take()
            if shed:
                self._guard(self.on_shed, shed)
            if batch:
                self.counters[f"{self.name}_batches"] += 1
                self._guard(self.on_dead if self.error else self.process, batch)
        self._guard(self.on_stop)

    def _guard(self, work, *args) -> None:
        """A bug in one batch must not stop every call's analysis: logged, counted, the loop goes on."""
        try:
            work(*args)
        except Exception:
            self.counters[f"{self.name}_errors"] += 1
            log.exception(f"live {self.name} stage failed", extra={"stage": self.name})
