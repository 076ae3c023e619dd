"""Live capacity on Ray: N simultaneous SIPREC calls through `serve --ray`'s engine (analysis/live/cluster).

The same calls as benchmarks/live.py (sipp over loopback, the demo conversation rotated per call,
the final batch pass off), into the real SIP connector, recording front, one Ray actor per call
and the model pools (`--emotion-workers` + `--transcript-workers`, one CPU each: 1 + 1 are the
"2 workers"), on a local Ray instance this script starts. For each N it reports utterance end ->
emotion / transcript stored (p50, p95), transcripts shed, frames dropped and missing, CPU of
the whole service (this process and every Ray process: raylet, GCS, workers, call actors) and
of the machine (and by kind of process), the peak memory of the service's processes together,
how long each call waited for its actor, and where each utterance's emotion latency went, stage
by stage (collector.py's stage_times: the endpoint's 0.4 s of silence and the crossing to the call
actor, the emotion pool's queue and model, the answer back, the long poll, the store).

    python benchmarks/live_ray.py [--levels 1,2,4,8] [--seconds 45]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.live import demo_legs, machine_busy, pct, rotated, stored_utterances  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def service_pids() -> list[int]:
    """This process and every Ray process on the machine (the benchmark is the only Ray user)."""
    pids = [os.getpid()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(b"ray::") or b"/ray/" in cmd and (b"raylet" in cmd or b"gcs_server" in cmd
                                                             or b"default_worker" in cmd):
            pids.append(int(entry.name))
    return pids


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ServiceMeter:
    """CPU seconds and peak RSS of the service's processes, sampled while a level runs (call actors
    come and go: each process counts with the most CPU it was seen to have used)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {pid: proc_cpu_s(pid) for pid in service_pids()}
        self.last = dict(self.first)
        self.kind: dict[int, str] = {}
        self.peak_mb = 0.0

    def sample(self) -> None:
        pids = service_pids()
        for pid in pids:
            self.first.setdefault(pid, 0.0)
            self.last[pid] = max(self.last.get(pid, 0.0), proc_cpu_s(pid))
            self.kind[pid] = process_kind(pid)
        self.peak_mb = max(self.peak_mb, sum(proc_rss_mb(pid) for pid in pids))

    def cpu_s(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)

    def by_kind(self, wall_s: float) -> dict[str, float]:
        """Cores used by each kind of process (serving process, CallActor, EmotionWorker, raylet...)."""
        out: dict[str, float] = {}
        for pid in self.last:
            kind = self.kind.get(pid, "other")
            out[kind] = out.get(kind, 0.0) + (self.last[pid] - self.first[pid]) / wall_s
        return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def process_kind(pid: int) -> str:
    if pid == os.getpid():
        return "serving process"
    try:
        cmd = (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if cmd.startswith("ray::"):
        return cmd[5:].split(".")[0].split("(")[0].split()[0] or "ray worker (idle)"
    for name in ("raylet", "gcs_server", "default_worker"):
        if name in cmd:
            return name
    return "other"


def run_level(engine, port: int, n: int, legs, stagger_s: float) -> dict:
    from emotivoice.connector.sipp import place_calls

    stored_before = stored_utterances(engine.store)
    engine.latencies.clear()
    starts_before = len(engine.actor_starts)
    shed_before, missing_before = engine.counters["transcripts_shed"], engine.counters["missing_frames"]
    meter, wall0, busy0 = ServiceMeter(), time.monotonic(), machine_busy()
    results = []

    def one(i: int) -> None:
        time.sleep(i * stagger_s)
        results.append(place_calls("127.0.0.1", port, rotated(legs, 7.3 * i), siprec=True, calls=1))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        meter.sample()
        time.sleep(0.5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and engine.calls:  # let the last utterances through
        meter.sample()
        time.sleep(0.2)
    meter.sample()
    wall1, busy1 = time.monotonic(), machine_busy()
    lat = list(engine.latencies)
    starts = list(engine.actor_starts[starts_before:])
    emotion = [x["emotion_s"] for x in lat]
    transcript = [x["transcript_s"] for x in lat if x["transcript_s"] is not None]
    stats = engine.stats()
    return {
        "calls": n, "legs": 2 * n, "answered": sum(r.answered for r in results), "utterances": len(lat),
        "utterances_stored": stored_utterances(engine.store) - stored_before,
        "emotion_p50_s": pct(emotion, 50), "emotion_p95_s": pct(emotion, 95), "emotion_max_s": pct(emotion, 100),
        "transcript_p50_s": pct(transcript, 50), "transcript_p95_s": pct(transcript, 95),
        "transcripts_shed": engine.counters["transcripts_shed"] - shed_before,
        "frames_dropped": engine.inbox.total_dropped,
        "frames_missing_at_source": engine.counters["missing_frames"] - missing_before,
        "frames_per_leg": int(legs[0].size / 160), "chunks_sent": stats.get("chunks", 0),
        "delta_batches": stats.get("delta_batches", 0), "deltas": stats.get("deltas", 0),
        "service_cores": round(meter.cpu_s() / (wall1 - wall0), 2),
        "cores_by_process": meter.by_kind(wall1 - wall0),
        "machine_cores": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1), 2),
        "peak_rss_mb": round(meter.peak_mb), "wall_s": round(wall1 - wall0, 1),
        "actor_start_s": {"p50": pct(starts, 50), "max": pct(starts, 100)},
        "emotion_stages_s": stage_summary(lat),
    }


