"""The settings one command runs with: the config file, then what its flags override.

Every command module of emotivoice/app calls `settings_of(args)` first, so a flag such as --db
means the same in each.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from emotivoice.config import Settings, load_settings

log = logging.getLogger("emotivoice")


def settings_of(args: argparse.Namespace) -> Settings:
    """`--config`, then `--db`, `--model` and `--language` when the command has them; the data dir
    made private (0700)."""
    settings = load_settings(Path(args.config) if args.config else None)
    if getattr(args, "db", None):
        settings = replace(settings, db_path=Path(args.db))
    if getattr(args, "model", None):
        settings = replace(settings, transcription=replace(settings.transcription, model=args.model))
    if getattr(args, "language", None):
        settings = replace(settings, transcription=replace(settings.transcription, language=args.language))
    from emotivoice.storage.files import private_dir

    try:
        private_dir(settings.data_dir)  # 0700 even when it already existed with looser modes
    except PermissionError as exc:  # a read-only checkout can still analyse into --db elsewhere
        log.warning("data dir not made private", extra={"data_dir": str(settings.data_dir), "error": str(exc)})
    return settings
