"""Leg ports, and the calls they belonged to, kept alive until pjmedia's bridge is done with them.

pjmedia (2.14 and later) removes a port from its conference bridge asynchronously:
pjsua_conf_remove_port only queues the removal, and the media clock thread carries it out at its
next tick. pjsua2's AudioMediaPort destructor queues that removal and frees the port at once, so
when the connector dropped a hung-up call's LegPort the clock could still call it, then read the
freed port while removing it: an AttributeError from a half-destroyed Python object, then a
segfault in the clock thread (issue 12). So a port is retired in three steps, on the event thread:

1. detach: its callback stops handing frames on (it returns at once);
2. unregister: pj::AudioMedia::unregisterMediaPort, the C++ method the destructor itself uses
   (protected, so SWIG does not wrap it; called through ctypes), queues the removal and forgets
   the slot, so the destructor will not remove the slot again (it may be a new call's by then);
3. the Python object, and whatever the caller keeps with it (the SipCall), stays in the yard until
   the bridge reports the removal done (Endpoint.onAudioMediaOpCompleted, on the clock thread) and
   SETTLE_S more have passed; only then is it dropped, and its destructor just frees its pool.

Where the C++ method cannot be found (a build that hides its C++ symbols), a retired port stays
in the bridge, inert, and is never freed (disowned, kept until the process exits): nothing is
destroyed while the clock can still reach it, or after pjsua is gone.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pjsua2 as pj

log = logging.getLogger("emotivoice.connector.sip")

UNREGISTER = "_ZN2pj10AudioMedia19unregisterMediaPortEv"  # void pj::AudioMedia::unregisterMediaPort()
SETTLE_S = 0.1  # after the bridge removed a port, this long (five 20 ms ticks) before it is freed
_NEVER_FREED: list = []  # ports that could not be unregistered: alive, and disowned, until exit


@dataclass
class _Retired:
    port: pj.AudioMediaPort | None
    keep: tuple  # objects that must live as long as the port (its call)
    seq: int  # when it was queued for removal, on the yard's clock of events
    removed_at: float | None = None
    release: Callable[[], None] | None = None  # a native leg's port: destroyed by this, once let go


@dataclass
class PortYard:
    """Where retired ports wait for the bridge; `sweep()` (event thread) frees what it is done with."""

    library_path: str
    retired: int = 0
    released: int = 0
    kept: int = 0  # never freed: no removal function, or still in the bridge at shutdown
    _waiting: dict[int, deque] = field(default_factory=dict)  # slot -> retired ports, oldest first
    _settling: list[_Retired] = field(default_factory=list)
    _removed: deque = field(default_factory=deque)  # (slot, seq) from the clock thread
    _seq: itertools.count = field(default_factory=itertools.count)
    _unregister: object = None

    def __post_init__(self) -> None:
        try:
            func = ctypes.CDLL(self.library_path)[UNREGISTER]
            func.argtypes, func.restype = [ctypes.c_void_p], None
            self._unregister = func
        except (OSError, AttributeError) as exc:
            log.error("pjsua2 port removal not found: retired leg ports are kept until exit",
                      extra={"error": str(exc)})

    def retire(self, port, keep: tuple = ()) -> None:
        """Take `port` out of the bridge; it (and `keep`) are freed once the bridge lets go."""
        port.detach()
        self.retired += 1
        slot = port.getPortId()
        if slot < 0:  # never made it into the bridge: nothing can call it
            self.released += 1
            return
        if self._unregister is None:
            port.__disown__()
            _NEVER_FREED.append((port, keep))
            self.kept += 1
            return
        entry = _Retired(port, keep, next(self._seq))
        self._waiting.setdefault(slot, deque()).append(entry)
        self._unregister(int(port.this))  # may report the removal at once, for a port still being added

    def retire_slot(self, slot: int, remove: Callable[[int], int], release: Callable[[], None]) -> None:
        """A port the caller made itself (connector/nativeleg.py): `remove(slot)` asks the bridge to
        take it out, and `release` runs on the event thread once the bridge has let go of it and
        SETTLE_S passed.

        The port is queued before `remove` runs, as retire() does: pjmedia removes a port that is
        still being added at once, inside the call, and reports it there (and the clock may carry
        out a queued removal before the call returns). A report noted before the port was queued is
        taken for another port's, so the port waited until shutdown and was never released (CI:
        retired 102, released 101, after calls hung up right after their answer)."""
        self.retired += 1
        self._waiting.setdefault(slot, deque()).append(_Retired(None, (), next(self._seq), release=release))
        status = remove(slot)
        if status:  # not in the bridge (pjsua refused): it stays queued, and at shutdown is kept
            log.warning("bridge refused to remove a leg port", extra={"slot": slot, "status": status})

    def _release(self, entries: list[_Retired]) -> None:
        for entry in entries:
            if entry.release is not None:
                try:
                    entry.release()
                except Exception:  # one port's trouble must not keep the others
                    log.exception("native leg port release failed")

    def on_removed(self, slot: int) -> None:
        """The bridge removed `slot` (clock thread: only note it)."""
        self._removed.append((slot, next(self._seq)))

    def sweep(self) -> None:
        """Move ports the bridge has let go of to settling; free those settled (event thread)."""
        now = time.monotonic()
        while self._removed:
            slot, seq = self._removed.popleft()
            queue = self._waiting.get(slot)
            if queue and queue[0].seq < seq:  # a removal noted before this port was queued is another's
                entry = queue.popleft()
                entry.removed_at = now
                self._settling.append(entry)
                if not queue:
                    del self._waiting[slot]
        if self._settling:
            done = [e for e in self._settling if now - e.removed_at >= SETTLE_S]
            if done:
                self._settling = [e for e in self._settling if now - e.removed_at < SETTLE_S]
                self.released += len(done)
                self._release(done)
                done.clear()  # the last references: each port's destructor now only frees its pool

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values()) + len(self._settling)

    def drain(self, handle_events, timeout_s: float) -> None:
        """At shutdown: let the clock finish the removals (pumping the event loop meanwhile); ports
        it has not let go of by then are kept, never freed, so libDestroy finds them alive."""
        deadline = time.monotonic() + timeout_s
        while self.waiting and time.monotonic() < deadline:
            handle_events(20)
            self.sweep()
        for queue in self._waiting.values():
            for entry in queue:
                if entry.port is not None:  # a native leg's port is simply never destroyed
                    entry.port.__disown__()
                    _NEVER_FREED.append((entry.port, entry.keep))
        still = sum(len(q) for q in self._waiting.values())
        if still:
            self.kept += still
            log.warning("leg ports still in the bridge at shutdown: kept, not freed", extra={"ports": still})
        self._waiting.clear()
        time.sleep(SETTLE_S)
        self.released += len(self._settling)
        self._release(self._settling)
        self._settling.clear()

    def stats(self) -> dict:
        return {"retired": self.retired, "released": self.released, "kept": self.kept, "waiting": self.waiting}


class BridgeEndpoint(pj.Endpoint):
    """The pjsua2 Endpoint, telling the yard when the bridge has removed a port."""

    def __init__(self, yard: PortYard):
        super().__init__()
        self.yard = yard

    def onAudioMediaOpCompleted(self, prm) -> None:
        try:
            if prm.opType == pj.PJMEDIA_CONF_OP_REMOVE_PORT:
                self.yard.on_removed(prm.opParam.removeInfo.mediaId)
        except Exception:  # never let an exception out onto the clock thread
            log.exception("bridge operation report failed")
