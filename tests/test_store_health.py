"""StoreHealth orders a write's outcome by when the attempt began (analysis/live/storehealth.py).

The live writer and the finaliser store at once; whichever reports last must not win. These drive
StoreHealth with explicit start times, the interleavings CI met and its mirror image."""

from __future__ import annotations

import duckdb

from emotivoice.analysis.live.storehealth import StoreHealth


def test_a_failure_reported_after_a_later_write_went_through_is_no_fault():
    health = StoreHealth()
    health.ok(began=2.0)  # the final save, begun second, went through first
    health.failed("live save", duckdb.InternalException("boom"), "c1", began=1.0)
    assert not health.faulted and health.report() == {}
    assert health.wait_s() == 0.0  # nothing holds the writer's retry back


def test_a_success_reported_after_a_later_write_failed_keeps_the_fault():
    health = StoreHealth()
    health.failed("live save", OSError(28, "No space left on device"), "c1", began=2.0)
    health.ok(began=1.0)  # begun before the disk filled: says nothing about the store now
    assert health.faulted and "No space left on device" in health.report()["store_fault"]
    health.ok(began=3.0)  # a write begun after the failure went through: the fault is over
    assert not health.faulted and health.report() == {"store_faults": 1}


def test_outcomes_in_order_behave_as_before():
    health = StoreHealth()
    health.failed("final save", duckdb.IOException("full"))
    assert health.faulted and health.wait_s() > 0
    health.ok()
    assert not health.faulted and health.report() == {"store_faults": 1}
