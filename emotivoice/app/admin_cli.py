"""Who may sign in and what is kept: `emotivoice users` and `emotivoice delete` (right to erasure)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emotivoice.app.cli_settings import settings_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `users` and `delete` subcommands."""
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


def cmd_users(args: argparse.Namespace) -> int:
    """Dashboard logins: add a user (password prompted, or read from stdin) with a role, change a
    role, list them, or make sure one exists."""
    import getpass
    import secrets

    from emotivoice.dashboard.auth import add_user, load_accounts, load_users, set_role
    from emotivoice.storage.files import write_private

    settings = settings_of(args)
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

    settings = settings_of(args)
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
