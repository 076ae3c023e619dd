"""The `emotivoice` command: analyze recordings, train and evaluate the emotion model, serve the UI.

This is the composition root: the only module that wires connector, analysis, storage and
dashboard together. The layers themselves import one way (connector -> analysis -> storage,
dashboard -> storage).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from emotivoice.config import Settings, load_settings
from emotivoice.logs import setup_logging

log = logging.getLogger("emotivoice")


def _settings(args: argparse.Namespace) -> Settings:
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from emotivoice.analysis.assets import ModelUnavailable
    from emotivoice.analysis.audio import AudioError, probe
    from emotivoice.analysis.pipeline import CallAnalyzer, make_call_id, parse_roles
    from emotivoice.analysis.sink import analyze_and_store, known_call_ids
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    settings = _settings(args)
    try:
        roles = parse_roles(args.channels)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.call_id and len(args.calls) != 1:
        print("error: --call-id names one recording; give exactly one", file=sys.stderr)
        return 2
    errors: list[dict] = []
    durations: dict[str, float] = {}
    store = open_store(settings.db_path)  # through the service when it owns the file
    known = known_call_ids(store) if args.skip_known else set()
    for call in args.calls:  # probe first: bad files are reported before minutes of work
        if make_call_id(Path(call)) in known:
            print(f"skipped (already stored): {call}", file=sys.stderr)
            continue
        try:
            durations[call] = probe(call).duration_s or 0.0
        except AudioError as exc:
            errors.append({"path": call, "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
    if not durations:
        return 1 if errors else 0
    try:
        analyzer = CallAnalyzer(settings)
    except (ModelUnavailable, OSError, RuntimeError) as exc:
        print(f"error: cannot load models: {exc}", file=sys.stderr)
        return 2
    documents = []
    with tqdm(total=round(sum(durations.values()), 1), unit="s audio", disable=args.quiet,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]") as bar:
        for call, duration in durations.items():
            done_before = bar.n
            bar.set_description(Path(call).name[:30])

            def progress(seconds: float, base: float = done_before, cap: float = duration) -> None:
                bar.update(min(seconds, cap or seconds) + base - bar.n)

            try:
                result = analyze_and_store(analyzer, Path(call), store, roles=roles, call_id=args.call_id,
                                           on_progress=progress, agent=args.agent,
                                           num_speakers=None if args.speakers is None else
                                           0 if args.speakers == "auto" else int(args.speakers),
                                           metadata={"agent_id": args.agent_id, "customer_id": args.customer_id,
                                                     "team": args.team})
            except (AudioError, StorageError) as exc:
                errors.append({"path": call, "error": str(exc)})
                tqdm.write(f"error: {exc}", file=sys.stderr)
                continue
            except Exception as exc:  # a bug must not cost the other files their analysis
                log.exception("analysis failed", extra={"path": call})
                errors.append({"path": call, "error": f"internal error: {exc}"})
                tqdm.write(f"error: {call}: internal error: {exc}", file=sys.stderr)
                continue
            for warning in result.warnings:
                tqdm.write(f"warning: {call}: {warning}", file=sys.stderr)
            for speaker in result.speakers:
                if speaker.role_source == "cues" and speaker.role_confidence < 0.7:
                    tqdm.write(f"note: {call}: {speaker.label} taken as {speaker.role} with low confidence "
                               f"({speaker.role_confidence:.2f}); --agent LABEL overrides", file=sys.stderr)
            documents.append(result.to_json())
            log.info("call stored", extra={"call_id": result.call_id, "utterances": len(result.utterances),
                                           "duration_s": round(result.duration_s, 2)})
    if args.json:
        Path(args.json).write_text(json.dumps({"calls": documents, "errors": errors}, indent=2))
    if not args.quiet:
        print(f"{len(documents)} call(s) stored in {settings.db_path}; {len(errors)} failed")
    return 1 if errors else 0


def cmd_rules(args: argparse.Namespace) -> int:
    """`rules check FILE`: is a rules file usable; `rules run`: categories again on stored calls."""
    from emotivoice.analysis.insight.rules import RulesError, load_rules, parse_rules

    settings = _settings(args)
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

    settings = _settings(args)
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

    settings = _settings(args)
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


def cmd_watch(args: argparse.Namespace) -> int:
    from emotivoice.analysis.pipeline import CallAnalyzer
    from emotivoice.analysis.service import InboxWatcher

    settings = _settings(args)
    inbox = Path(args.inbox) if args.inbox else settings.inbox_dir
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.access import Directory
    from emotivoice.storage import rules_file
    from emotivoice.storage.server import StoreServer

    analyzer = CallAnalyzer(settings)
    try:
        rules_file.configure(settings)  # the rules editor saves where this service's settings say
        server = StoreServer(settings.db_path, config=settings.store, users=Directory.from_settings(settings)).start()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # stop cleanly
    watcher = InboxWatcher(analyzer, inbox, server, args.poll)
    from emotivoice.app.retention import start_periodic

    start_periodic(settings, server)  # audio, transcripts and calls past the retention policy, audited
    print(f"analysis service: watching {inbox} for recordings; it owns {settings.db_path} and serves "
          f"reads at {server.url}", flush=True)
    try:
        watcher.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from emotivoice.app.serve import serve

    settings = _settings(args)
    cc = settings.connector
    settings = replace(settings, connector=replace(
        cc, sip_port=cc.sip_port if args.sip_port is None else args.sip_port,
        audiosocket_port=cc.audiosocket_port if args.audiosocket_port is None else args.audiosocket_port,
        websocket_port=cc.websocket_port if args.websocket_port is None else args.websocket_port))
    if args.ray:  # per-call analysis on Ray (analysis/live/cluster); the embedded engine is the default
        from emotivoice.app.serve_ray import serve_ray

        return serve_ray(settings, args.ray, args.config, watch_inbox=not args.no_inbox)
    return serve(settings, args.config, watch_inbox=not args.no_inbox)


def cmd_place_call(args: argparse.Namespace) -> int:
    """Play a recording into a running service as a live call, from Debian's sipp."""
    from emotivoice.analysis.audio import AudioError, load_audio, probe, to_8k_pcm16
    from emotivoice.connector.sipp import have_sipp, place_calls

    if not have_sipp():
        print("error: sipp is not installed (apt-get install sip-tester, or run `python3 launch.py`)", file=sys.stderr)
        return 2
    host, _, port = args.to.rpartition(":")
    try:
        channels = 2 if probe(args.recording).channels >= 2 and not args.plain else 1
        audio = load_audio(args.recording, channels)
    except AudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    legs = [to_8k_pcm16(ch) for ch in audio]
    result = place_calls(host or "127.0.0.1", int(port), legs, siprec=not args.plain, calls=args.calls,
                         auth_user=args.auth_user or "", auth_password=args.auth_password or "")
    print(f"calls answered: {result.answered}/{args.calls} (INVITE answers {result.invite_responses}) "
          f"in {result.elapsed_s:.1f} s")
    return 0 if result.answered == args.calls else 1


