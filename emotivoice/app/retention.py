"""`emotivoice retention run`: apply the retention policy to the kept audio and the store.

The policy (`[retention]` in emotivoice.toml, emotivoice.config.RetentionConfig) keeps audio,
transcripts and metadata each for its own days. A run removes kept call audio past its days
(analysis/live/recorder.apply_retention: files by age, never through a symlink), then asks the
store (storage/retention.expire_calls, through the service when one owns the file) to take out
old transcripts and erase old calls, recorded in the audit log in the same transaction, and
finally removes the erased calls' audio as `emotivoice delete` does. `serve` and `watch` call
`run_retention` when they start and every `retention.every_s`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from emotivoice.config import Settings

log = logging.getLogger("emotivoice.retention")


@dataclass(frozen=True)
class RetentionRun:
    """What one run removed."""

    audio_files: int
    transcripts: int
    calls: int
    rows: int


def audio_days(settings: Settings) -> int:
    """The policy's audio days; -1 follows `live.retention_days` (30), what kept audio had before."""
    days = settings.retention.audio_days
    return settings.live.retention_days if days < 0 else days


def run_retention(settings: Settings, store=None, now: str | None = None) -> RetentionRun:
    """Apply `settings.retention` once; `store` is the service's own StoreServer when the caller
    owns the file (else the store is opened, through the service if one runs)."""
    from emotivoice.analysis.live.recorder import apply_retention
    from emotivoice.storage.store import open_store

    cfg = settings.retention
    audio_now = None
    if now is not None:
        from datetime import datetime, timezone

        audio_now = datetime.fromisoformat(now).replace(tzinfo=timezone.utc).timestamp()
    removed = apply_retention(Path(settings.live.audio_dir), audio_days(settings), audio_now)
    store = store or open_store(settings.db_path)
    result = store.write("expire_calls", transcript_days=cfg.transcript_days, metadata_days=cfg.metadata_days,
                         audio_files_removed=removed, policy=cfg.policy_name, now=now)
    removed += _remove_call_audio(settings, result["calls"])
    run = RetentionRun(removed, len(result["transcripts_expired"]), len(result["erased_ids"]), result["rows"])
    log.info("retention applied", extra={"policy": cfg.policy_name, "audio_files": run.audio_files,
                                         "transcripts": run.transcripts, "calls": run.calls, "rows": run.rows})
    return run


def _remove_call_audio(settings: Settings, calls: list[dict]) -> int:
    """The kept audio of erased calls, inside the recording dirs only (as `emotivoice delete`)."""
    from emotivoice.dashboard.playback import recording_roots
    from emotivoice.storage.files import remove_call_audio

    roots = recording_roots(settings)
    removed = 0
    for call in calls:
        gone, outside = remove_call_audio(Path(settings.live.audio_dir), roots, call["call_id"], call.get("source"))
        removed += gone
        for source in outside:
            log.warning("erased call's source lies outside the recording dirs: not removed",
                        extra={"call_id": call["call_id"], "source": source})
    return removed


class Periodic:
    """Runs retention from a service's loop: at the first `due()` check and every `every_s` after."""

    def __init__(self, settings: Settings, store, clock):
        self.settings, self.store, self.clock = settings, store, clock
        self.last: float | None = None

    def tick(self) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.settings.retention.every_s:
            return
        self.last = now
        try:
            run_retention(self.settings, self.store)
        except Exception as exc:  # a failed run is retried at the next period, never the service's end
            log.error("retention run failed", extra={"error": str(exc)[:300]})


def start_periodic(settings: Settings, store, poll_s: float = 60.0):
    """A daemon thread that ticks a Periodic for a service with no loop of its own (`watch`)."""
    import threading
    import time

    periodic = Periodic(settings, store, time.monotonic)

    def loop() -> None:
        while True:
            periodic.tick()
            time.sleep(poll_s)

    thread = threading.Thread(target=loop, name="retention", daemon=True)
    thread.start()
    return thread


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from emotivoice.storage.db import StorageError

    try:
        run = run_retention(settings, now=args.now)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cfg = settings.retention
    print(f"retention policy {cfg.policy_name} (audio {audio_days(settings)} d, transcripts {cfg.transcript_days} d, "
          f"metadata {cfg.metadata_days} d; 0 keeps): {run.audio_files} audio file(s), {run.transcripts} "
          f"transcript(s), {run.calls} call(s) ({run.rows} rows) removed; recorded in the audit log")
    return 0


def add_parser(sub, settings_of) -> None:
    """`emotivoice retention run` on the CLI's subparsers; `settings_of(args)` loads the settings."""
    p = sub.add_parser("retention", help="apply the retention policy to kept audio, transcripts and calls (audited)")
    p.add_argument("action", choices=["run"])
    p.add_argument("--db", help="DuckDB file")
    p.add_argument("--now", help=argparse.SUPPRESS)  # an ISO time to apply the policy as of (tests)
    p.set_defaults(func=lambda args: cmd_retention(args, settings_of(args)))
