"""The `emotivoice` command: analyze recordings, train and evaluate the emotion model, serve the UI.

This is the composition root: the only module that wires connector, analysis, storage and
dashboard together. The layers themselves import one way (connector -> analysis -> storage,
dashboard -> storage). This module only builds the parser; each command group is a module of its
own beside it (analyze_cli, insight_cli, admin_cli, search_cli, retention, service_cli, models_cli).
"""

from __future__ import annotations

import argparse
import sys

from emotivoice.app import admin_cli, analyze_cli, insight_cli, models_cli, retention, search_cli, service_cli
from emotivoice.app.cli_settings import settings_of
from emotivoice.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, each registered by its group's module."""
    parser = argparse.ArgumentParser(prog="emotivoice", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (default: emotivoice.toml or $EMOTIVOICE_CONFIG)")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze_cli.add_parser(sub)
    insight_cli.add_parser(sub)
    admin_cli.add_parser(sub)
    search_cli.add_parser(sub)  # issue 16: search and reindex
    retention.add_parser(sub, settings_of)
    service_cli.add_parser(sub)
    models_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from emotivoice.storage.files import private_umask

    args = build_parser().parse_args(argv)
    private_umask()  # everything this process writes (DuckDB and its WAL included) is owner-only
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
