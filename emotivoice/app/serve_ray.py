"""`emotivoice serve --ray auto|ADDRESS`: the live service with its per-call analysis on Ray.

Everything but the engine is `emotivoice serve`'s (emotivoice/app/serve.py): this process owns the
database, runs the listeners, crash recovery, the batch pass and the recordings inbox; the
engine is analysis/live/cluster's RayEngine instead of the embedded LiveEngine.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import replace

from emotivoice.analysis.live.cluster.config import RayConfig
from emotivoice.analysis.live.cluster.engine import RayEngine
from emotivoice.analysis.live.recovery import clear_stale_announcement
from emotivoice.config import Settings
from emotivoice.app.serve import batch_finalizer, start_listeners, start_recovery, stop_service
from emotivoice.storage.db import StorageError

log = logging.getLogger(__name__)


def serve_ray(settings: Settings, address: str = "auto", config_file: str | None = None, watch_inbox: bool = True,
              stats_every_s: float = 60.0, ray_config: RayConfig | None = None) -> int:
    from emotivoice.storage.access import Directory
    from emotivoice.storage import rules_file
    from emotivoice.storage.server import StoreServer

    clear_stale_announcement(settings.db_path)
    try:
        rules_file.configure(settings)  # the rules editor saves where this service's settings say
        server = StoreServer(settings.db_path, config=settings.store, users=Directory.from_settings(settings)).start()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finalizer = batch_finalizer(settings, config_file) if settings.live.finalize == "batch" else None
    recovery = start_recovery(settings, server, finalizer)
    try:
        engine = RayEngine(settings, server, replace(ray_config or RayConfig(), address=address),
                           finalizer=finalizer).start()
    except Exception as exc:  # Ray not installed, or the cluster unreachable: say so plainly
        print(f"error: the Ray engine did not start: {str(exc).splitlines()[0] if str(exc) else exc}",
              file=sys.stderr)
        server.close()
        return 2
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
            import os

            from emotivoice.analysis.pipeline import CallAnalyzer
            from emotivoice.analysis.service import InboxWatcher

            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            InboxWatcher(CallAnalyzer(settings), settings.inbox_dir, server).run()

        threading.Thread(target=watch, name="inbox", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"live service (Ray at {address}): owns {settings.db_path} (reads at {server.url})", flush=True)
    from emotivoice.app.retention import Periodic

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
