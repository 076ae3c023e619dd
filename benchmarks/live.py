"""Live capacity: N simultaneous SIPREC calls into the real connector and live engine.

The benchmark process is the service (SIP connector on pjsua2, live engine, store service on a
fresh DuckDB file); Debian's sipp places the calls over loopback, each sending both legs of the
demo conversation, rotated by a different offset per call so that utterances do not all end at
once. For each N it reports, over every utterance of every call:

- utterance end -> base emotion stored (p50, p95): the real-time target is under 1 s; it
  includes the 0.4 s of silence that tells the endpointer the speaker has stopped;
- utterance end -> transcript stored (p50, p95), and transcripts shed to the final pass;
- per leg, whether the kept recording holds what sipp sent within 0.1 s (record first: the
  recording front writes every frame before analysis sees it; benchmarks/recording_match.py
  aligns the sent audio's first and last seconds in the kept WAV and reports the drift);
- what was shed: frames the analysis inbox dropped (live analysis only: they are recorded and the
  final pass analyses them), frames the recording filled with silence (seq gaps at the source),
  calls refused because recording could not keep up (SIP 503), and frames missing at the source
  (ticks without network audio, or that the media clock never delivered because the process fell
  behind); CPU (cores used by the service process, and by the whole machine including sipp and
  the RTP senders), peak memory.

The largest N whose p95 base-emotion latency stays under 1 s is the capacity on this machine.
The final batch pass is off here (`live.finalize=none`): it runs niced after each call and is
measured by benchmarks/analyze_rtf.py.

    python benchmarks/live.py [--levels 1,2,4,8,12,16] [--seconds 45]
"""

from __future__ import annotations

import argparse
import json
import os
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

DEMO = ROOT / "assets" / "demo" / "demo_call.opus"


def demo_legs(seconds: float) -> list[np.ndarray]:
    from emotivoice.analysis.audio import load_audio, to_8k_pcm16

    audio = load_audio(DEMO, 2)
    legs = [to_8k_pcm16(audio[i]) for i in range(2)]
    n = int(seconds * 8000)
    return [np.resize(leg, n) for leg in legs]  # loops the 45 s demo when asked for longer


