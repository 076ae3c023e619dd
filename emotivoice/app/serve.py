"""`emotivoice serve`: the live service in one process.

It owns the database (storage.server, so the dashboard and CLI read and write through it), runs
the live analysis engine, the listeners that bring call audio in (SIP/SIPREC, AudioSocket, the
Twilio and AudioHook WebSockets) and the recordings inbox. Finished live calls are re-analysed
by `emotivoice analyze` in a niced child process, so the batch pass never slows live calls down;
the child dies with the service (a pass cut short is re-run at the next start, never left to
store into a service that is gone). At start, before the listeners open, what a service that
died left behind is recovered (analysis/live/recovery.py): its calls are marked 'interrupted',
then assembled from their partial legs and finished by the batch pass in the background.
"""

from __future__ import annotations

import logging
import os
import signal
import shutil
import subprocess
import sys
import threading
import time

from emotivoice.analysis.live.engine import LiveEngine
from emotivoice.analysis.live.finalize import FinishedCall
from emotivoice.analysis.live.recovery import Recovery, clear_stale_announcement
from emotivoice.config import Settings, to_env
from emotivoice.connector.audiosocket import AudioSocketServer
from emotivoice.connector.websocket import ForkWebSocketServer
from emotivoice.storage.db import StorageError

try:  # pjsua2 is a compiled wheel that launch.py builds; without it SIP says why and the forks still run
    from emotivoice.connector.sip import SipConnector
    SIP_IMPORT_ERROR: Exception | None = None
except ImportError as exc:
    SipConnector, SIP_IMPORT_ERROR = None, exc

log = logging.getLogger(__name__)


def batch_finalizer(settings: Settings, config_file: str | None = None):
    """Run the full-quality batch pass on a finished live call; its results supersede the live ones."""

    # killed with the thread that started it if the service dies: it could store nowhere
    orphan_guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []

    # the pass redacts (and rewrites the kept WAV) under this process's policy and audio dir, whatever
    # the child would read from the config file and environment alone
    rc = settings.redaction
    env = {**os.environ, **to_env(rc, "EMOTIVOICE_REDACTION"),
           "EMOTIVOICE_LIVE_AUDIO_DIR": str(settings.live.audio_dir),
           "EMOTIVOICE_REDACTION_HASH_KEY_FILE": rc.hash_key_file or str(settings.data_dir / "redaction.key")}

    def finalize(call: FinishedCall) -> None:
        cmd = [*orphan_guard, "nice", "-n", "10", sys.executable, "-m", "emotivoice.app", "--log-level", "ERROR"]
        cmd += ["--config", config_file] if config_file else []
        cmd += ["analyze", str(call.audio), "--call-id", call.call_id, "--db", str(settings.db_path), "--quiet"]
        if len(call.channels) == 2:
            cmd += ["--channels", ",".join(call.channels)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=4 * 3600, env=env)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"analyze exited with {proc.returncode}")

    return finalize


def start_recovery(settings: Settings, store, finalizer) -> Recovery:
    """Mark what a dead service left 'interrupted' (now, before any new call) and list it; the
    caller starts the background recovery once the engine is up."""
    def done(call_id: str, outcome: str) -> None:
        print(f"live: recovered {call_id}: {outcome}", flush=True)

    recovery = Recovery(settings.live, store, finalizer, on_done=done)
    try:
        pending = recovery.survey()
    except Exception as exc:  # the service still starts (calls come first); the next start tries again
        log.exception("crash recovery skipped", extra={"error": str(exc)})
        recovery.pending = []
        return recovery
    if pending:
        print(f"live: recovering {len(pending)} call(s) a stopped service left unfinished: "
              f"{', '.join(i.call_id for i in pending)}", flush=True)
    return recovery


