"""The port yard frees a leg port only after the bridge reports its removal, and frees every one.

The bridge here is a stand-in for pjmedia's report order, which is the thing under test: a port
still being added is removed at once, inside pjsua_conf_remove_port, and reported there; a port
already in the bridge is reported later, by the clock thread. A native leg retired right after its
call was answered once took the first path, its report was noted before the yard queued it, and
it was never released (CI: retired 102, released 101). No pjsua library is loaded: the yard's
C++ unregister is only needed for Python ports, which these tests do not retire.
"""

from __future__ import annotations

import time

import pytest

portyard = pytest.importorskip("emotivoice.connector.portyard")


def settled(yard, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while yard.waiting and time.monotonic() < deadline:
        yard.sweep()
        time.sleep(0.02)


def test_a_port_removed_inside_the_remove_call_is_still_released():
    yard = portyard.PortYard("/nonexistent/libpjsua2.so")
    released = []

    def remove_at_once(slot: int) -> int:  # pjmedia: a port still being added goes synchronously
        yard.on_removed(slot)
        return 0

    yard.retire_slot(7, remove_at_once, lambda: released.append(7))
    settled(yard)
    assert released == [7]
    assert yard.stats() == {"retired": 1, "released": 1, "kept": 0, "waiting": 0}


def test_a_port_reported_later_waits_for_its_report_and_a_reused_slot_keeps_its_own():
    yard = portyard.PortYard("/nonexistent/libpjsua2.so")
    released, queued = [], []
    yard.retire_slot(3, lambda slot: queued.append(slot) or 0, lambda: released.append("first"))
    settled(yard, 0.3)
    assert released == [] and yard.waiting == 1  # no report yet: never freed while the clock may call it
    yard.on_removed(queued.pop())  # the clock's report
    yard.retire_slot(3, lambda slot: queued.append(slot) or 0, lambda: released.append("second"))
    settled(yard, 0.5)
    assert released == ["first"] and yard.waiting == 1  # slot 3 reused: the first report is not the second's
    yard.on_removed(queued.pop())
    settled(yard)
    assert released == ["first", "second"]
    assert yard.stats() == {"retired": 2, "released": 2, "kept": 0, "waiting": 0}


def test_a_port_the_bridge_refused_to_remove_is_kept_at_shutdown_not_freed():
    yard = portyard.PortYard("/nonexistent/libpjsua2.so")
    released = []
    yard.retire_slot(5, lambda slot: -1, lambda: released.append(5))
    yard.drain(lambda ms: None, 0.1)
    assert released == []  # nothing said the bridge let go of it
    assert yard.stats() == {"retired": 1, "released": 0, "kept": 1, "waiting": 0}