def rotated(legs: list[np.ndarray], offset_s: float) -> list[np.ndarray]:
    k = int(offset_s * 8000)
    return [np.roll(leg, -k) for leg in legs]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, by Python thread name (else the OS name), with
    what exited threads used (the store service's per-request threads) as "exited"."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(task.name), comm)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["exited"] = usage.ru_utime + usage.ru_stime - sum(out.values())
    return out


def cpu_by_thread(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Cores each thread (group) used over the level, largest first (over 0.01)."""
    used = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / wall_s for k in after}
    return {k: round(v, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def stored_utterances(store) -> int:
    calls = store.read("list_calls", limit=100_000)
    return int(calls.utterances.sum()) if len(calls) else 0


class NotingSink:
    """The engine's sink, noting which of our call ids each sipp call (by its SIP Call-ID) became."""

    def __init__(self, inner):
        self.inner, self.calls = inner, {}

    def start(self, call) -> None:
        self.calls[call.metadata.get("external", {}).get("sip_call_id")] = call.call_id
        self.inner.start(call)

    def push(self, frame) -> bool:
        return self.inner.push(frame)

    def end(self, call) -> None:
        self.inner.end(call)

    def admit(self, source: str):
        return self.inner.admit(source)

    @property
    def audio_dir(self):  # where the connector's native legs are written (connector.media_path)
        return self.inner.audio_dir

    def recording(self, call_id: str):
        return self.inner.recording(call_id)


def check_recordings(audio_dir: Path, sink: NotingSink, sent: dict[str, list[np.ndarray]],
                     wait_s: float = 300.0, remove: bool = True) -> list[dict]:
    """Per placed call and leg: does the kept WAV hold what sipp sent, within 0.1 s? (then removed,
    unless the engine may still be finishing the call: its redaction reads the WAV after it appears)"""
    import wave

    from benchmarks.recording_match import match_leg

    out = []
    deadline = time.monotonic() + wait_s
    for sip_call_id, legs in sent.items():
        call_id = sink.calls.get(sip_call_id)
        wavs = list(audio_dir.glob(f"*/{call_id}.wav")) if call_id else []
        while call_id and not wavs and time.monotonic() < deadline:  # closed once the engine has the call's end
            time.sleep(0.5)
            wavs = list(audio_dir.glob(f"*/{call_id}.wav"))
        if not wavs:
            out.append({"sip_call_id": sip_call_id, "call_id": call_id, "recorded": False})
            continue
        with wave.open(str(wavs[0])) as w:
            got = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels()).T
        out.append({"sip_call_id": sip_call_id, "call_id": call_id, "recorded": True,
                    "legs": [match_leg(leg, got[i]).report(0.1) for i, leg in enumerate(legs)]})
        for path in (wavs[0], wavs[0].with_suffix(".json")) if remove else ():
            path.unlink(missing_ok=True)
    return out


# sipp's BYE waits this long past the audio's scheduled end: at 40 calls one sender began 0.9 s
# after sipp ran it (Python starting on a loaded machine), and a 0.5 s tail cut its last 0.3 s
SENDER_TAIL_S = 2.0


def start_calls(port: int, n: int, legs: list[np.ndarray], stagger_s: float, prefix: str):
    """Place n sipp calls from threads, `stagger_s` apart, each with the legs rotated by its own
    offset; (threads to join, audio sent per SIP Call-ID, sipp results as they finish)."""
    from emotivoice.connector.sipp import place_calls

    sent: dict[str, list[np.ndarray]] = {}
    results: list = []

    def one(i: int) -> None:
        time.sleep(i * stagger_s)
        sip_call_id = f"{prefix}-{n}-{i}@emotivoice"
        sent[sip_call_id] = rotated(legs, 7.3 * i)
        result = place_calls("127.0.0.1", port, sent[sip_call_id], siprec=True, calls=1, call_id=sip_call_id,
                             tail_s=SENDER_TAIL_S)
        result.call_id = sip_call_id  # for the report of calls not answered
        results.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, sent, results


def unanswered(results: list) -> list[dict]:
    """What sipp saw of each call not answered (its exit status, the INVITE's final codes, the end
    of its output): a 24-call run lost one call the service never saw, with nothing to say why."""
    return [{"sip_call_id": r.call_id, "returncode": r.returncode, "invite_responses": r.invite_responses,
             "elapsed_s": round(r.elapsed_s, 1), "output_tail": r.output[-800:]}
            for r in results if not r.answered]


def run_level(engine, sink: NotingSink, port: int, n: int, legs: list[np.ndarray], stagger_s: float,
              connector_stats=None) -> dict:
    stored_before = stored_utterances(engine.store)
    engine.latencies.clear()
    engine.transcript_step.passes.clear()
    shed_before = engine.counters["transcripts_shed"]
    drops_before = engine.inbox.total_dropped
    missing_before = engine.counters["missing_frames"]
    front_before = engine.inbox.stats()
    cpu0, wall0, busy0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), machine_busy()
    threads0, counters0 = thread_cpu(), engine.counters
    peak = [rss_mb()]
    fd, sender_log = tempfile.mkstemp(prefix="rtpsend-", suffix=".jsonl")
    os.close(fd)
    os.environ["EMOTIVOICE_RTPSEND_LOG"] = sender_log  # sipp's rtpsend.py says how late it fell
    threads, sent, results = start_calls(port, n, legs, stagger_s, "bench")

    def sample() -> None:
        while len(results) < n:
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # let the last utterances through
        stats = engine.stats()
        if stats["active_calls"] == 0 and stats["emotion_queue"] == 0 and not engine.calls:
            break
        time.sleep(0.2)
    cpu1, wall1, busy1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), machine_busy()
    threads1 = thread_cpu()
    service_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    front = engine.inbox.stats()
    recordings = check_recordings(engine.cfg.audio_dir, sink, sent, remove=False)
    leg_checks = [leg for r in recordings for leg in r.get("legs", [])]
    senders = sender_lateness(sender_log)
    lat = list(engine.latencies)
    emotion = [x["emotion_s"] for x in lat]
    transcript = [x["transcript_s"] for x in lat if x["transcript_s"] is not None]
    return {
        "calls": n, "legs": 2 * n, "answered": sum(r.answered for r in results), "unanswered": unanswered(results),
        "utterances": len(lat),
        "utterances_stored": stored_utterances(engine.store) - stored_before,
        "emotion_p50_s": pct(emotion, 50), "emotion_p95_s": pct(emotion, 95), "emotion_max_s": pct(emotion, 100),
        "transcript_p50_s": pct(transcript, 50), "transcript_p95_s": pct(transcript, 95),
        "transcripts_shed": engine.counters["transcripts_shed"] - shed_before,
        "recorded_legs_matching": f"{sum(leg['match'] for leg in leg_checks)}/{2 * len(recordings)}",
        "recorded_max_drift_s": max((abs(leg["drift_s"]) for leg in leg_checks), default=None),
        "frames_shed_from_analysis": engine.inbox.total_dropped - drops_before,
        "frames_filled_with_silence": front["frames_filled"] - front_before["frames_filled"],
        "calls_refused": front["calls_refused"] - front_before["calls_refused"],
        "recording_lost_frames": front["recording_lost_frames"] - front_before["recording_lost_frames"],
        "frames_missing_at_source": engine.counters["missing_frames"] - missing_before,
        "frames_per_leg": int(legs[0].size / 160),
        "service_cores": round(service_cpu / (wall1 - wall0), 2),
        "machine_cores": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 2, 2),
        "peak_rss_mb": round(peak[0]), "wall_s": round(wall1 - wall0, 1),
        "clock_skipped_frames": connector_stats()["clock_skipped_frames"] if connector_stats else None,
        # what the legs' jitter buffers played as silence or dropped, summed since the service started
        "jitter_buffer_since_start": connector_stats().get("jitter_buffer") if connector_stats else None,
        **senders,
        "cores_by_thread": cpu_by_thread(threads0, threads1, wall1 - wall0),
        "stage_counters": {k: v - counters0.get(k, 0) for k, v in engine.counters.items()
                           if k.endswith(("_batches", "_ms"))},
        "transcript_breakdown": transcript_breakdown(lat, list(engine.transcript_step.passes)),
        "recordings": recordings,
        "latencies": lat, "passes": list(engine.transcript_step.passes),
    }


