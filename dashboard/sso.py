"""Single sign-on: a person signed in with the OIDC provider (Streamlit's `st.login`) becomes a
dashboard user with the role their claims map to (`[oidc]` in emotivoice.toml).

The store resolves every acting user against the user file itself (storage/access.py), so a
signed-in person is written there as an entry like any other, with their mapped role, teams and
agent id and a password hash no password matches ("!sso"): they can never sign in with a
password, and their role follows the provider's claims at every sign-in. An entry made by
`emotivoice users` (one with a real password) is never taken over by a sign-on of the same name.
Claims are data: the name must be a valid user name, the role one of ours, and nothing from them
becomes a path, a query or markup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from emotivoice.dashboard.auth import USER_NAME, _save, check_role, load_accounts
from emotivoice.config import OidcConfig, Settings
from emotivoice.storage.access import ROLES, Account

log = logging.getLogger(__name__)

SSO_HASH = "!sso"  # no password matches it (dashboard.auth.verify_password needs a pbkdf2 hash)


@dataclass(frozen=True)
class Mapped:
    """Who a signed-in person is here: name, role, teams, agent id."""

    name: str
    role: str
    teams: tuple[str, ...] = ()
    agent_id: str | None = None


def parse_role_map(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(claim value, role, teams) for each "value=role[:team|team]" entry, in order; ValueError
    for an entry that names no role of ours."""
    out = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        value, sep, target = entry.rpartition("=")
        role, _, teams = target.partition(":")
        if not sep or not value.strip() or role.strip() not in ROLES:
            raise ValueError(f"oidc.role_map entry {entry[:80]!r} is not 'claim value=role[:team|team]'")
        out.append((value.strip(), role.strip(), tuple(t.strip() for t in teams.split("|") if t.strip())))
    return out


def _values(claim: object) -> list[str]:
    if isinstance(claim, str):
        return [claim]
    if isinstance(claim, (list, tuple)):
        return [c for c in claim if isinstance(c, str)]
    return []


def role_from_claims(claims: Mapping[str, object], cfg: OidcConfig) -> Mapped | None:
    """The dashboard user a set of ID-token claims maps to, or None (refused): no valid name, no
    role_map entry matching the role claim, or a role without what it needs (a supervisor's or
    coach's teams, an agent's id)."""
    name = claims.get(cfg.name_claim)
    if not isinstance(name, str) or not USER_NAME.match(name):
        return None
    held = set(_values(claims.get(cfg.role_claim)))
    for value, role, teams in parse_role_map(cfg.role_map):
        if value not in held:
            continue
        agent_id = claims.get(cfg.agent_id_claim) if role == "agent" else None
        agent_id = agent_id if isinstance(agent_id, str) else None
        try:
            check_role(role, list(teams), agent_id)
        except ValueError:
            log.warning("sign-on refused: the mapped role lacks its teams or agent id",
                        extra={"user_name": name, "role": role})
            return None
        return Mapped(name, role, teams, agent_id)
    return None


def sso_user(settings: Settings, claims: Mapping[str, object]) -> str | None:
    """The user name to open a session for after a sign-on, its entry written (or refreshed) in
    the user file with the mapped role; None when the claims map to no one or the name belongs to
    a password login."""
    mapped = role_from_claims(claims, settings.oidc)
    if mapped is None:
        return None
    current = load_accounts(settings).get(mapped.name)  # the user file and dashboard.users
    if current is not None and current.password_hash != SSO_HASH:
        log.warning("sign-on refused: the name belongs to a password login", extra={"user_name": mapped.name})
        return None
    entry = Account(mapped.name, SSO_HASH, mapped.role, mapped.teams, mapped.agent_id)
    if current != entry:
        _save(settings, mapped.name, entry.to_json())
    return mapped.name


def offer_sign_on(settings: Settings) -> str | None:
    """The sign-in page's single sign-on part: a "Sign in with ..." button (Streamlit's st.login
    redirects to the provider), and once the provider has signed the person in, the dashboard
    user their claims map to (None, with the reason shown, when they map to no one)."""
    import streamlit as st

    cfg = settings.oidc
    if st.user.is_logged_in:
        name = sso_user(settings, st.user.to_dict())
        if name:
            return name
        st.error("Your single sign-on account has no EmotiVoice role here. Ask an admin to map it.")
        if st.button("Sign out of single sign-on"):
            st.logout()
        return None
    if st.button(f"Sign in with {cfg.label}", type="primary"):
        st.login(cfg.provider or None)
    return None


def sign_off() -> None:
    """Log out of the provider too, where the person came in through it."""
    import streamlit as st

    if st.user.is_logged_in:
        st.logout()
