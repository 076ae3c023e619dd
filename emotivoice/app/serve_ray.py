"""`emotivoice serve --ray auto|ADDRESS`: the live service with its per-call analysis on Ray.

Everything but the engine is `emotivoice serve`'s (emotivoice/app/serve.py): this process owns the
database, runs the listeners, crash recovery, the batch pass and the recordings inbox; the
engine is analysis/live/cluster's RayEngine instead of the embedded LiveEngine.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from emotivoice.analysis.live.cluster.config import RayConfig
from emotivoice.analysis.live.cluster.engine import RayEngine
from emotivoice.analysis.live.recovery import clear_stale_announcement
from emotivoice.config import Settings
from emotivoice.app.serve import batch_finalizer, open_store_server, run_service, start_recovery



def serve_ray(settings: Settings, address: str = "auto", config_file: str | None = None, watch_inbox: bool = True,
              stats_every_s: float = 60.0, ray_config: RayConfig | None = None) -> int:

    clear_stale_announcement(settings.db_path)
    server = open_store_server(settings)
    if server is None:
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
    banner = f"live service (Ray at {address}): owns {settings.db_path} (reads at {server.url})"
    return run_service(settings, server, engine, recovery, watch_inbox, stats_every_s, banner)
