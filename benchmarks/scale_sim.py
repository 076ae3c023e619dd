"""1,000 simulated concurrent calls through the real live boundaries (issue 12, item 6).

No machine here can run 1,000 calls' models, so this measures what does not scale out by adding
analysis workers, the parts every call passes through on the service node:

1. media: 20 ms frames of every leg into the real recording front (analysis/live/recording.py:
   recorded to disk by its writer thread, then offered to the analysis inbox), drained by a
   consumer that cuts each leg into >= 200 ms chunks as the Ray sink does before anything
   crosses a process. Reported: how many calls' audio one core carries at real time, frame ->
   chunk latency, whether the recording kept up, and memory per call.
2. per-call analysis state: 1,000 calls' endpointers (the real silero VAD streams) held at once:
   memory per call.
3. store: every call's utterances arriving as they would (one per `utterance_every_s` per call,
   stored once with its emotions, again with its transcript) as CallDeltas (storage/incremental.py)
   group-committed every `batch_s` into the real store service's DuckDB file, against the
   whole-call rewrites (save_call) the embedded engine does. Reported: utterance changes stored
   per second, commit time p50/p95, and the latency a change waits for the store.

The model stages are not run: their cost per call is taken from the other benchmarks (emotion
61 ms per utterance, batch analysis 0.086 core-seconds per second of call) to say how many cores
1,000 calls' analysis needs.

    python benchmarks/scale_sim.py [--calls 1000] [--audio-s 6] [--store-s 20]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

FRAME_S = 0.02
CHUNK_S = 0.2  # what the Ray sink ships per leg (analysis/live/cluster/sink.py)
EMOTION_S_PER_UTTERANCE = 0.061  # benchmarks/results/analyze_rtf_2min.json stages_s, per utterance
BATCH_CORE_S_PER_CALL_S = 0.086  # benchmarks/analyze_rtf.py --models base, 2-min stereo call


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def call_ids(n: int) -> list[str]:
    from emotivoice.storage.files import new_call_id

    return [new_call_id("sim") for _ in range(n)]


# ---- 1. media boundary -------------------------------------------------------------------------

class ChunkingConsumer:
    """Drains the analysis inbox as the Ray sink would: a chunk per leg every CHUNK_S of audio."""

    def __init__(self, inbox) -> None:
        self.inbox, self.chunks, self.frames = inbox, 0, 0
        self.buffered: dict[tuple[str, str], int] = {}
        self.first_at: dict[tuple[str, str], float] = {}
        self.latency: list[float] = []  # oldest frame of a chunk: pushed -> chunk ready
        self.running = True
        self.pushed_at: dict[tuple[str, str, int], float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from emotivoice.analysis.live.messages import Frame

        per_chunk = int(CHUNK_S / FRAME_S)
        while self.running or self.inbox.pending():
            msg = self.inbox.get(timeout=0.05)
            if not isinstance(msg, Frame):
                continue
            self.frames += 1
            key = (msg.call_id, msg.leg)
            n = self.buffered.get(key, 0)
            if n == 0:
                self.first_at[key] = self.pushed_at.pop((msg.call_id, msg.leg, msg.seq), time.monotonic())
            else:
                self.pushed_at.pop((msg.call_id, msg.leg, msg.seq), None)
            if n + 1 >= per_chunk:
                self.chunks += 1
                self.latency.append(time.monotonic() - self.first_at[key])
                self.buffered[key] = 0
            else:
                self.buffered[key] = n + 1


def media_boundary(calls: int, audio_s: float, work: Path) -> dict:
    from emotivoice.analysis.live.inbox import FrameInbox
    from emotivoice.analysis.live.messages import CallEnded, CallStarted, Frame, LegInfo
    from emotivoice.analysis.live.recording import RecordingFront
    from emotivoice.config import LiveConfig

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # two open leg files per call
    cfg = replace(LiveConfig(), audio_dir=str(work / "calls"))
    inbox = FrameInbox(max_frames=10_000_000)  # never shed here: measure the boundary, not the engine
    front = RecordingFront(cfg, inbox).begin()
    consumer = ChunkingConsumer(inbox)
    consumer.thread.start()
    ids = call_ids(calls)
    legs = ("agent", "customer")
    rss0 = rss_mb()
    for cid in ids:
        front.start(CallStarted(cid, "siprec", tuple(LegInfo(leg, leg, sample_rate=8000) for leg in legs)))
    rng = np.random.default_rng(0)
    pcm = [(rng.standard_normal(160) * 3000).astype("<i2").tobytes() for _ in range(8)]
    rounds = int(audio_s / FRAME_S)
    cpu0, t0 = time.process_time(), time.monotonic()
    push_cpu = 0.0
    late_rounds = 0
    for r in range(rounds):
        due = t0 + r * FRAME_S
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        elif now - due > FRAME_S:
            late_rounds += 1
        c0 = time.thread_time()
        for i, cid in enumerate(ids):
            for leg in legs:
                consumer.pushed_at[(cid, leg, r)] = time.monotonic()
                front.push(Frame(cid, leg, r, pcm[(i + r) % 8]))
        push_cpu += time.thread_time() - c0
    wall = time.monotonic() - t0
    peak_queued = front.stats()["recording_queued_mb"]
    rss_open = rss_mb()
    for cid in ids:
        front.end(CallEnded(cid, "hang-up"))
    deadline = time.monotonic() + 120
    while inbox.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    consumer.running = False
    consumer.thread.join(30)
    front.close(60)
    stats = front.stats()
    process_cpu = time.process_time() - cpu0
    frames = rounds * calls * len(legs)
    # the legs' raw files (s16 at 8 kHz; the engine's finaliser would assemble them into the WAV)
    kept = sum(p.stat().st_size for p in (work / "calls").rglob("*") if p.is_file() and p.suffix != ".json")
    kept = kept / 2 / 8000 / len(legs)
    return {
        "calls": calls, "legs": calls * len(legs), "audio_s": audio_s, "frames": frames,
        "wall_s": round(wall, 2), "real_time": wall <= audio_s * 1.05,
        "rounds_late_by_over_a_frame": late_rounds,
        "push_cpu_us_per_frame": round(push_cpu / frames * 1e6, 2),
        "process_cpu_s": round(process_cpu, 2),
        "process_cores": round(process_cpu / wall, 2),
        "calls_per_core_at_real_time": int(calls * audio_s / process_cpu) if process_cpu else None,
        "frames_recorded": stats["frames_recorded"], "recording_lost_frames": stats["recording_lost_frames"],
        "recording_queued_mb_at_end_of_audio": peak_queued,
        "kept_audio_s_per_call": round(kept / calls, 2) if calls else None,
        "chunks": consumer.chunks, "frames_per_chunk": round(consumer.frames / max(consumer.chunks, 1), 1),
        "frame_to_chunk_p50_s": pct(consumer.latency, 50), "frame_to_chunk_p95_s": pct(consumer.latency, 95),
        "rss_per_open_call_kb": round((rss_open - rss0) * 1024 / calls, 1),
    }


# ---- 2. per-call analysis state ------------------------------------------------------------------

def analysis_state(calls: int) -> dict:
    from emotivoice.analysis.live.endpoint import Endpointer

    warm = Endpointer(8000)  # the shared ONNX session loads once, not per call
    warm.feed(np.zeros(8000, np.int16))
    gc.collect()
    rss0 = rss_mb()
    held = [[Endpointer(8000), Endpointer(8000)] for _ in range(calls)]
    silence = np.zeros(8000, np.int16)
    t0 = time.process_time()
    for pair in held[:50]:  # one second of audio through 50 calls: VAD cost per leg-second
        for ep in pair:
            ep.feed(silence)
    vad_cpu = (time.process_time() - t0) / 100
    gc.collect()
    per_call = (rss_mb() - rss0) * 1024 / calls
    del held
    return {"calls": calls, "rss_per_call_kb": round(per_call, 1), "vad_cpu_ms_per_leg_second": round(vad_cpu * 1e3, 2)}


# ---- 3. store boundary -----------------------------------------------------------------------------

def utterance_rows(call_id: str, idx: int, with_text: bool) -> tuple[dict, list[dict], list[dict], list[dict]]:
    start = idx * 3.0
    u = {"call_id": call_id, "utterance_idx": idx, "speaker": "customer" if idx % 2 else "agent", "leg": idx % 2,
         "start_s": start, "end_s": start + 2.4, "text": "I have been waiting for an hour" if with_text else "",
         "language": "en", "loudness_dbfs": -21.0, "base_emotion": "anger", "base_confidence": 0.62,
         "words": [{"word": " waiting", "start_s": start + 0.5, "end_s": start + 0.9, "probability": 0.9}]
         if with_text else [], "partial": False}
    scores = [{"call_id": call_id, "utterance_idx": idx, "emotion": e, "probability": p}
              for e, p in (("anger", 0.62), ("neutral", 0.2), ("sadness", 0.08), ("happiness", 0.04),
                           ("fear", 0.03), ("disgust", 0.02), ("surprise", 0.01))]
    sarcasm = [{"call_id": call_id, "utterance_idx": idx, "is_sarcastic": False, "confidence": 0.1,
                "reason": "words not positive", "ambiguous": False}]
    risk = [{"call_id": call_id, "utterance_idx": idx, "speaker": u["speaker"], "t_s": start + 2.4,
             "score": 40.0 + idx, "factors": "{}"}]
    return u, scores, sarcasm, risk


def call_row(call_id: str, n: int) -> dict:
    return {"call_id": call_id, "source": "siprec:sim", "duration_s": n * 3.0, "channels": 2, "mode": "live",
            "status": "live"}


def store_boundary(calls: int, store_s: float, utterance_every_s: float, batch_s: float, work: Path) -> dict:
    from emotivoice.storage.db import CallRecord
    from emotivoice.storage.incremental import CallDelta
    from emotivoice.storage.server import StoreServer

    server = StoreServer(work / "sim.duckdb").start()
    ids = call_ids(calls)
    speakers = {cid: [{"call_id": cid, "speaker": s, "role": s, "leg": i, "language": "en", "talk_time_s": 0.0,
                       "metrics": "{}"} for i, s in enumerate(("agent", "customer"))] for cid in ids}
    rng = np.random.default_rng(1)
    phase = rng.uniform(0, utterance_every_s, calls)  # calls' utterances do not end together
    count = dict.fromkeys(ids, 0)
    commits, changes, waits = [], 0, []
    t0 = time.monotonic()
    next_batch = t0 + batch_s
    pending: dict[str, tuple[CallDelta, float]] = {}
    emitted_upto = 0.0
    try:
        while time.monotonic() - t0 < store_s:
            now = time.monotonic() - t0
            for i, cid in enumerate(ids):  # utterances whose end fell in (emitted_upto, now]
                k0 = int(np.floor((emitted_upto - phase[i]) / utterance_every_s))
                k1 = int(np.floor((now - phase[i]) / utterance_every_s))
                for k in range(max(k0 + 1, 0), k1 + 1):
                    for with_text in (False, True):  # emotions first, the transcript a little later
                        idx = k
                        u, scores, sarcasm, risk = utterance_rows(cid, idx, with_text)
                        count[cid] = max(count[cid], idx + 1)
                        delta = CallDelta(call_row(cid, count[cid]), count[cid], [u], scores, sarcasm, risk,
                                          speakers=speakers.pop(cid, None))
                        old = pending.get(cid)
                        if old:
                            from emotivoice.storage.incremental import merge
                            delta = merge(old[0], delta)
                        pending[cid] = (delta, old[1] if old else time.monotonic())
                        changes += 1
            emitted_upto = now
            if time.monotonic() >= next_batch and pending:
                batch = list(pending.values())
                pending.clear()
                c0 = time.monotonic()
                server.save_deltas([d for d, _ in batch])
                done = time.monotonic()
                commits.append(done - c0)
                waits.extend(done - since for _, since in batch)
                next_batch = done + batch_s
            else:
                time.sleep(0.005)
        wall = time.monotonic() - t0
        # the embedded engine's whole-call rewrite, for the same calls as they now stand
        rewrite = []
        for cid in ids[:50]:
            n = count[cid]
            rows = [utterance_rows(cid, k, True) for k in range(n)]
            record = CallRecord(call_row(cid, n), [], [r[0] for r in rows], [s for r in rows for s in r[1]],
                                [s for r in rows for s in r[2]], [s for r in rows for s in r[3]])
            c0 = time.monotonic()
            server.save_call(record)
            rewrite.append(time.monotonic() - c0)
        stored = int(server.read("list_calls", limit=100_000).utterances.sum())
    finally:
        server.close()
    return {"calls": calls, "seconds": round(wall, 1), "utterance_every_s": utterance_every_s, "batch_s": batch_s,
            "utterance_changes": changes, "changes_per_s": round(changes / wall, 1),
            "changes_needed_per_s": round(2 * calls / utterance_every_s, 1),
            "commits": len(commits), "deltas_per_commit": round(changes / max(len(commits), 1), 1),
            "commit_p50_s": pct(commits, 50), "commit_p95_s": pct(commits, 95),
            "change_to_stored_p50_s": pct(waits, 50), "change_to_stored_p95_s": pct(waits, 95),
            "utterances_stored": stored,
            "whole_call_rewrite_p50_s": pct(rewrite, 50), "whole_call_rewrite_p95_s": pct(rewrite, 95),
            "whole_call_rewrites_per_s_one_writer": round(1 / float(np.median(rewrite)), 1) if rewrite else None,
            "utterances_per_call_at_end": round(float(np.mean(list(count.values()))), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--audio-s", type=float, default=6.0, help="seconds of every call's audio pushed")
    parser.add_argument("--store-s", type=float, default=20.0, help="seconds of utterance traffic to the store")
    parser.add_argument("--utterance-every-s", type=float, default=3.0, help="per call (both legs together)")
    parser.add_argument("--batch-s", type=float, default=0.5, help="group-commit period of the store writer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-sim-") as tmp:
        work = Path(tmp)
        print(f"[1/3] media boundary: {args.calls} calls, {args.audio_s:g} s of audio each", flush=True)
        media = media_boundary(args.calls, args.audio_s, work)
        print(f"      {media}", flush=True)
        print(f"[2/3] per-call analysis state: {args.calls} calls' endpointers", flush=True)
        state = analysis_state(args.calls)
        print(f"      {state}", flush=True)
        print(f"[3/3] store: {args.calls} calls' utterances for {args.store_s:g} s", flush=True)
        store = store_boundary(args.calls, args.store_s, args.utterance_every_s, args.batch_s, work)
        print(f"      {store}", flush=True)
    utterances_per_s = args.calls / args.utterance_every_s
    write_result("scale_sim", {
        "setup": {"calls": args.calls, "audio_s": args.audio_s, "store_s": args.store_s,
                  "utterance_every_s": args.utterance_every_s, "batch_s": args.batch_s,
                  "legs_per_call": 2, "rate_hz": 8000, "chunk_s": CHUNK_S},
        "media": media, "analysis_state": state, "store": store,
        "analysis_cores_needed": {
            "emotion": round(utterances_per_s * EMOTION_S_PER_UTTERANCE, 1),
            "vad": round(2 * args.calls * state["vad_cpu_ms_per_leg_second"] / 1e3, 1),
            "final_batch_pass": round(args.calls * BATCH_CORE_S_PER_CALL_S, 1),
            "basis": "emotion 61 ms per utterance (analyze_rtf stages_s), batch pass 0.086 core-s per call-s "
                     "(analyze_rtf --models base), VAD as measured here"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