def start_listeners(settings: Settings, sink) -> list:
    """Start every configured listener; a listener that cannot start is reported, the rest run."""
    cc = settings.connector
    started = []
    wanted = []
    if cc.sip_port:
        wanted.append(("SIP", SipConnector))
    if cc.audiosocket_port:
        wanted.append(("AudioSocket", AudioSocketServer))
    if cc.websocket_port:
        wanted.append(("Twilio/AudioHook WebSocket", ForkWebSocketServer))
    for title, listener_class in wanted:
        try:
            if listener_class is None:
                raise RuntimeError(f"pjsua2 is not importable ({SIP_IMPORT_ERROR}); run `python3 launch.py install`")
            listener = listener_class(cc, sink)
            listener.start()
            started.append(listener)
            print(f"live: {title} listening on port {listener.port}", flush=True)
        except Exception as exc:  # e.g. pjsua2 missing or the port taken: say so, keep the others
            print(f"error: {title} listener not started: {exc}", file=sys.stderr, flush=True)
            log.error("listener not started", extra={"listener": title, "error": str(exc)})
    return started


def open_store_server(settings: Settings):
    """The store service every long-running command owns (serve, serve --ray, watch), with the rules
    editor pointed at this service's rules file; None after printing why it could not open."""
    from emotivoice.storage import rules_file
    from emotivoice.storage.access import Directory
    from emotivoice.storage.server import StoreServer

    try:
        rules_file.configure(settings)  # the rules editor saves where this service's settings say
        return StoreServer(settings.db_path, config=settings.store, users=Directory.from_settings(settings)).start()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def serve(settings: Settings, config_file: str | None = None, watch_inbox: bool = True,
          stats_every_s: float = 60.0) -> int:

    clear_stale_announcement(settings.db_path)  # a killed service's: nobody may try it meanwhile
    server = open_store_server(settings)
    if server is None:
        return 2
    finalizer = batch_finalizer(settings, config_file) if settings.live.finalize == "batch" else None
    recovery = start_recovery(settings, server, finalizer)
    engine = LiveEngine(settings, server, finalizer=finalizer).start()
    banner = (f"live service: owns {settings.db_path} (reads at {server.url}); recordings inbox "
              f"{settings.inbox_dir if watch_inbox else 'off'}")
    return run_service(settings, server, engine, recovery, watch_inbox, stats_every_s, banner)


def run_service(settings: Settings, server, engine, recovery: Recovery, watch_inbox: bool, stats_every_s: float,
                banner: str) -> int:
    """What `serve` and `serve --ray` share once their engine runs: recovery, the listeners, the
    recordings inbox (niced: recordings wait for live calls), the retention clock, and a clean stop
    on SIGTERM or Ctrl-C."""
    from emotivoice.analysis.service import InboxWatcher
    from emotivoice.app.retention import Periodic

    recovery.start()
    listeners = start_listeners(settings, engine.inbox)
    if not listeners:
        print("error: no listener could start; nothing can send calls", file=sys.stderr)
        recovery.stop()
        engine.stop()
        server.close()
        return 2
    if watch_inbox:
        def watch() -> None:
            from emotivoice.analysis.pipeline import CallAnalyzer

            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            InboxWatcher(CallAnalyzer(settings), settings.inbox_dir, server).run()

        threading.Thread(target=watch, name="inbox", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(banner, flush=True)
    retention = Periodic(settings, server, time.monotonic)  # audio, transcripts, calls past the policy, audited
    try:
        while True:
            retention.tick()
            time.sleep(stats_every_s)
            log.info("live service load", extra=engine.stats())
    except KeyboardInterrupt:
        pass
    finally:
        stop_service(recovery, listeners, engine, server)
    return 0


def stop_service(recovery, listeners: list, engine, server) -> None:
    """The shutdown both engines share: ignore further signals (a second one must not cut it
    short), stop recovery and the listeners, then the engine (it finalises open calls) and the store."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    print("live service: stopping (open calls are finalised first)", flush=True)
    recovery.stop()
    for listener in listeners:
        try:
            listener.stop()
        except Exception as exc:
            log.error("listener did not stop cleanly", extra={"error": str(exc)})
    engine.stop()
    server.close()
