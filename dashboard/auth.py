"""Supervisor logins: PBKDF2-SHA256 password hashes, never plain passwords, and throttled sign-in.

Users come from `dashboard.users` in config ("name:hash,name:hash", e.g. through
EMOTIVOICE_DASHBOARD_USERS) and from `<data_dir>/dashboard_users.json` (0600), which `emotivoice
users add NAME [--role ROLE --team T --agent-id ID]` and the first `python3 launch.py` run write.
An entry is `"name": {"hash", "role", "teams", "agent_id"}`; the old form `"name": "hash"` (and
every config entry) is a supervisor of all teams, what every login was before roles (the store
service reads the same file and enforces the role: storage/access.py). New passwords shorter than
`dashboard.min_password_length` are refused here, so every way of adding a user inherits it.

`sign_in` is the only way the dashboard checks a password. It asks the shared throttle
(dashboard/throttle.py: back-off per user name and per client address) before any hashing, and
an unknown or malformed user entry is verified against a dummy hash of the same cost, so a wrong
name and a wrong password take the same PBKDF2 work and cannot be told apart by timing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from emotivoice.dashboard.throttle import LoginThrottle, report_lockout
from emotivoice.config import Settings
from emotivoice.storage.access import ALL_TEAMS, ROLES, Account, account_from_json, read_accounts
from emotivoice.storage.access import users_path as users_file
from emotivoice.storage.files import private_dir, write_private

log = logging.getLogger(__name__)

ITERATIONS = 200_000
SCHEME = "pbkdf2_sha256"
MAX_NAME = 256  # longer typed names are throttled under their first 256 characters
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")  # also safe inside "name:hash,..." config


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def _parse(encoded: str | None) -> tuple[int, bytes, str] | None:
    """(iterations, salt, hex digest) of a well-formed hash, else None."""
    try:
        scheme, iterations, salt, digest = (encoded or "").split("$")
        if scheme != SCHEME or not 1 <= int(iterations) <= 10_000_000:
            return None
        return int(iterations), bytes.fromhex(salt), digest
    except ValueError:
        return None


@functools.cache
def _dummy_hash() -> tuple[int, bytes, str]:
    """What an unknown name is checked against: same scheme and cost as a real user's hash."""
    return _parse(hash_password(secrets.token_urlsafe(16)))  # type: ignore[return-value]


def verify_password(password: str, encoded: str | None) -> bool:
    """True if `password` matches `encoded`; a missing or malformed hash costs the same and is False."""
    parsed = _parse(encoded)
    iterations, salt, digest = parsed or _dummy_hash()
    check = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(check.hex(), digest) and parsed is not None


def load_accounts(settings: Settings) -> dict[str, Account]:
    """Every login with its role, teams and agent id (storage/access.py reads the same way)."""
    return read_accounts(users_file(settings), settings.dashboard.users)


def load_users(settings: Settings) -> dict[str, str]:
    """Name -> password hash of every login."""
    return {name: a.password_hash for name, a in load_accounts(settings).items()}


def account(settings: Settings, name: str | None) -> Account | None:
    return load_accounts(settings).get(name) if name else None


def check_role(role: str, teams: list[str], agent_id: str | None) -> None:
    """ValueError unless the role exists and has what it needs (teams, or an agent id)."""
    if role not in ROLES:
        raise ValueError(f"a role is one of {', '.join(ROLES)}")
    if role in ("supervisor", "coach") and not teams:
        raise ValueError(f"a {role} needs --team (repeat it for several; --team '{ALL_TEAMS}' for all teams)")
    if role == "agent" and not agent_id:
        raise ValueError("an agent needs --agent-id (the agent_id their calls carry)")
    if any(not t or len(t) > 128 for t in teams) or (agent_id is not None and not 0 < len(agent_id) <= 128):
        raise ValueError("team names and agent ids are 1-128 characters")


def check_new_login(settings: Settings, name: str, password: str) -> None:
    """ValueError with the reason when `name` or `password` may not be used for a new login."""
    if not USER_NAME.match(name or ""):
        raise ValueError("a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    minimum = settings.dashboard.min_password_length
    if len(password) < minimum:
        raise ValueError(f"use a password of at least {minimum} characters")


def add_user(settings: Settings, name: str, password: str, role: str | None = None, teams: list[str] = (),
             agent_id: str | None = None) -> Path:
    """Store `name` with a hash of `password` (0600 file) and, when given, a role; ValueError for a
    short password, an odd name or a role without what it needs. Without a role the entry keeps
    the old form (a supervisor of all teams), as before."""
    check_new_login(settings, name, password)
    if role is not None:
        check_role(role, list(teams), agent_id)
    encoded = hash_password(password)
    return _save(settings, name, encoded if role is None else
                 Account(name, encoded, role, tuple(teams), agent_id).to_json())


def set_role(settings: Settings, name: str, role: str, teams: list[str] = (), agent_id: str | None = None) -> Path:
    """Change an existing user's role, teams and agent id (the password stays)."""
    check_role(role, list(teams), agent_id)
    path = users_file(settings)
    entries = json.loads(path.read_text()) if path.is_file() else {}
    current = account_from_json(name, entries.get(name))
    if current is None:
        raise ValueError(f"no user {name} in {path} (users from config cannot be changed here)")
    return _save(settings, name, Account(name, current.password_hash, role, tuple(teams), agent_id).to_json())


def _save(settings: Settings, name: str, entry: str | dict) -> Path:
    path = users_file(settings)
    private_dir(path.parent)
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[name] = entry  # the other entries are written back as they were, old form included
    write_private(path, json.dumps(entries, indent=1))
    return path


def authenticate(settings: Settings, name: str, password: str) -> bool:
    """The password check alone, unthrottled (the dashboard uses `sign_in`); same cost for any name."""
    return verify_password(password, load_users(settings).get(name))


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: the user, or how long to wait (0.0: the password was wrong)."""

    user: str | None
    retry_after_s: float = 0.0
    throttled: bool = False  # refused without checking the password


_THROTTLES: dict[tuple, LoginThrottle] = {}


def login_throttle(settings: Settings) -> LoginThrottle:
    """The throttle shared by every session of this server process (one per distinct setting)."""
    d = settings.dashboard
    key = (d.login_free_failures, d.login_backoff_s, d.login_backoff_max_s)
    return _THROTTLES.setdefault(key, LoginThrottle(*key))


def sign_in(settings: Settings, name: str, password: str, client: str,
            throttle: LoginThrottle | None = None) -> SignIn:
    """Check a password under the throttle; the refusal says when to try again."""
    throttle = throttle or login_throttle(settings)
    user_key, client_key = ("user", name[:MAX_NAME]), ("client", client[:MAX_NAME])  # bounded keys
    wait = throttle.admit([user_key, client_key])
    if wait > 0:
        log.info("dashboard sign-in refused while backed off",
                 extra={"event": "login_throttled", "user_name": name[:64], "client": client,
                        "retry_after_s": round(wait, 1)})
        return SignIn(None, wait, throttled=True)
    if authenticate(settings, name, password):
        throttle.forgive(user_key, [client_key])
        return SignIn(name)
    wait = throttle.retry_after([user_key, client_key])
    if wait > 0:
        report_lockout(throttle, name, client, wait)
    return SignIn(None, wait)
