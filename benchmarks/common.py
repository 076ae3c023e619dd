"""Helpers shared by the benchmark scripts: the machine they ran on, timing reads, and writing results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def time_reads(store, workload: Iterable[tuple[str, Callable[[], tuple[str, dict]]]], runs: int) -> dict:
    """p50/p95 ms of each named read; `make()` gives (query, params) afresh for every run, and
    one untimed run warms each query first."""
    import numpy as np

    out = {}
    for name, make in workload:
        query, params = make()
        store.read(query, **params)  # warm
        times = []
        for _ in range(runs):
            query, params = make()
            t0 = time.perf_counter()
            store.read(query, **params)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                     "p95_ms": round(float(np.percentile(times, 95)), 1)}
    return out


def speed_reference_ms() -> float:
    """Median ms of a fixed single-thread loop. The same VM ran the same analyze_rtf commit at RTF
    0.109 and, two hours later, 0.138 (its host is shared), so results carry this to tell a slower
    afternoon from a slower commit."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        times.append((time.perf_counter() - t0) * 1000)
    return round(sorted(times)[2], 1)


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "python": platform.python_version(),
            "speed_reference_ms": speed_reference_ms(),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=RESULTS.parent).stdout.strip()}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), **result}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))
    return path
