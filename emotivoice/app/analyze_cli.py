"""`emotivoice analyze`: recorded calls through the batch pipeline into the store."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from emotivoice.app.cli_settings import settings_of

log = logging.getLogger("emotivoice")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `analyze` subcommand."""
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from emotivoice.analysis.assets import ModelUnavailable
    from emotivoice.analysis.audio import AudioError, probe
    from emotivoice.analysis.pipeline import CallAnalyzer, make_call_id, parse_roles
    from emotivoice.analysis.sink import analyze_and_store, known_call_ids
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    settings = settings_of(args)
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
