"""Single sign-on (issue 15): ID-token claims mapped to a dashboard role (no network: the mapping
and the user-file entry it makes are tested directly, and the sign-in page is checked to use them).
The store then resolves the signed-on person like any user, with the mapped scope."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from emotivoice.dashboard.auth import authenticate
from emotivoice.dashboard.sso import SSO_HASH, Mapped, parse_role_map, role_from_claims, sso_user
from emotivoice.config import OidcConfig, load_settings
from emotivoice.storage.access import Directory

ROOT = Path(__file__).resolve().parent.parent
CFG = OidcConfig(enabled=True, role_map="ev-admins=admin,blue-leads=supervisor:blue,qa=coach:blue|red,"
                                        "bi=analyst,agents=agent")


@pytest.mark.parametrize("claims, mapped", [
    ({"email": "ada@example.com", "groups": ["staff", "ev-admins"]}, Mapped("ada@example.com", "admin")),
    ({"email": "sue@example.com", "groups": "blue-leads"}, Mapped("sue@example.com", "supervisor", ("blue",))),
    ({"email": "q@example.com", "groups": ["qa", "bi"]}, Mapped("q@example.com", "coach", ("blue", "red"))),
    ({"email": "al@example.com", "groups": ["agents"], "employee_id": "a1"},
     Mapped("al@example.com", "agent", (), "a1")),
    ({"email": "x@example.com", "groups": ["bi", "ev-admins"]}, Mapped("x@example.com", "admin")),  # map order
    ({"email": "no@example.com", "groups": ["staff"]}, None),  # no mapped group: refused
    ({"email": "al@example.com", "groups": ["agents"]}, None),  # an agent without an agent id
    ({"email": "bad name'; --", "groups": ["ev-admins"]}, None), ({"groups": ["ev-admins"]}, None),
    ({"email": "a@example.com", "groups": {"ev-admins": 1}}, None),  # a claim of the wrong shape
])
def test_claims_map_to_a_role_or_to_no_one(claims, mapped):
    assert role_from_claims(claims, CFG) == mapped


def test_a_role_map_naming_no_role_of_ours_is_refused():
    assert parse_role_map(" a=admin , b=coach:x|y ") == [("a", "admin", ()), ("b", "coach", ("x", "y"))]
    with pytest.raises(ValueError, match="is not 'claim value=role"):
        parse_role_map("ev-admins=root")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTIVOICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMOTIVOICE_OIDC_ENABLED", "1")
    monkeypatch.setenv("EMOTIVOICE_OIDC_ROLE_MAP", CFG.role_map)
    monkeypatch.delenv("EMOTIVOICE_DASHBOARD_USERS", raising=False)
    return load_settings()


def test_a_signed_on_person_is_a_user_the_store_resolves_with_the_mapped_scope(settings):
    assert settings.oidc.enabled and settings.oidc.role_map == CFG.role_map
    claims = {"email": "sue@example.com", "groups": ["blue-leads"]}
    assert sso_user(settings, claims) == "sue@example.com"
    entry = json.loads((settings.data_dir / "dashboard_users.json").read_text())["sue@example.com"]
    assert entry == {"hash": SSO_HASH, "role": "supervisor", "teams": ["blue"], "agent_id": None}
    principal = Directory.from_settings(settings).principal("sue@example.com")
    assert (principal.role, principal.teams) == ("supervisor", ("blue",))
    assert not authenticate(settings, "sue@example.com", SSO_HASH)  # no password signs them in
    # the role follows the claims at every sign-on
    assert sso_user(settings, {"email": "sue@example.com", "groups": ["bi"]}) == "sue@example.com"
    assert Directory.from_settings(settings).principal("sue@example.com").role == "analyst"


def test_a_sign_on_never_takes_over_a_password_login(settings):
    from emotivoice.dashboard.auth import add_user

    add_user(settings, "boss@example.com", "a long enough password", "admin")
    assert sso_user(settings, {"email": "boss@example.com", "groups": ["bi"]}) is None
    assert Directory.from_settings(settings).principal("boss@example.com").role == "admin"
    assert authenticate(settings, "boss@example.com", "a long enough password")


def test_the_sign_in_page_offers_sign_on_only_where_configured_and_uses_the_mapping():
    app = ast.parse((ROOT / "dashboard" / "app.py").read_text())
    calls = {n.func.id for n in ast.walk(app) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"offer_sign_on", "open_session", "sign_off"} <= calls
    source = (ROOT / "dashboard" / "app.py").read_text()
    assert "if settings().oidc.enabled:" in source
    sso = (ROOT / "dashboard" / "sso.py").read_text()
    assert "sso_user(settings, st.user.to_dict())" in sso and "st.login(" in sso
