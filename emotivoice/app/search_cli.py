"""`emotivoice search QUERY` and `emotivoice search reindex` (issue 16), through the store service.

Kept apart from emotivoice/app/cli.py (which only registers it) so the command stays small. Like the
other commands, it reads through the process that owns the database when one runs, else the file.
"""

from __future__ import annotations

import argparse
import json
import sys

EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `search` subcommand and its filters."""
    p = sub.add_parser("search", help="full-text search over every stored transcript; "
                                      "`search reindex` rebuilds the index")
    p.add_argument("query", nargs="+", help='words (all must occur) and "quoted phrases"; '
                                            "'reindex' alone rebuilds the index from the stored calls")
    p.add_argument("--role", choices=["customer", "agent"], help="only what this side said")
    p.add_argument("--agent", metavar="ID", help="only this agent's calls")
    p.add_argument("--team", help="only this team's calls")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="calls started on or after this day")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="calls started on or before this day")
    p.add_argument("--category", help="only calls in this category (from the rules)")
    p.add_argument("--emotion", choices=EMOTIONS, help="only utterances with this base emotion")
    p.add_argument("--min-risk", type=float, default=0.0, help="only calls whose peak risk is at least this")
    p.add_argument("--limit", type=int, default=20, help="at most this many hits (default 20, at most 200)")
    p.add_argument("--json", action="store_true", help="hits as JSON lines on stdout")
    p.add_argument("--db", help="DuckDB file")
    p.set_defaults(func=cmd_search)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def cmd_search(args: argparse.Namespace) -> int:
    """Print the ranked hits (call, time, speaker, snippet), or rebuild the index."""
    from emotivoice.app.cli_settings import settings_of
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    settings = settings_of(args)
    store = open_store(settings.db_path)
    try:
        if args.query == ["reindex"]:
            done = store.write("search_reindex")
            print(f"search index rebuilt: {done['calls']} calls, {done['utterances']} utterances, "
                  f"{done['postings']} postings in {done['seconds']} s")
            return 0
        hits = store.read("search_utterances", search=" ".join(args.query), role=args.role, agent_id=args.agent,
                          team=args.team, date_from=args.since, date_to=args.until, category=args.category,
                          emotion=args.emotion, min_risk=args.min_risk, limit=args.limit)
    except StorageError as exc:  # BadRequest and AccessDenied included: our own short words
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for hit in hits.to_dict("records"):
            print(json.dumps({k: (None if v != v else v) for k, v in hit.items()}, default=str))  # NaN: null
        return 0
    if hits.empty:
        print("no hits", file=sys.stderr)
        return 0
    for h in hits.itertuples():
        who = f"{h.speaker} ({h.role})" if isinstance(h.role, str) else str(h.speaker)
        print(f"{h.call_id}  {_clock(h.start_s)}  {who}  {h.score:.2f}  {h.text}")
    return 0