def stage_summary(lat: list[dict]) -> dict:
    """p50/p95 of each stage of utterance end -> emotion stored (analysis/live/cluster/collector.py's
    stage_times), so a slow level says where its time went."""
    names = [k for k in ("to_actor", "endpoint", "to_pool", "queue", "model", "back", "to_answer",
                         "to_collector", "store", "batch_size")]
    out = {}
    for name in names:
        values = [x["stages"][name] for x in lat if name in x.get("stages", {})]
        if values:
            out[name] = {"p50": pct(values, 50), "p95": pct(values, 95), "max": pct(values, 100)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8", help="simultaneous calls to try, in order")
    parser.add_argument("--seconds", type=float, default=45.0, help="length of each call")
    parser.add_argument("--stagger", type=float, default=0.25, help="seconds between call starts")
    parser.add_argument("--emotion-workers", type=int, default=1)
    parser.add_argument("--transcript-workers", type=int, default=1)
    args = parser.parse_args()

    import ray

    from emotivoice.analysis.live.cluster.config import RayConfig
    from emotivoice.analysis.live.cluster.engine import RayEngine
    from emotivoice.connector.sip import SipConnector
    from emotivoice.config import load_settings
    from emotivoice.logs import setup_logging
    from emotivoice.storage.server import StoreServer

    setup_logging("ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="emotivoice-live-ray-bench-"))
    settings = load_settings(env={})
    settings = replace(settings, db_path=tmp / "live.duckdb",
                       live=replace(settings.live, audio_dir=tmp / "calls", finalize="none", keep_audio=False),
                       connector=replace(settings.connector, sip_port=0, siprec_agent_match="agent", max_calls=128))
    workers = args.emotion_workers + args.transcript_workers
    ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    store = StoreServer(settings.db_path).start()
    config = RayConfig(emotion_workers=args.emotion_workers, transcript_workers=args.transcript_workers)
    engine = RayEngine(settings, store, config).start()
    engine.publisher.stdout = False
    connector = SipConnector(settings.connector, engine.inbox)
    connector.start()
    legs = demo_legs(args.seconds)
    levels = []
    try:
        for n in [int(x) for x in args.levels.split(",")]:
            print(f"{n} simultaneous calls on Ray...", flush=True)
            level = run_level(engine, connector.port, n, legs, args.stagger)
            print(level, flush=True)
            levels.append(level)
            if level["emotion_p95_s"] is not None and level["emotion_p95_s"] > 3.0:
                break  # far past capacity
    finally:
        connector.stop()
        engine.stop()
        store.close()
        ray.shutdown()
    ok = [lv["calls"] for lv in levels if lv["emotion_p95_s"] is not None and lv["emotion_p95_s"] <= 1.0
          and lv["answered"] == lv["calls"]]
    name = f"live_ray_{workers}w" + ("" if args.seconds == 45.0 else f"_{int(args.seconds)}s")
    write_result(name, {
        "setup": {"engine": "ray", "ray": ray.__version__, "emotion_workers": args.emotion_workers,
                  "transcript_workers": args.transcript_workers, "call_s": args.seconds, "stagger_s": args.stagger,
                  "chunk_s": config.chunk_s, "audio": "demo call, both legs, G.711 u-law RTP, rotated per call",
                  "finalize": "none (measured separately)", "transcription": settings.transcription.model,
                  "live_beam_size": settings.live.beam_size, "endpoint_silence_s": settings.live.endpoint_silence_s},
        "levels": levels,
        "capacity_calls": max(ok) if ok else 0,
        "target": "p95 utterance-end -> base emotion stored <= 1 s",
    })


if __name__ == "__main__":
    main()
