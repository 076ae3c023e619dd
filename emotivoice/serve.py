"""`emotivoice serve`: the live service in one process.

It owns the database (storage.server, so the dashboard and CLI read and write through it), runs
the live analysis engine, the listeners that bring call audio in (SIP/SIPREC, AudioSocket, the
Twilio and AudioHook WebSockets) and the recordings inbox. Finished live calls are re-analysed
by `emotivoice analyze` in a niced child process, so the batch pass never slows live calls down.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

from analysis.live.engine import LiveEngine
from analysis.live.finalize import FinishedCall
from emotivoice.config import Settings

log = logging.getLogger(__name__)


def batch_finalizer(settings: Settings, config_file: str | None = None):
    """Run the full-quality batch pass on a finished live call; its results supersede the live ones."""

    def finalize(call: FinishedCall) -> None:
        cmd = ["nice", "-n", "10", sys.executable, "-m", "emotivoice.cli", "--log-level", "ERROR"]
        cmd += ["--config", config_file] if config_file else []
        cmd += ["analyze", str(call.audio), "--call-id", call.call_id, "--db", str(settings.db_path), "--quiet"]
        if len(call.channels) == 2:
            cmd += ["--channels", ",".join(call.channels)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=4 * 3600)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"analyze exited with {proc.returncode}")

    return finalize


def start_listeners(settings: Settings, sink) -> list:
    """Start every configured listener; a listener that cannot start is reported, the rest run."""
    cc = settings.connector
    started = []
    wanted = []
    if cc.sip_port:
        wanted.append(("SIP", "connector.sip", "SipConnector"))
    if cc.audiosocket_port:
        wanted.append(("AudioSocket", "connector.audiosocket", "AudioSocketServer"))
    if cc.websocket_port:
        wanted.append(("Twilio/AudioHook WebSocket", "connector.websocket", "ForkWebSocketServer"))
    import importlib

    for title, module, cls in wanted:
        try:
            listener = getattr(importlib.import_module(module), cls)(cc, sink)
            listener.start()
            started.append(listener)
            print(f"live: {title} listening on port {listener.port}", flush=True)
        except Exception as exc:  # e.g. pjsua2 missing or the port taken: say so, keep the others
            print(f"error: {title} listener not started: {exc}", file=sys.stderr, flush=True)
            log.error("listener not started", extra={"listener": title, "error": str(exc)})
    return started


def serve(settings: Settings, config_file: str | None = None, watch_inbox: bool = True,
          stats_every_s: float = 60.0) -> int:
    from analysis.service import InboxWatcher
    from storage.db import StorageError
    from storage.server import StoreServer

    try:
        server = StoreServer(settings.db_path, config=settings.store).start()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finalizer = batch_finalizer(settings, config_file) if settings.live.finalize == "batch" else None
    engine = LiveEngine(settings, server, finalizer=finalizer).start()
    listeners = start_listeners(settings, engine.inbox)
    if not listeners:
        print("error: no listener could start; nothing can send calls", file=sys.stderr)
        engine.stop()
        server.close()
        return 2
    if watch_inbox:
        def watch() -> None:
            from analysis.pipeline import CallAnalyzer
            import os

            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # recordings wait for live calls
            InboxWatcher(CallAnalyzer(settings), settings.inbox_dir, server).run()

        threading.Thread(target=watch, name="inbox", daemon=True).start()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"live service: owns {settings.db_path} (reads at {server.url}); recordings inbox "
          f"{settings.inbox_dir if watch_inbox else 'off'}", flush=True)
    from analysis.live.recorder import apply_retention

    last_retention = time.monotonic()
    try:
        while True:
            time.sleep(stats_every_s)
            log.info("live service load", extra=engine.stats())
            if time.monotonic() - last_retention >= 3600:  # kept call audio past its retention goes hourly
                apply_retention(settings.live.audio_dir, settings.live.retention_days)
                last_retention = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        print("live service: stopping (open calls are finalised first)", flush=True)
        for listener in listeners:
            try:
                listener.stop()
            except Exception as exc:
                log.error("listener did not stop cleanly", extra={"error": str(exc)})
        engine.stop()
        server.close()
    return 0
