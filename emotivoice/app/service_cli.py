"""The long-running processes: `watch` (the inbox), `serve` (live calls), `dashboard`, and
`place-call`, which plays a recording into a running `serve` as a live call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emotivoice.app.cli_settings import settings_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `watch`, `serve`, `place-call` and `dashboard` subcommands."""
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

    p = sub.add_parser("dashboard", help="serve the supervisor dashboard")
    p.add_argument("--db", help="DuckDB file")
    p.add_argument("--port", type=int, help="port (default 2024; a free one if that is busy)")
    p.set_defaults(func=cmd_dashboard)



def cmd_watch(args: argparse.Namespace) -> int:
    from emotivoice.analysis.pipeline import CallAnalyzer
    from emotivoice.analysis.service import InboxWatcher

    settings = settings_of(args)
    inbox = Path(args.inbox) if args.inbox else settings.inbox_dir
    from emotivoice.app.serve import open_store_server

    analyzer = CallAnalyzer(settings)
    server = open_store_server(settings)
    if server is None:
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

    settings = settings_of(args)
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



def cmd_dashboard(args: argparse.Namespace) -> int:
    from emotivoice.dashboard.server import run_dashboard

    settings = settings_of(args)
    return run_dashboard(settings, port=args.port)