BREAKDOWN = ("transcript_queue_s", "transcript_pass_s", "transcript_insight_s", "transcript_writer_s")


def transcript_breakdown(lat: list[dict], passes: list[dict]) -> dict:
    """Where stored transcripts' latency went: per part (queue, pass, insight, writer) p50/p95
    over every transcribed utterance, the mean of each part over the slowest 5 %, and the
    Whisper passes' sizes and times."""
    done = [x for x in lat if x["transcript_s"] is not None and x.get("transcript_pass_s") is not None]
    out: dict = {"utterances": len(done)}
    for key in BREAKDOWN:
        values = [x[key] for x in done if x[key] is not None]
        out[key] = {"p50": pct(values, 50), "p95": pct(values, 95), "max": pct(values, 100)}
    if done:
        cut = np.percentile([x["transcript_s"] for x in done], 95)
        tail = [x for x in done if x["transcript_s"] >= cut]
        out["tail"] = {"n": len(tail), "transcript_s": round(float(np.mean([x["transcript_s"] for x in tail])), 3),
                       **{key: round(float(np.mean([x[key] or 0.0 for x in tail])), 3) for key in BREAKDOWN}}
    out["passes"] = {"n": len(passes), **{key: {"p50": pct([p[key] for p in passes], 50),
                                               "p95": pct([p[key] for p in passes], 95),
                                               "max": pct([p[key] for p in passes], 100)}
                                         for key in ("utterances", "audio_s", "start_s", "whisper_s", "redact_s",
                                                     "lock_wait_s")}}
    return out


