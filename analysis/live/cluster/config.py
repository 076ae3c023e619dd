"""Settings of the Ray engine (to join emotivoice/config.py's tree as `ray` once its owner takes it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayConfig:
    """How `emotivoice serve --ray` lays out its work on Ray."""

    address: str = "auto"  # "auto": a running cluster (RAY_ADDRESS, `ray start`) or else a local one
    local_cpus: int = 0  # CPUs of a local instance; 0: the machine's
    emotion_workers: int = 1  # emotion model copies (one CPU each)
    transcript_workers: int = 1  # Whisper copies (one CPU each): 1 + 1 are "2 workers"
    chunk_s: float = 0.2  # audio crosses to a call actor in chunks this long (an actor call costs ~2 ms)
    standby_calls: int = 4  # call actors started ahead of their calls (a cold one took 3-14 s on 2 cores)
    standby_floor: int = 1  # below this many waiting, a new one is started even while calls arrive
    standby_quiet_s: float = 10.0  # otherwise the pool is topped up once no call has started for this long
    call_restarts: int = 3  # a call's actor that dies is replaced by a standby this often (resuming from the recording)
    end_wait_s: float = 10.0  # how long a call's end waits for its last chunks to reach the actor