def cmd_prepare_models(args: argparse.Namespace) -> int:
    """Join and check every offline model, so the first analysis starts at once."""
    from emotivoice.analysis.assets import whisper_model_dir
    from emotivoice.analysis.emotion.head import EmotionHead
    from emotivoice.analysis.emotion.model import DEFAULT_HEAD

    settings = _settings(args)
    for name in ("base", "tiny.en"):
        print(f"whisper {name}: {whisper_model_dir(name, settings.model_cache_dir)}")
    head = EmotionHead.load(DEFAULT_HEAD)
    print(f"emotion head: {DEFAULT_HEAD.name} ({', '.join(head.labels)})")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from emotivoice.dashboard.server import run_dashboard

    settings = _settings(args)
    return run_dashboard(settings, port=args.port)


def cmd_users(args: argparse.Namespace) -> int:
    """Dashboard logins: add a user (password prompted, or read from stdin) with a role, change a
    role, list them, or make sure one exists."""
    import getpass
    import secrets

    from emotivoice.dashboard.auth import add_user, load_accounts, load_users, set_role
    from emotivoice.storage.files import write_private

    settings = _settings(args)
    if args.action == "list":
        for account in load_accounts(settings).values():
            print(f"{account.name}\t{account.role}\tteams={','.join(account.teams) or '-'}\t"
                  f"agent_id={account.agent_id or '-'}")
        return 0
    if args.action == "role":
        if not args.name or not args.role:
            print("error: users role needs a NAME and --role", file=sys.stderr)
            return 2
        try:
            saved = set_role(settings, args.name, args.role, args.team or [], args.agent_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"user {args.name} is now {args.role} (in {saved})")
        return 0
    if args.action == "init":
        if load_users(settings):
            return 0
        password = secrets.token_urlsafe(12)
        add_user(settings, "supervisor", password)
        note = settings.data_dir / "dashboard-initial-password.txt"
        write_private(note, f"user: supervisor\npassword: {password}\n")
        print(f"dashboard login created: user 'supervisor', password '{password}' (also in {note}; "
              f"change it with `emotivoice users add supervisor`)")
        return 0
    if not args.name:
        print("error: users add needs a NAME", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
    if len(password) < settings.dashboard.min_password_length:
        print(f"error: use a password of at least {settings.dashboard.min_password_length} characters",
              file=sys.stderr)
        return 2
    try:
        saved = add_user(settings, args.name, password, args.role, args.team or [], args.agent_id)
    except ValueError as exc:  # too short, a name the users file cannot hold, a role without its teams
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.name} saved in {saved} (hashed)" + (f" as {args.role}" if args.role else
                                                          " (no role: a supervisor of all teams)"))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Right to erasure: one call, or every call of one customer, from every table and the kept
    audio, recorded in the audit log (through the service when it owns the database)."""
    import getpass

    from emotivoice.dashboard.playback import recording_roots
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.files import remove_call_audio
    from emotivoice.storage.store import open_store

    settings = _settings(args)
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    try:
        result = open_store(settings.db_path).write("erase_calls", call_id=args.call, customer_id=args.customer,
                                                    requested_by=f"{who} (emotivoice delete)")
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sources = {c["call_id"]: c["source"] for c in result["calls"]}
    roots = recording_roots(settings)  # the live audio dir, the inbox, dashboard.recording_dirs
    removed, left = 0, []
    for call_id in result["erased_ids"] or ([args.call] if args.call else []):
        gone, outside = remove_call_audio(Path(settings.live.audio_dir), roots, call_id, sources.get(call_id))
        removed += gone
        left += outside
    what = f"call {args.call}" if args.call else "that customer"
    if not result["erased_ids"]:
        print(f"nothing stored for {what}" + (f"; {removed} audio file(s) removed" if removed else ""))
        return 0
    print(f"erased {len(result['erased_ids'])} call(s) of {what}: {result['rows']} rows, {removed} audio file(s); "
          "recorded in the audit log")
    for source in left:
        print(f"not removed (outside the recording dirs, remove it yourself): {source}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from emotivoice.analysis.emotion.training import train_from_args

    return train_from_args(args, _settings(args))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from emotivoice.analysis.emotion.evaluation import evaluate_from_args

    return evaluate_from_args(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotivoice", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (default: emotivoice.toml or $EMOTIVOICE_CONFIG)")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="analyse recorded calls into DuckDB")
    p.add_argument("calls", nargs="+", help="recordings in any format FFmpeg reads")
    p.add_argument("--db", help="DuckDB file (default: data/emotivoice.duckdb)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--channels", help="roles of a stereo file's channels, left first (default: agent,customer)")
    p.add_argument("--speakers", choices=["auto", "1", "2", "3", "4"], metavar="N",
                   help="mono files: number of speakers, 1-4, or auto to estimate it (default: 2)")
    p.add_argument("--agent", metavar="LABEL", help="mono files: the speaker that is the agent, e.g. speaker_2 "
                   "(default: guessed from greetings, who spoke first and talk share)")
    p.add_argument("--agent-id", help="who handled the call(s), for agent reports (else from a sidecar CALL.json)")
    p.add_argument("--customer-id", help="the customer, for repeat-call and churn reports")
    p.add_argument("--team", help="the agent's team")
    p.add_argument("--model", help="Whisper model: base (default) or tiny.en")
    p.add_argument("--language", help="spoken language (default: detect)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--skip-known", action="store_true", help="skip recordings already stored in the database")
    p.add_argument("--call-id", help="store the (single) recording under this id, "
                                     "e.g. to supersede a live call's results")
    p.set_defaults(func=cmd_analyze)

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

    p = sub.add_parser("users", help="dashboard logins and their roles (passwords are stored hashed)")
    p.add_argument("action", choices=["add", "role", "list", "init"],
                   help="add NAME, role NAME (change the role), list, or init: create 'supervisor' if nobody exists")
    p.add_argument("name", nargs="?")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--role", choices=["admin", "supervisor", "coach", "analyst", "agent"],
                   help="what the user may see and do (default for add: a supervisor of all teams)")
    p.add_argument("--team", action="append", metavar="T",
                   help="a supervisor's or coach's team (repeat for several; '*': all teams)")
    p.add_argument("--agent-id", help="an agent's id, as their calls carry it")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("delete", help="erase a call, or every call of a customer, everywhere (audited)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--call", metavar="ID", help="the call id")
    which.add_argument("--customer", metavar="ID", help="the customer id the calls carry (customer_id or "
                       "a value among the source's external ids)")
    p.add_argument("--db", help="DuckDB file")
    p.set_defaults(func=cmd_delete)

    from emotivoice.app.search_cli import add_parser as add_search  # issue 16: search and reindex

    add_search(sub)
    from emotivoice.app.retention import add_parser as add_retention_parser

    add_retention_parser(sub, _settings)

    p = sub.add_parser("watch", help="analysis service: analyse recordings dropped into an inbox folder")
    p.add_argument("inbox", nargs="?", help="folder to watch (default: data/inbox)")
    p.add_argument("--db", help="DuckDB file")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the folder")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("serve", help="live service: SIP/SIPREC and media-fork listeners, live analysis, "
                                     "alerts, the recordings inbox; owns the database")
    p.add_argument("--db", help="DuckDB file")
    p.add_argument("--sip-port", type=int, help="SIP (UDP+TCP) port (default 5060 from config; 0: off)")
    p.add_argument("--audiosocket-port", type=int, help="Asterisk AudioSocket TCP port (0: off)")
    p.add_argument("--websocket-port", type=int, help="Twilio Media Streams / Genesys AudioHook port (0: off)")
    p.add_argument("--no-inbox", action="store_true", help="do not watch the recordings inbox")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run per-call analysis on Ray: 'auto' (a running "
                   "cluster, else a local one) or a cluster address (needs the 'ray' extra)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("place-call", help="play a recording into a running service as a live SIPREC call (sipp)")
    p.add_argument("recording", help="stereo: left agent, right customer, one SIPREC stream each")
    p.add_argument("--to", default="127.0.0.1:5060", help="HOST:PORT of the service's SIP listener")
    p.add_argument("--plain", action="store_true", help="a plain call with one mixed stream instead of SIPREC")
    p.add_argument("--calls", type=int, default=1, help="this many simultaneous calls")
    p.add_argument("--auth-user", help="digest credentials, when the connector asks for them")
    p.add_argument("--auth-password")
    p.set_defaults(func=cmd_place_call)

    p = sub.add_parser("prepare-models", help="unpack and check the offline models")
    p.set_defaults(func=cmd_prepare_models)

    p = sub.add_parser("dashboard", help="serve the supervisor dashboard")
    p.add_argument("--db", help="DuckDB file")
    p.add_argument("--port", type=int, help="port (default 2024; a free one if that is busy)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("train", help="train a model")
    p.add_argument("what", choices=["emotion"])
    p.add_argument("--manifest", help="manifest.csv (default: ../shared/data/emotion/manifest.csv)")
    p.add_argument("--corpora", default="cremad", help="comma-separated corpora to train on")
    p.add_argument("--out", help="where to write the head (.npz)")
    p.add_argument("--backbone", choices=["whisper", "hubert"], default="whisper",
                   help="frozen encoder under the head (default: Whisper base, shared with transcription)")
    p.add_argument("--model-dir", help="HuBERT weights for --backbone hubert: a local directory or a hub id")
    p.add_argument("--no-prosody", action="store_true", help="encoder states only, without eGeMAPS prosody")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model on a labelled manifest")
    p.add_argument("what", choices=["emotion"])
    p.add_argument("manifest")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--limit", type=int, help="evaluate at most this many clips per corpus")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from emotivoice.storage.files import private_umask

    args = build_parser().parse_args(argv)
    private_umask()  # everything this process writes (DuckDB and its WAL included) is owner-only
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
