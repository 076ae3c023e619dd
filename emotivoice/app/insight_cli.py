"""What the deployment judges calls by, checked and re-applied: `rules`, `scorecard`, `recalibrate`.

Each reads the stored calls through the store service when one owns the database, else the file.
"""

from __future__ import annotations

import argparse
import sys

from emotivoice.app.cli_settings import settings_of
from emotivoice.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `rules`, `recalibrate` and `scorecard` subcommands."""
    p = sub.add_parser("rules", help="categories: check a rules file, or re-run the rules on stored calls")
    p.add_argument("action", choices=["check", "run"])
    p.add_argument("file", nargs="?", help="rules TOML, - for stdin (default: analytics.rules_file, else the "
                   "rules editor's saved set, else the shipped set)")
    p.add_argument("--name", help="what errors call rules read from stdin (default: rules)")
    p.add_argument("--db", help="DuckDB file (default: data/emotivoice.duckdb)")
    p.add_argument("--call", action="append", metavar="CALL_ID", help="only this call (repeatable; default: all)")
    p.set_defaults(func=cmd_rules)

    p = sub.add_parser("recalibrate", help="fit the emotion correction from coaches' corrections (refused if it "
                                          "makes held-back corrections worse)")
    p.add_argument("--profile", default="default", help="the calibration profile to write (default: default)")
    p.add_argument("--team", help="only corrections on this team's calls")
    p.add_argument("--db", help="DuckDB file (default: data/emotivoice.duckdb)")
    p.add_argument("--dry-run", action="store_true", help="fit and report, save nothing")
    p.set_defaults(func=cmd_recalibrate)

    p = sub.add_parser("scorecard", help="QA scorecards: check a scorecard file, or fill it in again on stored calls")
    p.add_argument("action", choices=["check", "rescore"])
    p.add_argument("file", nargs="?", help="scorecard TOML (default: analytics.scorecard_file, else the shipped one)")
    p.add_argument("--db", help="DuckDB file (default: data/emotivoice.duckdb)")
    p.add_argument("--call", action="append", metavar="CALL_ID", help="only this call (repeatable; default: all)")
    p.set_defaults(func=cmd_scorecard)


def cmd_rules(args: argparse.Namespace) -> int:
    """`rules check FILE`: is a rules file usable; `rules run`: categories again on stored calls."""
    from emotivoice.analysis.insight.rules import RulesError, load_rules, parse_rules

    settings = settings_of(args)
    path = args.file or settings.analytics.active_rules_file()
    try:
        if path == "-":  # the text on stdin (the rules editor checks what it is about to save)
            path = args.name or "rules"
            rules = parse_rules(sys.stdin.read(), path)
        else:
            rules = load_rules(path or None)
    except RulesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        print(f"{path or 'default rules'}: {len(rules.categories)} categories "
              f"({sum(c.alert for c in rules.categories)} raise alerts, {sum(c.live for c in rules.categories)} "
              "judged live)")
        return 0
    from emotivoice.analysis.recategorize import rerun_rules

    return _rerun_stored(settings, lambda store: rerun_rules(store, rules, args.call or None), "re-categorised",
                         lambda names: ", ".join(names) or "(none)")


def _rerun_stored(settings: Settings, rerun, done: str, show) -> int:
    """Run `rerun(store)` over stored calls and print each call whose before/after changed (as
    `show` writes them), then the counts; 1 on a storage error."""
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    try:
        changes = rerun(open_store(settings.db_path))
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    changed = [c for c in changes if c["before"] != c["after"]]
    for c in changed:
        print(f"{c['call_id']}: {show(c['before'])} -> {show(c['after'])}")
    print(f"{len(changes)} call(s) {done}, {len(changed)} changed")
    return 0


def cmd_recalibrate(args: argparse.Namespace) -> int:
    """Fit the deployment's emotion correction from coaches' corrections, or refuse (and keep the old)."""
    from datetime import datetime, timezone

    from emotivoice.analysis.emotion.recalibration import (RecalibrationRefused, calibration_path,
                                                           corrections_from_rows, fit_calibration, write_profile)
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    settings = settings_of(args)
    ec = settings.emotion
    store = open_store(settings.db_path)
    try:
        rows = store.read("emotion_corrections", team=args.team)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    corrections = corrections_from_rows(rows)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        fitted = fit_calibration(corrections, ec.recalibration_prior_weight,
                                 min_corrections=ec.recalibration_min_corrections, when=when)
    except RecalibrationRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    h = fitted.heldout
    print(f"profile {args.profile!r}: {fitted.corrections} corrections; temperature {fitted.temperature:.3f}, "
          f"biases {', '.join(f'{k} {v:+.2f}' for k, v in fitted.bias.items())}; held-back calls: log-loss "
          f"{h['log_loss_before']:.3f} -> {h['log_loss_after']:.3f}, accuracy {h['accuracy_before']:.2f} -> "
          f"{h['accuracy_after']:.2f}")
    if args.dry_run:
        return 0
    path = calibration_path(settings)
    write_profile(path, args.profile, fitted)
    try:
        store.write("record_event", event="recalibrate",
                    detail=f"profile {args.profile}: {fitted.corrections} corrections, T {fitted.temperature:.3f}")
    except StorageError as exc:
        print(f"warning: audit entry not written: {exc}", file=sys.stderr)
    print(f"saved to {path}; live and batch analysis use it from the next utterance")
    return 0


def cmd_scorecard(args: argparse.Namespace) -> int:
    """`scorecard check FILE`: is a scorecard usable with the rules in use; `scorecard rescore`:
    the automatic answers again on stored calls (the coach's kept)."""
    from emotivoice.analysis.insight.rules import RulesError, load_rules
    from emotivoice.analysis.insight.scorecard import ScorecardError, load_scorecard

    settings = settings_of(args)
    path = args.file or settings.analytics.scorecard_file
    try:
        card = load_scorecard(path or None, load_rules(settings.analytics.rules_file or None))
    except (ScorecardError, RulesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        kinds = [q.kind for q in card.questions]
        print(f"{path or 'default scorecard'}: {card.name!r}, {len(kinds)} questions ({kinds.count('category')} "
              f"from categories, {kinds.count('metric')} from metrics, {kinds.count('coach')} for the coach), "
              f"weights {sum(q.weight for q in card.questions):g} in all")
        return 0
    from emotivoice.analysis.rescore import rescore

    return _rerun_stored(settings, lambda store: rescore(store, card, args.call or None), "rescored", _score)


def _score(value: float | None) -> str:
    return "(none)" if value is None else f"{value:g}"
