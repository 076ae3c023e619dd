#!/usr/bin/env python3
"""Send pre-encoded G.711 u-law files as RTP streams in real time (20 ms packets), one per file.

Standard library only and started by sipp's <exec> once a call is answered, with the RTP ports
sipp read from our 200 OK, so every stream of every call (SIPREC has two) gets its own paced RTP:

    rtpsend.py [--exec-at EPOCH_S] HOST PORT1:FILE1.ulaw [PORT2:FILE2.ulaw ...]

With $EMOTIVOICE_RTPSEND_LOG set (benchmarks/live.py sets it), a JSON line per sender is appended
there at the end: how long after sipp's exec it began, how far behind its schedule it fell at worst
and when, so a kept leg that misses its head or tail can be told from a sender that started late or
stalled and then burst (a jitter buffer drops the burst).

With $EMOTIVOICE_RTPSEND_STALLS set to "PERIOD_S:STALL_S" every stream holds its packets for
STALL_S once every PERIOD_S of audio and then sends what it owes at once, as a congested network
delivers them: the jitter a recorder must absorb without moving its timeline (benchmarks/live.py
--sender-stalls).
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import time
from pathlib import Path

PTIME_S = 0.020
SAMPLES = 160  # 20 ms at 8 kHz, one byte per sample in u-law


def send(host: str, streams: list[tuple[int, bytes]], exec_at: float | None = None) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in streams]
    ssrcs = [random.getrandbits(32) for _ in streams]
    seq0 = [random.getrandbits(16) for _ in streams]
    ts0 = [random.getrandbits(32) for _ in streams]
    packets = max(len(data) for _, data in streams) // SAMPLES
    start = time.monotonic()
    late, late_at = 0.0, 0
    every, stall_s = _stalls(os.environ.get("EMOTIVOICE_RTPSEND_STALLS", ""))
    for n in range(packets):
        if every and n and n % every == 0:
            time.sleep(stall_s)  # the packets due meanwhile go out in one burst after it
        behind = time.monotonic() - (start + n * PTIME_S)
        if behind > late:
            late, late_at = behind, n
        for i, (port, data) in enumerate(streams):
            payload = data[n * SAMPLES:(n + 1) * SAMPLES]
            if len(payload) < SAMPLES:
                continue
            header = struct.pack("!BBHII", 0x80, (0x80 if n == 0 else 0) | 0, (seq0[i] + n) & 0xFFFF,
                                 (ts0[i] + n * SAMPLES) & 0xFFFFFFFF, ssrcs[i])
            socks[i].sendto(header + payload, (host, port))
        delay = start + (n + 1) * PTIME_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    log = os.environ.get("EMOTIVOICE_RTPSEND_LOG")
    if log:
        with open(log, "a") as f:
            started = time.time() - (time.monotonic() - start)
            # how long after sipp's <exec> the first packet left: sipp's BYE timer runs from the exec, so a
            # sender that starts late has its last audio cut by the BYE (the harness's loss, not the service's)
            delay = None if exec_at is None else round(started - exec_at, 3)
            f.write(json.dumps({"ports": [p for p, _ in streams], "started": started, "start_delay_s": delay,
                                "max_late_s": round(late, 3), "late_at_s": round(late_at * PTIME_S, 2)}) + "\n")


def _stalls(spec: str) -> tuple[int, float]:
    """"PERIOD_S:STALL_S" as (packets between stalls, stall seconds); (0, 0.0) when unset or unreadable."""
    period, _, stall = spec.partition(":")
    try:
        every, stall_s = round(float(period) / PTIME_S), float(stall)
    except ValueError:
        return 0, 0.0
    return (every, stall_s) if every > 0 and 0 < stall_s < 10 else (0, 0.0)


def main(argv: list[str]) -> None:
    exec_at = None
    if argv and argv[0] == "--exec-at":  # the shell's clock when sipp ran us (connector/sipp.py)
        try:
            exec_at = float(argv[1])
        except ValueError:  # a shell that did not expand $(date ...): no delay to report
            pass
        argv = argv[2:]
    host, specs = argv[0], argv[1:]
    streams = []
    for spec in specs:
        port, _, path = spec.partition(":")
        streams.append((int(port), Path(path).read_bytes()))
    send(host, streams, exec_at)


if __name__ == "__main__":
    main(sys.argv[1:])
