"""The Ray engine's standby call actors: topped up one at a time, and not while calls are arriving.

Starting a replacement process the moment each call took a standby put N process starts beside
N new calls; on 2 cores that took the emotion pool's CPU (benchmarks/live_ray.py). The pool here
is the one the engine uses (analysis/live/cluster/standby.py); the actors are plain objects, as
only the order of starts is under test (tests/test_ray.py runs it with real actors).
"""

from __future__ import annotations

import itertools
import time

from emotivoice.analysis.live.cluster.standby import StandbyPool


class Maker:
    """Makes numbered actors; `up` says which have started."""

    def __init__(self):
        self.count = itertools.count()
        self.up: set[int] = set()

    def create(self) -> int:
        return next(self.count)

    def ready(self, actor: int) -> bool:
        return actor in self.up


def test_a_burst_of_calls_starts_one_new_actor_at_a_time_and_the_rest_once_quiet():
    maker = Maker()
    pool = StandbyPool(maker.create, target=3, floor=1, quiet_s=0.3, ready=maker.ready)
    assert pool.fill() == [0, 1, 2]
    assert [pool.take() for _ in range(3)] == [0, 1, 2]  # three calls arrive together
    pool.tick()
    assert pool.made == 4  # none waiting, below the floor: one is made even now...
    pool.tick()
    pool.tick()
    assert pool.made == 4  # ...and no second while it is starting
    maker.up.add(3)
    pool.tick()
    assert len(pool) == 1 and pool.made == 4  # at the floor, calls just arrived: no more
    time.sleep(0.35)
    pool.tick()
    assert pool.made == 5  # quiet now: topped up, still one at a time
    pool.tick()
    assert pool.made == 5
    maker.up.update({4})
    pool.tick()
    pool.tick()
    assert pool.made == 6 and len(pool) == 2
    maker.up.add(5)
    pool.tick()
    pool.tick()
    assert len(pool) == 3 and pool.made == 6  # at target: nothing more


def test_a_call_takes_the_actor_being_made_before_a_cold_one_and_finished_actors_come_first():
    maker = Maker()
    pool = StandbyPool(maker.create, target=1, floor=1, quiet_s=60, ready=maker.ready)
    pool.fill()
    assert pool.take() == 0
    pool.tick()
    assert pool.take() == 1  # not started yet, but started sooner than a cold one would be
    assert pool.take() is None  # none left: the engine makes a cold one
    assert pool.give_back(0, limit=2) and pool.peek() == 0  # the finished call's actor, first in line
    assert pool.give_back(7, limit=2) and not pool.give_back(8, limit=2)  # over the limit: killed
    assert sorted(pool.drain()) == [0, 7] and len(pool) == 0