def sender_lateness(path: str) -> dict:
    """How far behind its 20 ms schedule the worst RTP sender fell (a sender that stalls and then
    bursts loses its audio in the receiver's jitter buffer: the harness's fault, not the service's)."""
    try:
        lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    finally:
        Path(path).unlink(missing_ok=True)
    late = [x["max_late_s"] for x in lines]
    delays = [x["start_delay_s"] for x in lines if x.get("start_delay_s") is not None]
    return {"senders_reported": len(lines), "sender_max_late_s": max(late, default=None),
            "senders_late_over_0_1_s": sum(1 for x in late if x > 0.1),
            # from sipp's exec to the first packet; past SENDER_TAIL_S the BYE cuts the leg's tail
            "sender_max_start_delay_s": max(delays, default=None),
            "senders_starting_late_over_tail": sum(1 for d in delays if d > SENDER_TAIL_S)}


def run_record_only(settings, n: int, legs: list[np.ndarray], stagger_s: float) -> dict:
    """The connector and recording front alone, analysis messages taken and dropped: whether the
    kept legs match without the analysis threads competing for the GIL and the cores."""
    from emotivoice.analysis.live.inbox import FrameInbox
    from emotivoice.analysis.live.recording import RecordingFront
    from emotivoice.connector.sip import SipConnector

    front = RecordingFront(settings.live, FrameInbox(settings.live.max_queued_frames)).begin()
    running = [True]

    def drain() -> None:  # what the engine's finaliser does with the recording, and nothing else
        from emotivoice.analysis.live.messages import CallEnded

        while running[0]:
            message = front.get(timeout=0.2)
            if isinstance(message, CallEnded):
                summary = front.summary(message.call_id)
                if summary is not None and summary.recorder is not None:
                    summary.recorder.finish({})

    threading.Thread(target=drain, daemon=True).start()
    sink = NotingSink(front)
    connector = SipConnector(settings.connector, sink)
    connector.start()
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    threads, sent, results = start_calls(connector.port, n, legs, stagger_s, "record-only")
    for t in threads:
        t.join()
    recordings = check_recordings(settings.live.audio_dir, sink, sent, wait_s=60)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    stats = {**connector.stats(), **front.stats()}
    connector.stop()
    running[0] = False
    front.close()
    checks = [leg for r in recordings for leg in r.get("legs", [])]
    return {"record_only": True, "calls": n, "legs": 2 * n, "answered": sum(r.answered for r in results),
            "unanswered": unanswered(results),
            "recorded_legs_matching": f"{sum(leg['match'] for leg in checks)}/{2 * len(recordings)}",
            "recorded_max_drift_s": max((abs(leg["drift_s"]) for leg in checks), default=None),
            "clock_skipped_frames": stats.get("clock_skipped_frames"),
            "jitter_buffer_since_start": stats.get("jitter_buffer"),
            "frames_filled_with_silence": stats.get("frames_filled"),
            "service_cores": round(((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime))
                                   / (wall1 - wall0), 2),
            "recordings": recordings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8,12,16", help="simultaneous calls to try, in order")
    parser.add_argument("--seconds", type=float, default=45.0, help="length of each call")
    parser.add_argument("--stagger", type=float, default=0.25, help="seconds between call starts")
    parser.add_argument("--gil-switch-ms", default="",
                        help="compare GIL switch intervals side by side, e.g. 5,0.5 (Python's default is 5 ms; "
                             "default: connector.gil_switch_interval_ms only)")
    parser.add_argument("--record-only", action="store_true",
                        help="the connector and recording front alone (no analysis): does recording keep up?")
    parser.add_argument("--media-path", choices=("native", "python"),
                        help="how SIP legs leave pjmedia (connector.media_path; default: the setting)")
    parser.add_argument("--sender-stalls", default="", metavar="PERIOD_S:STALL_S",
                        help="every RTP stream holds its packets STALL_S once every PERIOD_S of audio, then "
                             "bursts them (network jitter; connector/rtpsend.py)")
    parser.add_argument("--jitter-buffer-ms", type=int,
                        help="native legs' fixed jitter buffer delay, 0: pjmedia's adaptive one "
                             "(connector.jitter_buffer_ms; default: the setting)")
    parser.add_argument("--name", help="results file name (default: live, or live_<seconds>s for other lengths)")
    args = parser.parse_args()
    if args.sender_stalls:  # read by every rtpsend.py sipp starts
        os.environ["EMOTIVOICE_RTPSEND_STALLS"] = args.sender_stalls

    from emotivoice.analysis.live.engine import LiveEngine
    from emotivoice.connector.sip import SipConnector
    from emotivoice.config import load_settings
    from emotivoice.logs import setup_logging
    from emotivoice.storage.server import StoreServer

    setup_logging("ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="emotivoice-live-bench-"))
    settings = load_settings(env={})
    settings = replace(settings, db_path=tmp / "live.duckdb",
                       live=replace(settings.live, audio_dir=tmp / "calls", finalize="none", keep_audio=True),
                       connector=replace(settings.connector, sip_port=0, siprec_agent_match="agent", max_calls=128,
                                         media_path=args.media_path or settings.connector.media_path,
                                         jitter_buffer_ms=settings.connector.jitter_buffer_ms
                                         if args.jitter_buffer_ms is None else args.jitter_buffer_ms))
    if args.record_only:
        levels = []
        for n in [int(x) for x in args.levels.split(",")]:
            print(f"{n} simultaneous calls, recording only...", flush=True)
            levels.append(run_record_only(settings, n, demo_legs(args.seconds), args.stagger))
            print({k: v for k, v in levels[-1].items() if k != "recordings"}, flush=True)
        write_result(args.name or "live_record_only", {"setup": {"call_s": args.seconds, "stagger_s": args.stagger},
                                                        "levels": levels})
        return
    store = StoreServer(settings.db_path).start()
    engine = LiveEngine(settings, store).start()
    engine.publisher.stdout = False
    sink = NotingSink(engine.inbox)
    connector = SipConnector(settings.connector, sink)
    connector.start()
    legs = demo_legs(args.seconds)
    levels = []
    try:
        switches = [float(x) for x in args.gil_switch_ms.split(",") if x] or [sys.getswitchinterval() * 1000]
        for switch_ms in switches:
            sys.setswitchinterval(switch_ms / 1000)  # after the connector's own setting: this run's variant
            for n in [int(x) for x in args.levels.split(",")]:
                print(f"{n} simultaneous calls, GIL switch interval {switch_ms} ms...", flush=True)
                level = {"gil_switch_ms": switch_ms, **run_level(engine, sink, connector.port, n, legs, args.stagger,
                                                                        connector.stats)}
                print({k: v for k, v in level.items() if k not in ("recordings", "latencies", "passes")},
                      flush=True)
                levels.append(level)
                if level["emotion_p95_s"] is not None and level["emotion_p95_s"] > 3.0:
                    break  # far past capacity: larger N only takes longer to say the same
    finally:
        connector.stop()
        engine.stop()
        store.close()
    def capacity(switch_ms: float) -> int:
        ok = [lv["calls"] for lv in levels if lv["gil_switch_ms"] == switch_ms and lv["emotion_p95_s"] is not None
              and lv["emotion_p95_s"] < 1.0 and lv["answered"] == lv["calls"]]
        return max(ok, default=0)
    by_switch = {str(ms): capacity(ms) for ms in dict.fromkeys(lv["gil_switch_ms"] for lv in levels)}
    name = args.name or ("live" if args.seconds == 45.0 else f"live_{int(args.seconds)}s")  # longer: own file
    write_result(name, {
        "setup": {"call_s": args.seconds, "stagger_s": args.stagger, "media_path": settings.connector.media_path,
                  "jitter_buffer_ms": settings.connector.jitter_buffer_ms,
                  "sender_stalls": args.sender_stalls or None,
                  "audio": "demo call, both legs, G.711 u-law RTP, "
                  "rotated per call", "finalize": "none (measured separately); every leg recorded first",
                  "transcription": settings.transcription.model,
                  "live_beam_size": settings.live.beam_size, "endpoint_silence_s": settings.live.endpoint_silence_s},
        "levels": levels,
        "capacity_calls": next(iter(by_switch.values())) if len(by_switch) == 1 else by_switch,
        "target": "p95 utterance-end -> base emotion stored < 1 s with >= 8 calls (16 legs)",
    })


if __name__ == "__main__":
    main()
