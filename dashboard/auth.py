"""Supervisor logins: PBKDF2-SHA256 password hashes, never plain passwords.

Users come from `dashboard.users` in config ("name:hash,name:hash", e.g. through
EMOTIVOICE_DASHBOARD_USERS) and from `<data_dir>/dashboard_users.json`, which `emotivoice users
add NAME` and the first `python3 launch.py` run write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from emotivoice.config import Settings

ITERATIONS = 200_000


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    check = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(check.hex(), digest)


def users_file(settings: Settings) -> Path:
    return settings.data_dir / "dashboard_users.json"


def load_users(settings: Settings) -> dict[str, str]:
    users: dict[str, str] = {}
    path = users_file(settings)
    if path.is_file():
        users.update(json.loads(path.read_text()))
    for entry in filter(None, (e.strip() for e in settings.dashboard.users.split(","))):
        name, _, encoded = entry.partition(":")
        users[name] = encoded
    return users


def add_user(settings: Settings, name: str, password: str) -> Path:
    path = users_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    users = json.loads(path.read_text()) if path.is_file() else {}
    users[name] = hash_password(password)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(users, indent=1))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def authenticate(settings: Settings, name: str, password: str) -> bool:
    encoded = load_users(settings).get(name)
    return bool(encoded) and verify_password(password, encoded)
